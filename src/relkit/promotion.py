"""Which student a workspace serves: the `active-student` file beside the database.

    promote(ws, "minilm")                   # -> "student-minilm"
    active_student(ws.path)["student"]      # -> "student-minilm"

`relkit promote` writes the file, `relkit status` and `relkit serve` read it, and a running
service follows it (it polls the file's modification time).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

ACTIVE_FILE = "active-student"


def promote(ws, ref: str) -> str:
    """Make a saved student the one `relkit serve` serves; returns its folder name. The choice is a
    small file beside the database, replaced atomically, so a running service can follow it."""
    from relkit.student.model import Student
    from relkit.student.system import StudentSystem

    path = StudentSystem.from_workspace(ws, ref).path
    Student.load(path)  # refuse a broken folder now, not in the service
    record = {"student": path.name, "path": str(path.resolve()),
              "promoted": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    tmp = ws.path / (ACTIVE_FILE + ".tmp")
    tmp.write_text(json.dumps(record) + "\n")
    tmp.replace(ws.path / ACTIVE_FILE)
    return path.name


def active_student(workspace: str | Path) -> dict | None:
    """The record `promote` wrote (`student`, `path`, `promoted`), or None when no student is
    active or the file is unreadable."""
    file = Path(workspace) / ACTIVE_FILE
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError):
        return None

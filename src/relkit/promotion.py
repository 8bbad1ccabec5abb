"""Which student a workspace serves: the `active-student` file beside the database.

    promote(ws, "minilm")                   # -> "student-minilm"
    active_student(ws.path)["student"]      # -> "student-minilm"

`relkit promote` writes the file, `relkit status` and `relkit serve` read it, and a running
service follows it (it polls the file's modification time).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

from relkit.workspace import ACTIVE_FILE, active_student  # noqa: F401  (re-exported; the file is the workspace's)


def promote(ws, ref: str) -> str:
    """Make a saved student the one `relkit serve` serves; returns its folder name. The choice is a
    small file beside the database, replaced atomically, so a running service can follow it."""
    from relkit.student.model import Student   # lazy: scikit-learn (student.system); the service imports this module
    from relkit.student.system import StudentSystem

    path = StudentSystem.from_workspace(ws, ref).path
    Student.load(path)  # refuse a broken folder now, not in the service
    record = {"student": path.name, "path": str(path.resolve()),
              "promoted": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    tmp = ws.path / (ACTIVE_FILE + ".tmp")
    tmp.write_text(json.dumps(record) + "\n")
    tmp.replace(ws.path / ACTIVE_FILE)
    return path.name

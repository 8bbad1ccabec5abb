"""Which student a workspace serves: the `active-student` file beside the database.

    promote(ws, "minilm")                   # -> "student-minilm"
    active_student(ws.path)["student"]      # -> "student-minilm"

`relkit promote` writes the file (after exporting the student's query encoder to ONNX, which the
service runs without torch), `relkit status` and `relkit serve` read it, and a running service
follows it (it polls the file's modification time).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

from relkit.workspace import ACTIVE_FILE, active_student  # noqa: F401  (re-exported; the file is the workspace's)


def promote(ws, ref: str) -> str:
    """Make a saved student the one `relkit serve` serves; returns its folder name. The choice is a
    small file beside the database, replaced atomically, so a running service can follow it. The
    student's bi-encoder is exported to ONNX first (once per encoder, `artifacts/encoders/`): the
    service encodes queries with it, without torch."""
    from relkit.student.model import Student   # lazy: scikit-learn (student.system); the service imports this module
    from relkit.student.system import StudentSystem

    path = StudentSystem.from_workspace(ws, ref).path
    student = Student.load(path)  # refuse a broken folder now, not in the service
    export_query_encoder(ws, student)
    record = {"student": path.name, "path": str(path.resolve()),
              "promoted": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    tmp = ws.path / (ACTIVE_FILE + ".tmp")
    tmp.write_text(json.dumps(record) + "\n")
    tmp.replace(ws.path / ACTIVE_FILE)
    return path.name


def export_query_encoder(ws, student):
    """The ONNX export of the bi-encoder `student` embeds queries with (made now unless the workspace
    has it), or None for a student without the embedding group."""
    config = student.feature_config()
    if "embedding" not in config.groups:
        return None
    from relkit.features.onnx_encoder import export_encoder   # lazy: torch, sentence-transformers

    return export_encoder(config.encoder, ws.artifacts)

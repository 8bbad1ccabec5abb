"""A saved student as an evaluation system."""
from __future__ import annotations

from pathlib import Path

from relkit.errors import RelkitError
from relkit.evaluate import JudgedPairs, Prediction
from relkit.student.model import META_FILE, Student, StudentMeta
from relkit.workspace import Workspace


class StudentSystem:
    def __init__(self, ws: Workspace, path: Path, name: str):
        self.ws, self.path, self.name = ws, path, name

    @classmethod
    def from_workspace(cls, ws: Workspace, ref: str) -> "StudentSystem":
        """`ref` is NAME (artifacts/student-NAME), a folder name in artifacts/, or a path."""
        path = ws.artifact("student", ref)
        scale = StudentMeta.from_json((path / META_FILE).read_text()).scale
        if scale != ws.scale:
            raise RelkitError(f"{path} was trained on another label scale ({scale.describe()}) than this "
                              f"workspace's ({ws.scale.describe()})")
        return cls(ws, path, name=f"student:{ref}")

    def predict(self, pairs: JudgedPairs) -> Prediction:
        from relkit.student.distill import student_prediction
        from relkit.student.features import FeatureBuilder

        student = Student.load(self.path)
        builder = FeatureBuilder.from_workspace(self.ws, student.feature_config())
        return student_prediction(student, builder, pairs)

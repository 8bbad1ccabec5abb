"""A saved student as an evaluation system."""
from __future__ import annotations

from pathlib import Path

from relkit.evaluate import JudgedPairs, Prediction
from relkit.features.embeddings import check_encoder
from relkit.student.model import Student
from relkit.workspace import Workspace


class StudentSystem:
    def __init__(self, ws: Workspace, path: Path, name: str):
        self.ws, self.path, self.name = ws, path, name

    @classmethod
    def from_workspace(cls, ws: Workspace, ref: str) -> "StudentSystem":
        """`ref` is NAME (artifacts/student-NAME), a folder name in artifacts/, or a path."""
        path = ws.scaled_artifact("student", ref)
        config = Student.load(path).feature_config()
        if "embedding" in config.groups:   # a student of another encoder: refused, with the command that fixes it
            check_encoder(ws, config.encoder, f"the student {path.name} was made on the bi-encoder")
        return cls(ws, path, name=f"student:{ref}")

    def predict(self, pairs: JudgedPairs) -> Prediction:
        from relkit.student.distill import student_prediction
        from relkit.student.features import FeatureBuilder

        student = Student.load(self.path)
        builder = FeatureBuilder.from_workspace(self.ws, student.feature_config())
        return student_prediction(student, builder, pairs)

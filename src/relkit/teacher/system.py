"""A saved teacher as an evaluation system."""
from __future__ import annotations

from pathlib import Path

from relkit.errors import RelkitError
from relkit.evaluate import JudgedPairs, Prediction
from relkit.teacher.model import Teacher
from relkit.workspace import Workspace


class TeacherSystem:
    def __init__(self, path: Path, name: str, batch_size: int = 32, ws: Workspace | None = None):
        self.path = path
        self.name = name
        self.batch_size = batch_size
        self.ws = ws    # when given, the prior's item vectors come from its text_vectors cache

    @classmethod
    def from_workspace(cls, ws: Workspace, ref: str) -> "TeacherSystem":
        """`ref` is NAME (artifacts/teacher-NAME), a folder name in artifacts/, or a path."""
        path = ws.scaled_artifact("teacher", ref)
        return cls(path, name=f"teacher:{ref}", ws=ws)

    def predict(self, pairs: JudgedPairs) -> Prediction:
        teacher = Teacher.load(self.path)
        if teacher.meta.prior and self.ws is not None:
            from relkit.features.embeddings import workspace_vectors

            teacher.text_vectors = workspace_vectors(self.ws, teacher.meta.prior["model"])
        if teacher.scale.k != teacher.model.config.num_labels:
            raise RelkitError(f"{self.path}: the saved scale has {teacher.scale.k} levels, the model's head "
                              f"{teacher.model.config.num_labels}")
        proba = teacher.predict_proba(list(zip(pairs.queries, pairs.items)), batch_size=self.batch_size, bar=True)
        return Prediction(proba=proba, levels=teacher.predict_levels(proba))

"""The teacher: a cross-encoder fine-tuned on human judgments.

The names below load on first use: reading the training settings (`relkit.teacher.config`, which
`relkit teach --help` does) imports neither torch nor transformers.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "FAMILIES": "relkit.teacher.model", "Teacher": "relkit.teacher.model", "TeacherMeta": "relkit.teacher.model",
    "TextTemplate": "relkit.teacher.model", "TrainConfig": "relkit.teacher.config",
    "TrainResult": "relkit.teacher.train", "train_teacher": "relkit.teacher.train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'relkit.teacher' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

"""The teacher: a cross-encoder fine-tuned on human judgments."""
from relkit.teacher.model import FAMILIES, Teacher, TeacherMeta, TextTemplate
from relkit.teacher.train import TrainConfig, TrainResult, train_teacher

__all__ = ["FAMILIES", "Teacher", "TeacherMeta", "TextTemplate", "TrainConfig", "TrainResult", "train_teacher"]

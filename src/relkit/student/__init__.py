"""The student: a small MLP over cheap features, distilled from the teacher's labels."""
from relkit.student.fast import FastScorer, Scored
from relkit.student.features import FeatureBuilder, FeatureConfig
from relkit.student.model import Student, StudentConfig, StudentMeta

__all__ = ["FastScorer", "FeatureBuilder", "FeatureConfig", "Scored", "Student", "StudentClassifier", "StudentConfig",
           "StudentMeta"]


def __getattr__(name: str):
    # scikit-learn loads only for the estimator: serving a student needs neither it nor torch
    if name == "StudentClassifier":
        from relkit.student.classifier import StudentClassifier

        return StudentClassifier
    raise AttributeError(f"module 'relkit.student' has no attribute {name!r}")

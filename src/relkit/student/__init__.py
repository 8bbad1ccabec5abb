"""The student: a small MLP over cheap features, distilled from the teacher's labels."""
from relkit.student.fast import FastScorer, Scored
from relkit.student.features import FeatureBuilder, FeatureConfig
from relkit.student.model import Student, StudentClassifier, StudentConfig, StudentMeta

__all__ = ["FastScorer", "FeatureBuilder", "FeatureConfig", "Scored", "Student", "StudentClassifier", "StudentConfig", "StudentMeta"]

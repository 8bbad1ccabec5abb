"""The student: a small MLP over cheap features, distilled from the teacher's labels."""
from relkit.student.fast import FastScorer
from relkit.student.features import FeatureBuilder, FeatureConfig
from relkit.student.model import Student, StudentConfig, StudentMeta

__all__ = ["FastScorer", "FeatureBuilder", "FeatureConfig", "Student", "StudentConfig", "StudentMeta"]

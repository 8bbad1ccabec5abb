"""The bi-encoder prior of a teacher: per-level logits from the cosine of query and item under a
sentence-transformers bi-encoder, added to the cross-encoder's logits.

Why: a cross-encoder starts with a random head and no notion of query-item match; trained on a
few thousand judgments it learns each query's and item's usual level long before it learns the
match, and ranks items within a query worse than an untuned bi-encoder does. The prior makes the
teacher start where the bi-encoder is (its logits are `w * cosine + b`, fit to the train labels
before training), so the cross-encoder only has to learn what the cosine misses.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Prior:
    model: str                  # the bi-encoder: 'default' (all-MiniLM-L6-v2), a local path or a hub id
    weight: list[float]         # per level: logit += weight[k] * cosine + bias[k]
    bias: list[float]

    def logits(self, cosine: np.ndarray) -> np.ndarray:
        return np.outer(cosine, np.asarray(self.weight)) + np.asarray(self.bias)[None, :]

    def to_dict(self) -> dict:
        return {"model": self.model, "weight": list(map(float, self.weight)), "bias": list(map(float, self.bias))}

    @classmethod
    def fit(cls, model: str, cosine: np.ndarray, labels: np.ndarray, k: int) -> "Prior":
        """The multinomial logistic regression of the level on the cosine (labels 1..K)."""
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=100.0, max_iter=1000).fit(cosine.reshape(-1, 1), labels)
        weight, bias = np.zeros(k), np.zeros(k)
        weight[lr.classes_ - 1], bias[lr.classes_ - 1] = lr.coef_[:, 0], lr.intercept_
        return cls(model=model, weight=weight.tolist(), bias=bias.tolist())


_ENCODERS: dict[str, object] = {}


def cosines(model: str, queries: Sequence[str], item_texts: Sequence[str], show_progress: bool = False,
            text_vectors=None) -> np.ndarray:
    """Cosine of each (query, item text) under the bi-encoder `model` (loaded once per process).
    `text_vectors(texts)`, when given, supplies the item texts' vectors (a workspace's cache)."""
    from relkit.features.embeddings import Encoder, pair_cosines

    if model not in _ENCODERS:
        _ENCODERS[model] = Encoder(model)
    return pair_cosines(_ENCODERS[model], queries, item_texts, show_progress, text_vectors)

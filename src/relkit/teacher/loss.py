"""The teacher's training loss: cross-entropy over the K levels (optional class weights and label
smoothing), plus an ordinal term (squared error of the expected level) and a listwise term
(ListNet over each query's items in the batch).

>>> loss = TeacherLoss(LabelScale.default(3), ordinal_weight=0.5)      # doctest: +SKIP
>>> loss(logits, targets, groups).backward()                            # doctest: +SKIP
>>> loss.config                                                         # doctest: +SKIP
{'class_weights': None, 'label_smoothing': 0.0, 'ordinal_weight': 0.5, 'listwise_weight': 0.0}
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from relkit.errors import RelkitError
from relkit.scale import LabelScale

CLASS_WEIGHTS = ("none", "sqrt", "inverse")


def class_weights(labels: np.ndarray, k: int, how: str) -> np.ndarray | None:
    """Loss weight of each level from its count among `labels` (1..k): none, sqrt or inverse of its
    frequency, scaled so that the average pair keeps weight 1."""
    if how == "none":
        return None
    counts = np.bincount(labels - 1, minlength=k).astype(np.float64)
    w = len(labels) / (k * np.maximum(counts, 1.0))
    w = np.sqrt(w) if how == "sqrt" else w
    return w / np.average(w, weights=counts)


def listnet_loss(scores, gains, groups):
    """Mean over the batch's queries of the cross-entropy between softmax(scores) and softmax(gains)
    of each query's items; queries whose items all share one gain carry no order and are skipped."""
    losses = []
    for g in torch.unique(groups):
        mask = groups == g
        if mask.sum() < 2 or gains[mask].max() == gains[mask].min():
            continue
        target = torch.softmax(gains[mask], dim=0)
        losses.append(-(target * torch.log_softmax(scores[mask], dim=0)).sum())
    return torch.stack(losses).mean() if losses else scores.sum() * 0.0


def soft_cross_entropy(logits, targets, class_weight=None, label_smoothing: float = 0.0):
    """Cross-entropy against (n, K) distributions, weighted and smoothed as torch's cross_entropy does
    hard labels (a pair weighs the expected class weight under its target; the mean is over those
    weights), so that one-hot targets give exactly the hard-label loss."""
    nll = -torch.log_softmax(logits, dim=-1)
    w = torch.ones(logits.shape[-1], device=logits.device) if class_weight is None else class_weight
    pair_weight = targets @ w
    main = (targets * w * nll).sum(dim=-1)
    smooth = (w * nll).sum(dim=-1) / logits.shape[-1]
    return ((1 - label_smoothing) * main + label_smoothing * smooth).sum() / pair_weight.sum()


class TeacherLoss(nn.Module):
    """`forward(logits, targets, groups)`: the weighted sum of `terms`. `targets` are 0-based levels,
    `groups` a query number per pair (only the listwise term reads them). Bad settings are refused
    when the loss is built, not at the first batch."""

    def __init__(self, scale: LabelScale, class_weights: Sequence[float] | None = None, label_smoothing: float = 0.0,
                 ordinal_weight: float = 0.0, listwise_weight: float = 0.0, num_labels: int | None = None):
        super().__init__()
        k = scale.k
        if num_labels is not None and num_labels != k:
            raise RelkitError(f"the model has {num_labels} labels; the loss is over the scale's {k} levels")
        if class_weights is not None and (len(class_weights) != k or min(class_weights) <= 0):
            raise RelkitError(f"class weights must be {k} positive numbers, one per level, got {list(class_weights)}")
        if not 0 <= label_smoothing < 1:
            raise RelkitError(f"label_smoothing is in [0, 1), got {label_smoothing}")
        if ordinal_weight < 0 or listwise_weight < 0:
            raise RelkitError("the ordinal and listwise weights must be >= 0")
        self.k = k
        self.label_smoothing = float(label_smoothing)
        self.ordinal_weight = float(ordinal_weight)
        self.listwise_weight = float(listwise_weight)
        weight = None if class_weights is None else torch.tensor(list(class_weights), dtype=torch.float32)
        self.register_buffer("class_weight", weight)
        self.register_buffer("levels", torch.arange(k, dtype=torch.float32))
        gains = torch.tensor(scale.gains, dtype=torch.float32)
        # ListNet compares softmaxes of gains: mapped to [0, 5] the target is neither flat nor one-hot
        self.register_buffer("gains", gains * (5.0 / max(float(gains.max()), 1.0)))

    @property
    def config(self) -> dict:
        """The settings, as saved in the teacher's relkit.json and shown on its model card."""
        weights = None if self.class_weight is None else [round(float(w), 6) for w in self.class_weight]
        return {"class_weights": weights, "label_smoothing": self.label_smoothing,
                "ordinal_weight": self.ordinal_weight, "listwise_weight": self.listwise_weight}

    def terms(self, logits, targets, groups=None) -> dict:
        """Each term unweighted: cross_entropy always, ordinal and listwise when their weight is set.
        `targets` are 0-based levels, or (n, K) distributions (soft labels, e.g. a judge's): then the
        cross-entropy is against the distribution and the other terms read its expectation."""
        soft = targets.is_floating_point() and targets.dim() == 2
        if soft:
            out = {"cross_entropy": soft_cross_entropy(logits, targets, self.class_weight, self.label_smoothing)}
        else:
            out = {"cross_entropy": nn.functional.cross_entropy(logits, targets, weight=self.class_weight,
                                                                label_smoothing=self.label_smoothing)}
        proba = torch.softmax(logits, dim=-1)
        if self.ordinal_weight:
            wanted = targets @ self.levels if soft else targets.float()
            out["ordinal"] = torch.mean((proba @ self.levels - wanted) ** 2)
        if self.listwise_weight:
            if groups is None:
                raise RelkitError("the listwise term needs the query of each pair (groups)")
            out["listwise"] = listnet_loss(proba @ self.gains, targets @ self.gains if soft else self.gains[targets],
                                           groups)
        return out

    def forward(self, logits, targets, groups=None):
        terms = self.terms(logits, targets, groups)
        weights = {"cross_entropy": 1.0, "ordinal": self.ordinal_weight, "listwise": self.listwise_weight}
        return sum(weights[name] * value for name, value in terms.items())

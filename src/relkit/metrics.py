"""Metric functions: small and pure. Classification metrics are computed over judged pairs (as
Pinterest reports accuracy); ranking metrics per query, then averaged over queries."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import cohen_kappa_score, f1_score, roc_auc_score


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of pairs whose predicted level is the true level."""
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 averaged over the levels present in the true labels (each level counts equally)."""
    labels = np.unique(y_true)
    return float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))


def quadratic_kappa(y_true: np.ndarray, y_pred: np.ndarray, levels: Sequence[int]) -> float:
    """Cohen's kappa with quadratic weights: agreement beyond chance, near misses count partly.
    NaN when it is undefined (a single level in both)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        value = cohen_kappa_score(y_true, y_pred, labels=list(levels), weights="quadratic")
    return float(value)


def auroc_at(y_true: np.ndarray, score: np.ndarray, threshold: int) -> float:
    """AUROC of `score` for telling pairs at level >= threshold from the rest. For a distribution,
    pass P(level >= threshold); a plain ranking score works too. NaN when only one side exists."""
    positive = np.asarray(y_true) >= threshold
    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, np.asarray(score, dtype=np.float64)))


def expected_level(proba: np.ndarray) -> np.ndarray:
    proba = np.asarray(proba, dtype=np.float64)
    return proba @ np.arange(1, proba.shape[1] + 1, dtype=np.float64)


def rmse_expected_level(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Root mean squared error of the expected level under the predicted distribution."""
    return float(np.sqrt(np.mean((expected_level(proba) - np.asarray(y_true, dtype=np.float64)) ** 2)))


def ndcg_per_query(query_ids: Sequence[str], item_ids: Sequence[str], labels: np.ndarray, scores: np.ndarray,
                   gains: Sequence[int], cutoffs: Sequence[int] = (5, 10, 20)) -> dict[int, dict[str, float]]:
    """nDCG@k of each query's judged items ranked by score, by ir-measures (trec_eval's nDCG with
    the scale's gains: level i earns gains[i-1]). Queries whose judged items all have gain 0 have
    no nDCG (it is 0/0) and are left out. Ties in score are broken as trec_eval does.

    Returns {k: {query_id: nDCG@k}}.
    """
    import ir_measures

    labels = np.asarray(labels)
    gain_of = {level: int(g) for level, g in enumerate(gains, start=1)}
    best: dict[str, int] = {}
    for q, level in zip(query_ids, labels):
        best[q] = max(best.get(q, 0), gain_of[int(level)])
    keep = {q for q, g in best.items() if g > 0}
    qrels = [ir_measures.Qrel(q, i, int(level)) for q, i, level in zip(query_ids, item_ids, labels) if q in keep]
    run = [ir_measures.ScoredDoc(q, i, float(s)) for q, i, s in zip(query_ids, item_ids, scores) if q in keep]
    measures = {ir_measures.nDCG(cutoff=k, gains=gain_of): k for k in cutoffs}
    out: dict[int, dict[str, float]] = {k: {} for k in cutoffs}
    for m in ir_measures.iter_calc(list(measures), qrels, run):
        out[measures[m.measure]][m.query_id] = float(m.value)
    return out

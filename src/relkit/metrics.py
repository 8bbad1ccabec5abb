"""Metric functions: small and pure. Classification metrics are computed over judged pairs (as
Pinterest reports accuracy); ranking metrics per query, then averaged over queries."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# scikit-learn's metrics are imported where used: the service reads levels here (apply_cutpoints) and
# has no other use for scikit-learn, some 60 MB resident


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of pairs whose predicted level is the true level."""
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 averaged over the levels present in the true labels (each level counts equally)."""
    from sklearn.metrics import f1_score

    labels = np.unique(y_true)
    return float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))


def quadratic_kappa(y_true: np.ndarray, y_pred: np.ndarray, levels: Sequence[int]) -> float:
    """Cohen's kappa with quadratic weights: agreement beyond chance, near misses count partly.
    NaN when it is undefined (a single level in both)."""
    from sklearn.metrics import cohen_kappa_score

    with np.errstate(divide="ignore", invalid="ignore"):
        value = cohen_kappa_score(y_true, y_pred, labels=list(levels), weights="quadratic")
    return float(value)


def within_one(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of pairs whose predicted level is at most one level from the true level."""
    return float(np.mean(np.abs(np.asarray(y_true) - np.asarray(y_pred)) <= 1))


def linear_kappa(y_true: np.ndarray, y_pred: np.ndarray, levels: Sequence[int]) -> float:
    """Cohen's kappa with linear weights: a miss costs its distance in levels. NaN when undefined."""
    from sklearn.metrics import cohen_kappa_score

    with np.errstate(divide="ignore", invalid="ignore"):
        value = cohen_kappa_score(y_true, y_pred, labels=list(levels), weights="linear")
    return float(value)


def auroc_at(y_true: np.ndarray, score: np.ndarray, threshold: int) -> float:
    """AUROC of `score` for telling pairs at level >= threshold from the rest. For a distribution,
    pass P(level >= threshold); a plain ranking score works too. NaN when only one side exists."""
    from sklearn.metrics import roc_auc_score

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


def dcg(gains: np.ndarray | Sequence[float]) -> float | np.ndarray:
    """Discounted cumulative gain with linear gains (trec_eval's): the sum of g_i / log2(i + 1),
    i from 1, over the last axis (one ranked list, or one per row).

    >>> dcg([3, 1, 0])
    3.6309297535714578
    >>> dcg(np.array([[3.0, 1.0], [0.0, 3.0]])).round(4).tolist()
    [3.6309, 1.8928]
    """
    gains = np.asarray(gains, dtype=np.float64)
    discounts = np.log2(np.arange(2, gains.shape[-1] + 2, dtype=np.float64))
    value = (gains / discounts).sum(axis=-1)
    return float(value) if gains.ndim == 1 else value


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


def apply_cutpoints(expected: np.ndarray, cutpoints: Sequence[float]) -> np.ndarray:
    """Levels from expected levels: level 1 below cutpoints[0], level i+1 from cutpoints[i-1] on."""
    return np.searchsorted(np.asarray(cutpoints, dtype=np.float64), np.asarray(expected), side="right") + 1


def fit_cutpoints(expected: np.ndarray, y_true: np.ndarray, levels: Sequence[int], rounds: int = 3) -> np.ndarray:
    """K-1 increasing cutpoints on the expected level that maximise quadratic kappa on (expected,
    y_true): start half-way between levels, then move one cutpoint at a time to its best value among
    the observed expected levels (coordinate ascent). Fit on dev, never on test."""
    expected = np.asarray(expected, dtype=np.float64)
    k = len(levels)
    cuts = np.arange(1, k, dtype=np.float64) + 0.5
    candidates = np.unique(np.quantile(expected, np.linspace(0, 1, 101)))
    best = quadratic_kappa(y_true, apply_cutpoints(expected, cuts), levels)
    best = -np.inf if np.isnan(best) else best
    for _ in range(rounds):
        for j in range(k - 1):
            low = cuts[j - 1] if j > 0 else -np.inf
            high = cuts[j + 1] if j < k - 2 else np.inf
            for c in candidates[(candidates > low) & (candidates < high)]:
                trial = cuts.copy()
                trial[j] = c
                value = quadratic_kappa(y_true, apply_cutpoints(expected, trial), levels)
                if not np.isnan(value) and value > best + 1e-12:
                    best, cuts = value, trial
    return cuts


def reliability(y_true: np.ndarray, p_at_least: np.ndarray, threshold: int, bins: int = 10
                ) -> tuple[list[dict], float]:
    """The reliability diagram of P(level >= threshold): pairs binned by the predicted probability
    (`bins` equal-width bins on [0, 1]); per non-empty bin its pairs, mean prediction and observed
    share at level >= threshold. Returns (bins, expected calibration error: the bins' gaps between
    prediction and observation, weighted by their share of the pairs).

    >>> rows, ece = reliability(np.array([1, 2, 2, 1]), np.array([0.1, 0.9, 0.8, 0.2]), 2, bins=2)
    >>> [(r["pairs"], r["observed"]) for r in rows], round(ece, 3)
    ([(2, 0.0), (2, 1.0)], 0.15)
    """
    positive = (np.asarray(y_true) >= threshold).astype(np.float64)
    p = np.clip(np.asarray(p_at_least, dtype=np.float64), 0.0, 1.0)
    which = np.minimum((p * bins).astype(int), bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        if not n:
            continue
        predicted, observed = float(p[mask].mean()), float(positive[mask].mean())
        rows.append({"low": b / bins, "high": (b + 1) / bins, "pairs": n, "predicted": predicted,
                     "observed": observed})
        ece += n / len(p) * abs(predicted - observed)
    return rows, float(ece)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """(K, K) counts: row = human level, column = predicted level."""
    out = np.zeros((k, k), dtype=np.int64)
    np.add.at(out, (np.asarray(y_true) - 1, np.asarray(y_pred) - 1), 1)
    return out

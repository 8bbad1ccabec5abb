"""Score systems on the judged pairs of one split and compare them side by side, on the whole
split and by the queries' language."""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from relkit import metrics
from relkit.errors import RelkitError
from relkit.intervals import LEVEL, RESAMPLES, Interval, bootstrap
from relkit.labels import JudgedPairs, load_judged_pairs
from relkit.scale import LabelScale
from relkit.workspace import Workspace

logger = logging.getLogger(__name__)

NDCG_CUTOFFS = (5, 10, 20)
PRIMARY_METRIC = "ndcg@10"
BY = ("language",)              # what `relkit eval --by` groups the queries by: a column of `queries`
NO_LANGUAGE = "none"            # the group of queries without a language (a text without a letter)


@dataclass(frozen=True)
class Prediction:
    """What a system says of each pair: a distribution over the K levels (`proba`, rows sum to 1),
    or only a ranking score (`scores`). With `proba`, the ranking score is the expected gain, and
    the predicted level is the most probable one unless the system gives its own `levels` (a
    decision rule such as cutpoints on the expected level)."""

    proba: np.ndarray | None = None
    scores: np.ndarray | None = None
    levels: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.proba is None) == (self.scores is None):
            raise ValueError("a Prediction holds either proba or scores")
        if self.proba is not None:
            p = np.asarray(self.proba, dtype=np.float64)
            if p.ndim != 2 or not np.isfinite(p).all() or (p < 0).any() or not np.allclose(p.sum(1), 1.0, atol=1e-4):
                raise ValueError("proba must be an (n, K) array of probabilities whose rows sum to 1")
            object.__setattr__(self, "proba", p)
            if self.levels is not None:
                levels = np.asarray(self.levels, dtype=np.int64)
                if levels.shape != (len(p),) or levels.min() < 1 or levels.max() > p.shape[1]:
                    raise ValueError("levels must hold one level in 1..K per pair")
                object.__setattr__(self, "levels", levels)
        else:
            if self.levels is not None:
                raise ValueError("levels come with proba")
            s = np.asarray(self.scores, dtype=np.float64)
            if s.ndim != 1 or not np.isfinite(s).all():
                raise ValueError("scores must be a 1-d array of finite numbers")
            object.__setattr__(self, "scores", s)

    def __len__(self) -> int:
        return len(self.proba if self.proba is not None else self.scores)

    def ranking_scores(self, scale: LabelScale) -> np.ndarray:
        return scale.expected_gain(self.proba) if self.proba is not None else self.scores

    def take(self, rows: np.ndarray) -> Prediction:
        """The prediction of the pairs at `rows`."""
        if self.proba is None:
            return Prediction(scores=self.scores[rows])
        return Prediction(proba=self.proba[rows], levels=None if self.levels is None else self.levels[rows])


class System(Protocol):
    """Anything that scores judged pairs. Systems are made by name in `relkit.systems`."""

    name: str

    def predict(self, pairs: JudgedPairs) -> Prediction: ...


def metric_names(scale: LabelScale) -> list[str]:
    return (["accuracy", "within_one", "macro_f1", "qwk", "linear_kappa", "argmax_accuracy", "argmax_qwk"]
            + [f"auroc@{t}" for t in range(2, scale.k + 1)]
            + [f"ndcg@{k}" for k in NDCG_CUTOFFS] + ["rmse"])


def score_prediction(pairs: JudgedPairs, prediction: Prediction, scale: LabelScale) -> dict[str, float | None]:
    """Every metric of one system on `pairs`. Accuracy, F1 and QWK judge the system's own decision
    (its `levels`, e.g. cutpoints); argmax_accuracy and argmax_qwk judge the most probable level, so
    both decisions are in view. A score-only system has none of these nor RMSE (None); a metric
    undefined on this data (NaN) is None too."""
    return _score(pairs, prediction, scale)[0]


def _score(pairs: JudgedPairs, prediction: Prediction, scale: LabelScale
           ) -> tuple[dict[str, float | None], dict[int, dict[str, float]]]:
    """score_prediction's metrics and the per-query nDCG behind them ({cutoff: {query_id: nDCG}})."""
    if len(prediction) != len(pairs):
        raise RelkitError(f"the system returned {len(prediction)} predictions for {len(pairs)} pairs")
    if prediction.proba is not None and prediction.proba.shape[1] != scale.k:
        raise RelkitError(f"the system predicts {prediction.proba.shape[1]} levels; the workspace scale has {scale.k}")
    out: dict[str, float | None] = dict.fromkeys(metric_names(scale))
    y = pairs.labels
    p = prediction.proba
    if p is not None:
        y_pred = prediction.levels if prediction.levels is not None else p.argmax(axis=1) + 1
        out["accuracy"] = metrics.accuracy(y, y_pred)
        out["macro_f1"] = metrics.macro_f1(y, y_pred)
        out["within_one"] = metrics.within_one(y, y_pred)
        out["qwk"] = metrics.quadratic_kappa(y, y_pred, scale.levels)
        out["linear_kappa"] = metrics.linear_kappa(y, y_pred, scale.levels)
        out["argmax_accuracy"] = metrics.accuracy(y, p.argmax(axis=1) + 1)
        out["argmax_qwk"] = metrics.quadratic_kappa(y, p.argmax(axis=1) + 1, scale.levels)
        out["rmse"] = metrics.rmse_expected_level(y, p)
    for t in range(2, scale.k + 1):
        # a distribution gives P(level >= t); a plain score ranks the same way at every threshold
        out[f"auroc@{t}"] = metrics.auroc_at(y, p[:, t - 1:].sum(axis=1) if p is not None else prediction.scores, t)
    per_query = metrics.ndcg_per_query(pairs.query_ids, pairs.item_ids, y, prediction.ranking_scores(scale),
                                       scale.gains, NDCG_CUTOFFS)
    for k, values in per_query.items():
        out[f"ndcg@{k}"] = float(np.mean(list(values.values()))) if values else None
    return {k: None if v is None or math.isnan(v) else v for k, v in out.items()}, per_query


def paired_bootstrap(a: dict[str, float], b: dict[str, float], resamples: int = RESAMPLES, level: float = LEVEL,
                     seed: int = 0) -> Interval:
    """The mean per-query difference `a` - `b` over the queries both have, with its paired bootstrap
    interval: queries are resampled with replacement (the query is the unit that varies), and the
    interval holds the middle `level` of the resampled means.

    >>> f"{paired_bootstrap({'q1': 0.9, 'q2': 0.7}, {'q1': 0.8, 'q2': 0.6}):+.4f}"
    '+0.1000 [+0.1000, +0.1000]'
    """
    queries = sorted(a.keys() & b.keys())
    if not queries:
        raise RelkitError("no query has a value for both systems: nothing to compare")
    differences = np.array([a[q] - b[q] for q in queries])
    return bootstrap([differences], resamples=resamples, level=level, seed=seed,
                     method=f"paired bootstrap, {resamples} resamples over queries")


@dataclass(frozen=True)
class SystemResult:
    name: str
    metrics: dict[str, float | None]
    seconds: float | None                  # None in a group's report: the system scored the whole split at once
    vs_first: Interval | None = None       # primary metric minus the first system's, per query


@dataclass(frozen=True)
class EvalReport:
    split: str
    queries: int
    pairs: int
    ranked_queries: int      # queries with a relevant item: the ones nDCG averages over
    results: list[SystemResult] = field(default_factory=list)
    primary: str = PRIMARY_METRIC
    by: dict[str, dict[str, EvalReport]] = field(default_factory=dict)   # {"language": {"en": report}}

    def to_dict(self) -> dict:
        """As `relkit eval --json` prints it; with `by`, each group's report under
        "by": {"language": {"en": {"queries", "pairs", "ranked_queries", "systems"}}}."""
        out = {"split": self.split, "queries": self.queries, "pairs": self.pairs,
               "ranked_queries": self.ranked_queries, "primary": self.primary, "systems": self._systems()}
        if self.by:
            out["by"] = {column: {value: {"queries": g.queries, "pairs": g.pairs, "ranked_queries": g.ranked_queries,
                                          "systems": g._systems()} for value, g in groups.items()}
                         for column, groups in self.by.items()}
        return out

    def _systems(self) -> list[dict]:
        return [{"name": r.name, **({} if r.seconds is None else {"seconds": round(r.seconds, 3)}),
                 "metrics": r.metrics, **({"vs_first": r.vs_first.to_dict()} if r.vs_first else {})}
                for r in self.results]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def headline(self) -> str:
        return (f"{self.split} split: {self.queries:,} queries, {self.pairs:,} judged pairs; nDCG averaged over "
                f"the {self.ranked_queries:,} queries with a relevant item")

    def __rich__(self):
        from rich.console import Group
        from rich.text import Text

        parts = [Text(self.headline()), self.table()]
        for column, groups in self.by.items():
            for value, g in groups.items():
                parts.append(g.table(title=f"{column} {value}: {g.queries:,} queries, {g.pairs:,} judged pairs, "
                                           f"nDCG over the {g.ranked_queries:,} with a relevant item", caption=False))
        return Group(*parts)

    def table(self, title: str | None = None, caption: bool = True):
        """Metrics down, systems across: every column scored on the same queries."""
        from rich.table import Table

        table = Table(title=title, caption=self.caption() if caption else None)
        table.add_column("metric")
        for r in self.results:
            table.add_column(r.name, justify="right")
        names = list(self.results[0].metrics) if self.results else []
        for name in names:
            cells = ["-" if r.metrics[name] is None else f"{r.metrics[name]:.4f}" for r in self.results]
            table.add_row(name, *cells, style="bold" if name == self.primary else None)
        if len(self.results) > 1:
            first = self.results[0]
            table.add_row(f"{self.primary} - {first.name}",
                          *("" if r.vs_first is None else f"{r.vs_first:+.4f}" for r in self.results))
        if any(r.seconds is not None for r in self.results):
            table.add_row("seconds", *("" if r.seconds is None else f"{r.seconds:.1f}" for r in self.results),
                          style="dim")
        return table

    def caption(self) -> str | None:
        """What the difference row means, when there is one."""
        interval = next((r.vs_first for r in self.results if r.vs_first is not None), None)
        if interval is None:
            return None
        return (f"{self.primary} - {self.results[0].name}: mean per-query difference over the same queries, "
                f"[{interval.level:.0%} interval: {interval.method}]; an interval that holds 0 is no evidence of "
                f"a difference")


def evaluate(ws: Workspace, systems: list[System], split: str = "test", by: str | None = None) -> EvalReport:
    """Score each system on the same judged pairs of `split`; with `by="language"`, also on the
    queries of each language apart (`EvalReport.by`), each compared with the first system there.

        from relkit.systems import make_system
        evaluate(ws, [make_system("bm25", ws)]).results[0].metrics["ndcg@10"]
        evaluate(ws, [make_system("bm25", ws)], by="language").by["language"]["de"].results[0].metrics
    """
    check_by(by)
    pairs = load_judged_pairs(ws, split)
    groups = None if by is None else query_groups(ws, by, split)
    return compare(pairs, predict_all(pairs, systems), ws.scale, groups={by: groups} if by else None)


def check_by(by: str | None) -> None:
    """Raise when `by` is not a grouping `relkit eval --by` knows."""
    if by is not None and by not in BY:
        raise RelkitError(f"unknown --by '{by}'; expected one of: {', '.join(BY)}")


def query_groups(ws: Workspace, by: str, split: str) -> dict[str, str]:
    """{query_id: its value of `by`} for the queries of `split`; a query without a language is in
    NO_LANGUAGE."""
    check_by(by)
    rows = ws.fetchall(f"SELECT q.query_id, coalesce(q.{by}, ?) FROM queries q JOIN splits s USING (query_id) "
                       "WHERE s.split = ?", [NO_LANGUAGE, split])
    return dict(rows)


@dataclass(frozen=True)
class SystemPrediction:
    """One system's prediction of the judged pairs and the seconds it took."""
    name: str
    prediction: Prediction
    seconds: float | None


def predict_all(pairs: JudgedPairs, systems: list[System]) -> list[SystemPrediction]:
    out = []
    for system in systems:
        logger.info("scoring %s pairs with %s", f"{len(pairs):,}", system.name)
        start = time.perf_counter()
        prediction = system.predict(pairs)
        out.append(SystemPrediction(system.name, prediction, time.perf_counter() - start))
    return out


def compare(pairs: JudgedPairs, scored: list[SystemPrediction], scale: LabelScale,
            groups: dict[str, dict[str, str]] | None = None) -> EvalReport:
    """The side-by-side report of predictions of the same pairs; each after the first gets its
    per-query difference in the primary metric from the first. `groups` ({"language": {query_id:
    value}}) adds a report of each group's queries alone (`EvalReport.by`), ordered by value."""
    gains = np.asarray(scale.gains)[pairs.labels - 1]
    ranked = len({q for q, g in zip(pairs.query_ids, gains) if g > 0})
    results = []
    cutoff = int(PRIMARY_METRIC.split("@")[1])
    first: dict[str, float] | None = None
    for s in scored:
        scores, per_query = _score(pairs, s.prediction, scale)
        vs_first = None
        if first is None:
            first = per_query[cutoff]
        elif first:
            vs_first = paired_bootstrap(per_query[cutoff], first)
        results.append(SystemResult(s.name, scores, s.seconds, vs_first))
    by = {column: _by_group(pairs, scored, scale, of) for column, of in (groups or {}).items()}
    return EvalReport(split=pairs.split, queries=len(set(pairs.query_ids)), pairs=len(pairs), ranked_queries=ranked,
                      results=results, by=by)


def _by_group(pairs: JudgedPairs, scored: list[SystemPrediction], scale: LabelScale,
              group_of: dict[str, str]) -> dict[str, EvalReport]:
    """compare() on each group's pairs alone: metrics of its queries only, paired against the first system's."""
    missing = sorted(set(pairs.query_ids) - group_of.keys())
    if missing:
        raise RelkitError(f"{len(missing):,} queries have no group (first: '{missing[0]}')")
    keys = np.array([group_of[q] for q in pairs.query_ids], dtype=object)
    out = {}
    for value in sorted(set(keys), key=lambda v: (v == NO_LANGUAGE, v)):
        rows = np.flatnonzero(keys == value)
        out[value] = compare(pairs.take(rows), [SystemPrediction(s.name, s.prediction.take(rows), None)
                                                for s in scored], scale)
    return out

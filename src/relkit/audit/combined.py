"""An audit combined with people's judgments of its slice (`relkit audit --combine NAME`): per system
nDCG@K and the share relevant, and the paired nDCG@K difference of each two systems, each estimated
three ways side by side: by the judge alone (on every audited query), by people alone (on the
slice's queries) and prediction-powered (PPI++, both); with the judge's bias on the slice and, for
three systems or more, whether the judge ranks them as people do.

What is estimated, per system: the mean over the population of queries (strata weighted by their
share) of nDCG@K, where a query's nDCG@K is the DCG of the system's top K over the ideal DCG of the
best K of every audited system's results for it (the pooled ideal), both from one labeller's gains,
over the queries whose pool holds a relevant result. A query is the sampling unit and people judge
all its results, so its nDCG by people is a function of that query alone; the mean over the queries
with a value is a ratio of two means, and its interval comes by the delta method (see ppi.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import combinations

import numpy as np

from relkit.audit.people import MEASURES, PeopleSlice, PeopleValues, people_values
from relkit.audit.ppi import Estimate, classical, ppi
from relkit.audit.storage import save_audit, stored_audit
from relkit.errors import RelkitError
from relkit.scale import LabelScale
from relkit.workspace import Workspace

ESTIMATORS = ("judge", "people", "ppi")
HEADS = {"judge": "judge only", "people": "people only", "ppi": "PPI++"}


@dataclass(frozen=True)
class Side:
    """One measure estimated three ways."""
    judge: Estimate
    people: Estimate
    ppi: Estimate

    def to_dict(self) -> dict:
        return {name: getattr(self, name).to_dict() for name in ESTIMATORS}


def verdict(estimate: Estimate, a: str, b: str) -> str:
    """What a paired difference a - b says at its level: which is better, or no difference."""
    i = estimate.interval
    return f"{a} better" if i.low > 0 else f"{b} better" if i.high < 0 else "no difference"


@dataclass(frozen=True)
class Comparison:
    """`a` - `b` in nDCG@K, paired per query."""
    a: str
    b: str
    ndcg: Side

    def verdicts(self) -> dict[str, str]:
        return {name: verdict(getattr(self.ndcg, name), self.a, self.b) for name in ESTIMATORS}

    @property
    def agree(self) -> bool:
        """Whether the judge alone reaches people's verdict (the prediction-powered one): the same
        sign, significant or not alike."""
        v = self.verdicts()
        return v["judge"] == v["ppi"]

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "ndcg": self.ndcg.to_dict(), "verdicts": self.verdicts(),
                "agree": self.agree}


@dataclass(frozen=True)
class Ranking:
    """Kendall's tau between the systems' order by the judge alone and by people (the
    prediction-powered estimates of people's nDCG@K)."""
    tau: float
    p_value: float
    judge: list[str]            # best first
    people: list[str]

    def to_dict(self) -> dict:
        return {"tau": self.tau, "p_value": self.p_value, "judge_order": self.judge, "people_order": self.people}


def ranking(names: list[str], judge: list[float], people: list[float]) -> Ranking:
    """The agreement of two orderings of the same systems by their estimates (higher is better).

    >>> r = ranking(["a", "b", "c"], [0.3, 0.2, 0.1], [0.3, 0.1, 0.2])
    >>> round(r.tau, 4), r.people
    (0.3333, ['a', 'c', 'b'])
    """
    from scipy.stats import kendalltau

    def order(values):
        return [names[i] for i in np.argsort(-np.asarray(values), kind="stable")]

    tau, p = kendalltau(judge, people)
    return Ranking(float(tau), float(p), order(judge), order(people))


@dataclass(frozen=True)
class Bias:
    """The judge against people on the slice's results both judged: the mean of the judge's expected
    gain minus people's gain; leniency, the share of results the judge calls relevant (P(level >= t))
    and people do not; severity, the share people call relevant and the judge does not (leniency -
    severity is the judge's excess share relevant); per stratum, then over all; and the confusion of
    people's level (rows) with the judge's most probable level (columns)."""
    rows: list[dict]                   # {stratum, results, gain_difference, leniency, severity}
    confusion: list[list[int]]

    def to_dict(self) -> dict:
        return {"rows": self.rows, "confusion": self.confusion}


def bias(labels: list[int], proba: np.ndarray, strata: list[str], scale: LabelScale, threshold: int) -> Bias:
    """The judge's bias from people's `labels` (levels 1..K) and the judge's distributions `proba`
    ((n, K)) of the same results, in the strata of their queries."""
    labels, proba = np.asarray(labels, dtype=np.int64), np.asarray(proba, dtype=np.float64).reshape(len(labels), -1)
    gains = np.asarray(scale.gains, dtype=np.float64)
    difference = proba @ gains - gains[labels - 1]
    judge_relevant, judge_not = proba[:, threshold - 1:].sum(axis=1), proba[:, :threshold - 1].sum(axis=1)
    relevant = (labels >= threshold).astype(np.float64)
    groups = np.asarray(strata, dtype=object)

    def row(name, mask):
        return {"stratum": name, "results": int(mask.sum()), "gain_difference": float(difference[mask].mean()),
                "leniency": float((judge_relevant * (1 - relevant))[mask].mean()),
                "severity": float((judge_not * relevant)[mask].mean())}

    names = sorted(set(strata))
    rows = [row(h, groups == h) for h in names] if len(names) > 1 else []
    rows.append(row("all", np.ones(len(labels), dtype=bool)))
    confusion = np.zeros((scale.k, scale.k), dtype=np.int64)
    np.add.at(confusion, (labels - 1, proba.argmax(axis=1)), 1)
    return Bias(rows, confusion.tolist())


@dataclass(frozen=True)
class CombinedAudit:
    name: str
    time: str
    judge: str
    k: int
    threshold: int
    level_names: list[str]
    slice_queries: int                 # queries drawn into the slice
    complete: int                      # of them, those people judged every result of
    members: int                       # results the slice asked people to judge
    judged: int                        # of them, judged
    queries: int                       # audited queries
    systems: dict[str, dict[str, Side]]
    comparisons: list[Comparison]
    ranking: Ranking | None
    bias: Bias
    plan: dict                         # what planning needs: the moments of the primary estimate, a query's cost

    def to_dict(self) -> dict:
        """What the stored audit keeps under `ppi` (and `--combine --json` prints)."""
        return {"time": self.time, "slice": {"queries": self.slice_queries, "complete": self.complete,
                                              "results": self.members, "judged": self.judged},
                "systems": [{"name": s, **{m: side.to_dict() for m, side in by.items()}}
                            for s, by in self.systems.items()],
                "comparisons": [c.to_dict() for c in self.comparisons],
                "ranking": None if self.ranking is None else self.ranking.to_dict(), "bias": self.bias.to_dict(),
                "plan": self.plan}

    def summary(self) -> str:
        return (f"audit {self.name} combined with people: {self.judged:,} of the slice's {self.members:,} results "
                f"judged by people, {self.complete} of its {self.slice_queries} queries completely (those are used); "
                f"{self.judge} on all {self.queries} audited queries")

    def __rich__(self):
        from rich.console import Group
        from rich.text import Text

        parts = [Text(self.summary()), self.table(), self.verdict_table()]
        if self.ranking:
            r = self.ranking
            parts.append(Text(f"Kendall's tau between the judge's order ({' > '.join(r.judge)}) and people's "
                              f"({' > '.join(r.people)}): {r.tau:+.3f} (p {r.p_value:.3f})"))
        parts += [self.bias_table(), self.confusion_table()]
        return Group(*parts)

    def table(self):
        """Each measure by the judge alone, people alone and both (PPI++), with the intervals' widths."""
        from rich.table import Table

        table = Table(title="judge only, people only and combined", caption=(
            f"95% Student t intervals (degrees of freedom: the queries people judged, for people only and PPI++, or "
            f"the judge did, for judge only, less the strata, lowered for the values' kurtosis; PPI++'s standard "
            f"error by the jackknife). nDCG@{self.k}: per query, DCG over the ideal DCG of "
            f"every system's pooled top {self.k}, both by the same labeller's gains, averaged over the queries with a "
            f"relevant result (a ratio of means: delta method); share: of results at level >= {self.threshold}. "
            f"Judge only: the audit's "
            f"labels on every query (valid only if the judge is right); people only: the slice's complete queries; "
            f"PPI++: both, unbiased whatever the judge's errors, lambda weighing the judge."))
        table.add_column("measure", justify="left")
        for name in ESTIMATORS:
            table.add_column(f"{HEADS[name]} [95%]", justify="right")
            table.add_column("width", justify="right")
        table.add_column("lambda", justify="right")
        rows = [(f"{s} {self._label(m)}", side, "") for s, by in self.systems.items() for m, side in by.items()]
        rows += [(f"{c.a} - {c.b} ndcg@{self.k}", c.ndcg, "+") for c in self.comparisons]
        for label, side, sign in rows:
            cells = [c for name in ESTIMATORS for c in (format(getattr(side, name).interval, f"{sign}.4f"),
                                                        f"{getattr(side, name).width:.4f}")]
            table.add_row(label, *cells, f"{side.ppi.lam:.2f}", style="bold" if sign else None)
        return table

    def _label(self, measure: str) -> str:
        return f"ndcg@{self.k}" if measure == "ndcg" else f"share >= {self.threshold}"

    def verdict_table(self):
        from rich.table import Table

        table = Table(title="verdicts (which is better at 95%) and minimum detectable effects",
                      caption="MDE: the difference a two-sided test at 5% detects with 80% power at this sample")
        verdicts = ("pair", "judge only", "people only", "PPI++")
        for col in (*verdicts, "judge agrees", "MDE judge", "MDE people", "MDE PPI++"):
            table.add_column(col, justify="left" if col in verdicts else "right")
        for c in self.comparisons:
            v = c.verdicts()
            table.add_row(f"{c.a} - {c.b}", v["judge"], v["people"], v["ppi"], "yes" if c.agree else "NO",
                          *(f"{getattr(c.ndcg, name).mde:.4f}" for name in ESTIMATORS))
        return table

    def bias_table(self):
        from rich.table import Table

        table = Table(title=f"the judge against people on the slice's {self.judged:,} judged results",
                      caption=f"gain difference: the judge's expected gain minus people's; leniency: share the judge "
                              f"calls relevant (level >= {self.threshold}) and people do not; severity: the reverse")
        for col in ("stratum", "results", "gain difference", "leniency", "severity"):
            table.add_column(col, justify="left" if col == "stratum" else "right")
        for r in self.bias.rows:
            table.add_row(r["stratum"], str(r["results"]), f"{r['gain_difference']:+.4f}", f"{r['leniency']:.4f}",
                          f"{r['severity']:.4f}", style="bold" if r["stratum"] == "all" else None)
        return table

    def confusion_table(self):
        from rich.table import Table

        table = Table(title="people's level (rows) by the judge's most probable level (columns)")
        table.add_column("people \\ judge", justify="left")
        for n in self.level_names:
            table.add_column(n, justify="right")
        for n, row in zip(self.level_names, self.bias.confusion):
            table.add_row(n, *map(str, row))
        return table


def _pick(values: dict, queries: list[str]) -> np.ndarray:
    return np.array([np.nan if values[q] is None else values[q] for q in queries], dtype=np.float64)


def _side(y: np.ndarray, f_slice: np.ndarray, f_rest: np.ndarray, s_slice: list, s_rest: list, weights: dict,
          level: float) -> Side:
    return Side(judge=classical(np.concatenate([f_slice, f_rest]), s_slice + s_rest, weights, level, by="judge"),
                people=classical(y, s_slice, weights, level),
                ppi=ppi(y, f_slice, f_rest, s_slice, s_rest, weights, level=level))


def combine(ws: Workspace, name: str, level: float = 0.95, save: bool = True) -> CombinedAudit:
    """Combine the stored audit `name` with people's judgments of its slice, and keep the result in
    the stored audit under `ppi`.

        combine(ws, "weekly").systems["bm25"]["ndcg"].ppi.interval
    """
    stored = stored_audit(ws, name, "to combine")
    if not stored.get("people"):
        raise RelkitError(f"audit '{name}' has no people slice: run it with --people N")
    people = PeopleSlice.from_dict(stored["people"])
    k, threshold = stored["k"], stored["threshold"]
    got: PeopleValues = people_values(ws, people, k, threshold)
    queries, strata = stored["query_ids"], stored["strata"]
    sample = stored["sample"]
    weights = {h: float(sample["population"][h]) for h, n in sample["allocation"].items() if n > 0}
    on = set(got.complete)
    rest = [q for q in queries if q not in on]
    s_slice, s_rest = [strata[q] for q in got.complete], [strata[q] for q in rest]
    short = {h for h in set(strata.values()) if s_slice.count(h) < 2}
    if short:
        raise RelkitError(f"people have judged every result of {len(got.complete)} of the slice's "
                          f"{len(people.query_ids)} queries; each stratum needs two such queries and "
                          f"{', '.join(map(repr, sorted(short)))} has fewer: judge the rest of the slice "
                          f"(`relkit annotate`, or its CSV {people.csv}) and combine again")
    judge_values = {s: {m: dict(zip(queries, v[m])) for m in MEASURES} for s, v in people.judge_values.items()}
    names = list(people.lists)

    def side(y, f):
        return _side(y, _pick(f, got.complete), _pick(f, rest), s_slice, s_rest, weights, level)

    systems = {s: {m: side(got.values[s][m], judge_values[s][m]) for m in MEASURES} for s in names}
    comparisons = []
    for b, a in combinations(names, 2):     # later minus earlier, as the audit's comparison of two systems
        f = {q: None if judge_values[a]["ndcg"][q] is None or judge_values[b]["ndcg"][q] is None
             else judge_values[a]["ndcg"][q] - judge_values[b]["ndcg"][q] for q in queries}
        comparisons.append(Comparison(a, b, side(got.values[a]["ndcg"] - got.values[b]["ndcg"], f)))
    agreement = None
    if len(names) >= 3:
        agreement = ranking(names, [systems[s]["ndcg"].judge.estimate for s in names],
                            [systems[s]["ndcg"].ppi.estimate for s in names])
    judged = [(p, got.labels[p], proba) for p, proba in zip(people.pairs, people.judge_proba)
              if p in got.labels and proba is not None]
    if not judged:
        raise RelkitError(f"people have judged none of the slice's results of audit '{name}' yet")
    found = bias([label for _, label, _ in judged], [proba for _, _, proba in judged],
                 [strata[q] for (q, _), _, _ in judged], ws.scale, threshold)
    primary = comparisons[0] if comparisons else None
    estimate = primary.ndcg.ppi if primary else systems[names[0]]["ndcg"].ppi
    plan = {"measure": f"{primary.a} - {primary.b} ndcg@{k}" if primary else f"{names[0]} ndcg@{k}",
            **estimate.moments.to_dict(), "results_per_query": people.open_per_query, "queries": len(queries),
            "people_queries": len(got.complete), "mde": estimate.mde}
    result = CombinedAudit(
        name=name, time=datetime.now(timezone.utc).isoformat(timespec="seconds"), judge=stored["judge"], k=k,
        threshold=threshold, level_names=list(ws.scale.names), slice_queries=len(people.query_ids),
        complete=len(got.complete), members=len(people.pairs), judged=sum(p in got.labels for p in people.pairs),
        queries=len(queries), systems=systems, comparisons=comparisons, ranking=agreement, bias=found, plan=plan)
    if save:
        save_audit(ws, name, {**stored, "ppi": result.to_dict()})
    return result

"""An audit: the top K results of each system for a sample of queries, judged, and turned into
nDCG@K and the share of results at level >= t, per system and per stratum, with intervals; for two
systems the paired difference and the minimum detectable effect. Stored in the workspace."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from statistics import NormalDist

import numpy as np

from relkit.audit.judges import Judge, cached_judgments, item_exists
from relkit.audit.lists import ResultLists
from relkit.audit.sampling import Sample
from relkit.errors import RelkitError
from relkit.logs import progress
from relkit.workspace import Workspace

logger = logging.getLogger(__name__)
RESULT_KIND = "audit"
ALPHA, POWER = 0.05, 0.8
# the MDE of a two-sided test at level ALPHA with power POWER is this many standard errors
MDE_FACTOR = NormalDist().inv_cdf(1 - ALPHA / 2) + NormalDist().inv_cdf(POWER)


def default_threshold(k: int) -> int:
    """The level from which a result counts as relevant by default: the upper half of the scale."""
    return k // 2 + 1


@dataclass(frozen=True)
class Estimate:
    """A stratified mean over queries with its 95% bootstrap interval (queries resampled within strata)."""
    mean: float
    low: float
    high: float
    queries: int

    def __str__(self) -> str:
        return f"{self.mean:.4f} [{self.low:.4f}, {self.high:.4f}]"


def stratified_mean(values: dict[str, float], strata: dict[str, str], weights: dict[str, float]) -> float:
    by = _by_stratum(values, strata)
    w = {h: weights[h] for h in by}
    total = sum(w.values())
    return float(sum(w[h] / total * np.mean(v) for h, v in by.items()))


def _by_stratum(values: dict[str, float], strata: dict[str, str]) -> dict[str, np.ndarray]:
    out: dict[str, list[float]] = {}
    for q in sorted(values):
        out.setdefault(strata[q], []).append(values[q])
    return {h: np.asarray(v, dtype=np.float64) for h, v in out.items()}


def bootstrap(values: dict[str, float], strata: dict[str, str], weights: dict[str, float], resamples: int = 2000,
              seed: int = 0, level: float = 0.95) -> Estimate:
    """The stratified mean of per-query `values` (each stratum's mean weighted by its share of the
    population) and its percentile bootstrap interval: each resample redraws every stratum's
    queries with replacement, as many as it has.

    >>> str(bootstrap({"a": 1.0, "b": 0.0}, {"a": "x", "b": "y"}, {"x": 0.5, "y": 0.5}))
    '0.5000 [0.5000, 0.5000]'
    """
    if not values:
        raise RelkitError("no audited query has a value: nothing to estimate")
    by = _by_stratum(values, strata)
    total = sum(weights[h] for h in by)
    rng = np.random.default_rng(seed)
    means = np.zeros(resamples)
    for h, v in by.items():
        draws = v[rng.integers(0, len(v), size=(resamples, len(v)))].mean(axis=1)
        means += weights[h] / total * draws
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Estimate(stratified_mean(values, strata, weights), float(low), float(high), len(values))


def standard_error(values: dict[str, float], strata: dict[str, str], weights: dict[str, float]) -> float:
    """The standard error of the stratified mean, sqrt(sum_h W_h^2 s_h^2 / n_h), with s_h the
    stratum's sample standard deviation (the pooled one for a stratum of a single query). Queries
    are taken as a sample of the queries the engine will see, so no finite-population correction."""
    by = _by_stratum(values, strata)
    pooled = float(np.std(list(values.values()), ddof=1)) if len(values) > 1 else 0.0
    total = sum(weights[h] for h in by)
    var = sum((weights[h] / total) ** 2 * (float(np.std(v, ddof=1)) if len(v) > 1 else pooled) ** 2 / len(v)
              for h, v in by.items())
    return math.sqrt(var)


def spread(values: dict[str, float], strata: dict[str, str]) -> dict[str, float]:
    """Each stratum's standard deviation of the per-query values: what Neyman allocation needs."""
    return {h: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for h, v in _by_stratum(values, strata).items()}


def dcg(gains: list[float]) -> float:
    """Discounted cumulative gain with linear gains (trec_eval's): sum of g_i / log2(i + 1), i from 1."""
    return float(sum(g / math.log2(i + 2) for i, g in enumerate(gains)))


@dataclass(frozen=True)
class SystemAudit:
    name: str
    source: str
    ndcg: Estimate
    share: Estimate | None
    strata: dict[str, dict]            # stratum -> {queries, ndcg, share}
    results: int                       # (query, item) results audited
    empty: int                         # queries for which the system returned nothing
    per_query: dict[str, float]        # query_id -> nDCG@K


@dataclass(frozen=True)
class Comparison:
    """`a` - `b` in nDCG@K, paired per query."""
    a: str
    b: str
    difference: Estimate
    standard_error: float
    mde: float                         # MDE_FACTOR x standard_error
    mde_relative: float | None         # mde / b's mean nDCG
    strata: dict[str, float]           # stratum -> mean difference


@dataclass(frozen=True)
class JudgedCounts:
    pairs: int            # distinct (query, item) in the judged pool
    human: int            # of them, judged by people in the workspace
    judge: int            # judged by the judge
    judged_now: int       # of those, not in the cache: judged by this run
    unjudged: int         # items not in the catalog or the judge gave no answer: gain 0, not in the share


@dataclass(frozen=True)
class AuditResult:
    name: str
    time: str
    judge: str
    judge_version: str
    k: int
    threshold: int
    sample: Sample
    systems: list[SystemAudit]
    comparison: Comparison | None
    counts: JudgedCounts
    ndcg_queries: int      # sampled queries with a relevant item in the pool (those nDCG is defined for)
    seconds: float = 0.0
    spread: dict[str, float] = field(default_factory=dict)
    human: bool = True     # people's judgments stood in for the judge's where the workspace has them

    @property
    def metric(self) -> str:
        return f"ndcg@{self.k}"

    def to_dict(self) -> dict:
        return {
            "time": self.time, "judge": self.judge, "judge_version": self.judge_version, "k": self.k,
            "threshold": self.threshold, "human_judgments": self.human, "sample": self.sample.to_dict(),
            "query_ids": self.sample.query_ids,
            "strata": self.sample.strata, "ndcg_queries": self.ndcg_queries, "judged": asdict(self.counts),
            "seconds": round(self.seconds, 2), "spread": self.spread,
            "systems": [{"name": s.name, "source": s.source, "ndcg": asdict(s.ndcg),
                         "share": asdict(s.share) if s.share else None, "strata": s.strata, "results": s.results,
                         "empty": s.empty, "per_query": s.per_query} for s in self.systems],
            "comparison": asdict(self.comparison) if self.comparison else None,
        }

    def summary(self) -> str:
        c = self.counts
        return (f"audit {self.name}: {len(self.sample.query_ids):,} queries ({self.sample.method}"
                f"{'' if self.sample.method == 'all' else ' allocation'} over {len(self.sample.population)} "
                f"{self.sample.by} strata), top {self.k} of {len(self.systems)} system(s); {c.pairs:,} distinct "
                f"results: {c.human:,} judged by people, {c.judge:,} by {self.judge} ({c.judged_now:,} now, "
                f"{c.judge - c.judged_now:,} from the cache), {c.unjudged:,} unjudged (counted as gain 0); nDCG over "
                f"the {self.ndcg_queries:,} queries with a relevant result")

    def table(self):
        from rich.table import Table

        strata = [h for h, n in self.sample.allocation.items() if n > 0]
        table = Table(caption=self.caption())
        for col in ("system", f"ndcg@{self.k} [95%]", f"share >= {self.threshold} [95%]", "empty"):
            table.add_column(col, justify="left" if col == "system" else "right")
        for h in strata:
            table.add_column(f"{h} ({self.sample.allocation[h]}/{self.sample.population[h]})", justify="right")
        for s in self.systems:
            table.add_row(s.name, str(s.ndcg), str(s.share) if s.share else "-", str(s.empty),
                          *(_fmt(s.strata.get(h, {}).get("ndcg")) for h in strata))
        c = self.comparison
        if c:
            d = c.difference
            table.add_row(f"{c.a} - {c.b}", f"{d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}]", "", "",
                          *(_fmt(c.strata.get(h), signed=True) for h in strata), style="bold")
        return table

    def caption(self) -> str:
        text = (f"nDCG@{self.k} on the judge's expected gains, ideal from the pool of every system's judged top "
                f"{self.k}; stratified means (strata weighted by their share of the queries), 95% bootstrap "
                f"intervals with queries resampled within strata")
        if self.comparison:
            c = self.comparison
            rel = f" ({c.mde_relative:.1%} of {c.b})" if c.mde_relative is not None else ""
            text += (f". Minimum detectable effect at {len(self.sample.query_ids)} queries: {c.mde:.4f}{rel} "
                     f"= {MDE_FACTOR:.2f} x the standard error of the paired difference ({c.standard_error:.4f}), "
                     f"two-sided test at 5% with 80% power")
        return text


def _fmt(value: float | None, signed: bool = False) -> str:
    return "-" if value is None else f"{value:+.4f}" if signed else f"{value:.4f}"


def run_audit(ws: Workspace, systems: list[ResultLists], judge: Judge, sample: Sample, k: int = 10,
              threshold: int | None = None, name: str | None = None, resamples: int = 2000, seed: int = 0,
              save: bool = True, human: bool = True) -> AuditResult:
    """Judge each system's top `k` for the sampled queries and measure them; the audit is saved in
    the workspace as results/audit-NAME.json (NAME defaults to the time) unless `save` is False.
    People's judgments stand in for the judge's where the workspace has them, unless `human` is False
    (then the judge judges everything: how far it moves the figures is a check of the judge).

        lists = read_run("bm25.trec", "bm25", ids, by_text)
        run_audit(ws, [lists], make_judge("teacher:demo", ws), draw(strata, 100)).systems[0].ndcg
    """
    start = time.perf_counter()
    scale = ws.scale
    t = threshold or default_threshold(scale.k)
    if not 1 <= t <= scale.k:
        raise RelkitError(f"--threshold must be a level 1..{scale.k}, got {t}")
    if k < 1:
        raise RelkitError(f"--k must be at least 1, got {k}")
    if not systems:
        raise RelkitError("nothing to audit: give a run file (--run) or an engine (--engine)")
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise RelkitError(f"two systems are called the same: {', '.join(names)} (name them NAME=...)")
    queries = sample.query_ids
    tops = {s.name: {q: s.lists.get(q, [])[:k] for q in queries} for s in systems}
    pool = list(dict.fromkeys((q, i) for s in systems for q in queries for i in tops[s.name][q]))

    # who judges each pair: people where the workspace has their judgment, else the judge
    human_labels: dict[tuple[str, str], int] = {}
    if pool and human:
        with ws.registered("_audit_pool", {"query_id": [q for q, _ in pool], "item_id": [i for _, i in pool]}):
            human_labels = {(q, i): label for q, i, label in ws.fetchall(
                "SELECT query_id, item_id, label FROM judgments JOIN _audit_pool USING (query_id, item_id)")}
    known = item_exists(ws, [i for _, i in pool])
    to_judge = [p for p in pool if p not in human_labels and p[1] in known]
    if to_judge:
        logger.info(f"judging {len(to_judge):,} results with {judge.name} (cached ones are not judged again)")
    proba, judged_now = cached_judgments(ws, judge, to_judge)
    dist: dict[tuple[str, str], np.ndarray] = {}
    for pair, level in human_labels.items():
        dist[pair] = np.eye(scale.k)[level - 1]
    for pair, p in zip(to_judge, proba):
        if np.isfinite(p).all():
            dist[pair] = p
    gains = np.asarray(scale.gains, dtype=np.float64)
    gain = {pair: float(p @ gains) for pair, p in dist.items()}
    at_least = {pair: float(p[t - 1:].sum()) for pair, p in dist.items()}

    # the ideal ranking of a query: the best k of every judged result any system returned for it
    ideal: dict[str, float] = {}
    for q in queries:
        items = dict.fromkeys(i for s in systems for i in tops[s.name][q])
        pooled = sorted((gain.get((q, i), 0.0) for i in items), reverse=True)
        ideal[q] = dcg(pooled[:k])
    rated = [q for q in queries if ideal[q] > 0]
    weights = sample.weights()
    audits = []
    for s in systems:
        ndcg = {q: dcg([gain.get((q, i), 0.0) for i in tops[s.name][q]]) / ideal[q] for q in rated}
        share = {q: float(np.mean(v)) for q in queries
                 if (v := [at_least[q, i] for i in tops[s.name][q] if (q, i) in at_least])}
        if not ndcg:
            raise RelkitError(f"no audited query has a relevant result from any system (by {judge.name} and the "
                              f"human judgments): nDCG is undefined; audit more queries")
        per_stratum = {}
        for h, v in _by_stratum(ndcg, sample.strata).items():
            sh = _by_stratum(share, sample.strata).get(h)
            per_stratum[h] = {"queries": len(v), "ndcg": float(v.mean()),
                              "share": None if sh is None else float(sh.mean())}
        audits.append(SystemAudit(
            s.name, s.source, bootstrap(ndcg, sample.strata, weights, resamples, seed),
            bootstrap(share, sample.strata, weights, resamples, seed) if share else None, per_stratum,
            results=sum(len(v) for v in tops[s.name].values()), empty=sum(not v for v in tops[s.name].values()),
            per_query={q: round(v, 6) for q, v in ndcg.items()}))

    comparison = None
    first = audits[0].per_query
    if len(audits) == 2:
        a, b = audits[1], audits[0]
        diff = {q: a.per_query[q] - b.per_query[q] for q in rated}
        se = standard_error(diff, sample.strata, weights)
        comparison = Comparison(a.name, b.name, bootstrap(diff, sample.strata, weights, resamples, seed), se,
                                MDE_FACTOR * se, MDE_FACTOR * se / b.ndcg.mean if b.ndcg.mean > 0 else None,
                                {h: float(v.mean()) for h, v in _by_stratum(diff, sample.strata).items()})
        primary = diff
    else:
        primary = first
    now = datetime.now(timezone.utc)
    result = AuditResult(
        name=name or now.strftime("%Y%m%dT%H%M%SZ"), time=now.isoformat(timespec="seconds"), judge=judge.name,
        judge_version=judge.version, k=k, threshold=t, sample=sample, systems=audits, comparison=comparison,
        counts=JudgedCounts(pairs=len(pool), human=len(human_labels), judge=len(to_judge), judged_now=judged_now,
                            unjudged=len(pool) - len(dist)),
        ndcg_queries=len(rated), seconds=time.perf_counter() - start, spread=spread(primary, sample.strata),
        human=human)
    if save:
        ws.save_result(RESULT_KIND, result.name, result.to_dict())
    return result


def pilot_spread(ws: Workspace, name: str) -> dict[str, float]:
    """The per-stratum spread measured by the stored audit `name` (for Neyman allocation): of the
    paired difference when it compared two systems, else of its system's nDCG."""
    for audit in ws.results(RESULT_KIND):
        if audit["name"] == name:
            if not audit.get("spread"):
                raise RelkitError(f"audit '{name}' has no per-stratum spread to allocate by")
            return audit["spread"]
    have = [a["name"] for a in ws.results(RESULT_KIND)]
    raise RelkitError(f"no stored audit '{name}' to use as a pilot; audits here: {', '.join(have) or 'none'}")


HISTORY_METRICS = ("ndcg", "share", "difference")


def history(ws: Workspace, metric: str = "ndcg", system: str | None = None) -> list[dict]:
    """Every stored audit, oldest first: its time, name, judge, queries and, per system, `metric`
    (`ndcg`, `share`: the estimate with its interval; `difference`: the paired difference of an
    audit of two systems)."""
    if metric not in HISTORY_METRICS:
        raise RelkitError(f"--metric must be one of {', '.join(HISTORY_METRICS)}, got '{metric}'")
    rows = []
    for audit in sorted(ws.results(RESULT_KIND), key=lambda a: (a.get("time", ""), a["name"])):
        if metric == "difference":
            c = audit.get("comparison")
            values = {f"{c['a']} - {c['b']}": {**c["difference"], "mde": c["mde"]}} if c else {}
        else:
            values = {s["name"]: s[metric] for s in audit.get("systems", []) if s.get(metric)}
        if system is not None:
            values = {n: v for n, v in values.items() if system in n.split(" - ")}
        if values:
            rows.append({"time": audit.get("time"), "name": audit["name"], "judge": audit.get("judge"),
                         "k": audit.get("k"), "threshold": audit.get("threshold"),
                         "queries": audit.get("sample", {}).get("queries"), "values": values})
    return rows


def parse_named(spec: str, what: str) -> tuple[str, str]:
    """`NAME=VALUE` -> (NAME, VALUE); a bare VALUE is named after itself (a file by its stem)."""
    from pathlib import Path

    name, sep, value = spec.partition("=")
    if sep and name and "/" not in name and ":" not in name:
        return name, value
    if what == "engine":
        raise RelkitError(f"--engine is NAME=URL (e.g. prod='http://host/search?q={{query}}'), got '{spec}'")
    return Path(spec).name.split(".")[0], spec


def audit(ws: Workspace, judge: str, runs: list[str] = (), engines: list = (), sample: int | None = None,
          strata: str = "frequency", allocation: str = "proportional", pilot: str | None = None,
          split: str | None = None, k: int = 10, threshold: int | None = None, seed: int = 0, name: str | None = None,
          concurrency: int = 4, human: bool = True) -> AuditResult:
    """Audit run files (`NAME=FILE` or `FILE`) and live engines (`relkit.audit.Engine`) on the same
    sample of queries: the queries every run file has, else the workspace's (of `split` when given).

        audit(ws, "teacher:demo", runs=["bm25=bm25.trec"], sample=200).systems[0].ndcg
    """
    from relkit.audit.judges import make_judge
    from relkit.audit.lists import ask_engine, read_run
    from relkit.audit.sampling import draw, query_strata

    if not runs and not engines:
        raise RelkitError("nothing to audit: give a run file (--run) or an engine (--engine)")
    the_judge = make_judge(judge, ws)       # first: a judge that does not exist ends the audit before any work
    texts = dict(ws.fetchall("SELECT query_id, query FROM queries"))
    if split is not None:
        from relkit.workspace import SPLITS

        if split not in SPLITS:
            raise RelkitError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
        in_split = {q for (q,) in ws.fetchall("SELECT query_id FROM splits WHERE split = ?", [split])}
    by_text = ws.query_ids_by_text()
    lists = [read_run(path, n, set(texts), by_text) for n, path in (parse_named(r, "run") for r in runs)]
    population = set(texts)
    for r in lists:
        population &= set(r.lists)
    if split is not None:
        population &= in_split
    if not population:
        raise RelkitError("no query to audit: " + ("the run files have no query in common"
                                                   + (f" in the {split} split" if split else "") if lists else
                                                   "the workspace has no queries" + (f" in the {split} split"
                                                                                     if split else "")))
    spread_ = pilot_spread(ws, pilot) if pilot else None
    chosen = draw(query_strata(ws, sorted(population), strata), sample, allocation, spread_, seed, strata)
    ws.release()     # engines and the judge take a while: other relkit commands may use the workspace meanwhile
    for engine in engines:
        with progress(total=len(chosen.query_ids), desc=f"asking {engine.name}", unit="query") as bar:
            lists.append(ask_engine(engine, {q: texts[q] for q in chosen.query_ids}, k, concurrency, bar.update))
    return run_audit(ws, lists, the_judge, chosen, k=k, threshold=threshold, name=name, seed=seed, human=human)

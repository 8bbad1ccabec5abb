"""What an audit measures: each system's nDCG@K and share of results at level >= t per query, and
over the population of queries their stratified means with intervals; for two systems the paired
difference and the minimum detectable effect."""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from relkit.audit.lists import ResultLists
from relkit.audit.sampling import Sample
from relkit.errors import RelkitError
from relkit.intervals import RESAMPLES, Interval, bootstrap
from relkit.metrics import dcg

ALPHA, POWER = 0.05, 0.8
# the MDE of a two-sided test at level ALPHA with power POWER is this many standard errors
MDE_FACTOR = NormalDist().inv_cdf(1 - ALPHA / 2) + NormalDist().inv_cdf(POWER)

Pair = tuple[str, str]                  # (query_id, item_id)
TopK = dict[str, list[str]]             # query_id -> a system's top K item ids, best first


def by_stratum(values: dict[str, float], strata: dict[str, str]) -> dict[str, np.ndarray]:
    """The per-query `values` grouped by the queries' strata, queries in sorted order."""
    out: dict[str, list[float]] = {}
    for query in sorted(values):
        out.setdefault(strata[query], []).append(values[query])
    return {stratum: np.asarray(v, dtype=np.float64) for stratum, v in out.items()}


def stratified_interval(values: dict[str, float], strata: dict[str, str], weights: dict[str, float],
                        resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """The stratified mean of per-query `values` (each stratum's mean weighted by its share of the
    population) and its 95% percentile bootstrap interval: each resample redraws every stratum's
    queries with replacement, as many as it has.

    >>> str(stratified_interval({"a": 1.0, "b": 0.0}, {"a": "x", "b": "y"}, {"x": 0.5, "y": 0.5}))
    '0.5000 [0.5000, 0.5000]'
    """
    if not values:
        raise RelkitError("no audited query has a value: nothing to estimate")
    groups = by_stratum(values, strata)
    return bootstrap(list(groups.values()), [weights[stratum] for stratum in groups], resamples, seed=seed,
                     method=f"stratified bootstrap, {resamples} resamples of queries within strata")


def standard_error(values: dict[str, float], strata: dict[str, str], weights: dict[str, float]) -> float:
    """The standard error of the stratified mean, sqrt(sum_h W_h^2 s_h^2 / n_h), with s_h the
    stratum's sample standard deviation (the pooled one for a stratum of a single query). Queries
    are taken as a sample of the queries the engine will see, so no finite-population correction."""
    groups = by_stratum(values, strata)
    pooled = float(np.std(list(values.values()), ddof=1)) if len(values) > 1 else 0.0
    total = sum(weights[h] for h in groups)
    var = sum((weights[h] / total) ** 2 * (float(np.std(v, ddof=1)) if len(v) > 1 else pooled) ** 2 / len(v)
              for h, v in groups.items())
    return math.sqrt(var)


def spread(values: dict[str, float], strata: dict[str, str]) -> dict[str, float]:
    """Each stratum's standard deviation of the per-query values: what Neyman allocation needs."""
    return {h: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for h, v in by_stratum(values, strata).items()}


def ideal_dcg(queries: list[str], tops: dict[str, TopK], gain: dict[Pair, float], k: int) -> dict[str, float]:
    """Each query's ideal DCG@k: of the best k of every judged result any system returned for it
    (unjudged results count as gain 0)."""
    ideal = {}
    for query in queries:
        pooled = dict.fromkeys(item for top in tops.values() for item in top[query])
        ideal[query] = dcg(sorted((gain.get((query, item), 0.0) for item in pooled), reverse=True)[:k])
    return ideal


def ndcg_by_query(top: TopK, gain: dict[Pair, float], ideal: dict[str, float]) -> dict[str, float]:
    """A system's nDCG@K per query, for the queries with a relevant result in the pool (ideal > 0)."""
    return {query: dcg([gain.get((query, item), 0.0) for item in top[query]]) / ideal[query]
            for query in top if ideal[query] > 0}


def share_by_query(top: TopK, at_least: dict[Pair, float]) -> dict[str, float]:
    """A system's expected share of judged results at level >= t per query (P(level >= t) averaged
    over its judged results), for the queries where it returned a judged result."""
    out = {}
    for query, items in top.items():
        judged = [at_least[query, item] for item in items if (query, item) in at_least]
        if judged:
            out[query] = float(np.mean(judged))
    return out


@dataclass(frozen=True)
class SystemAudit:
    """One system's measures in an audit."""
    name: str
    source: str
    ndcg: Interval
    share: Interval | None
    strata: dict[str, dict]            # stratum -> {queries, ndcg, share}
    results: int                       # (query, item) results audited
    empty: int                         # queries for which the system returned nothing
    per_query: dict[str, float]        # query_id -> nDCG@K


def measure_system(system: ResultLists, top: TopK, ndcg: dict[str, float], share: dict[str, float], sample: Sample,
                   resamples: int = RESAMPLES, seed: int = 0) -> SystemAudit:
    """A system's stratified estimates from its per-query nDCG and share."""
    strata, weights = sample.strata, sample.weights()
    shares = by_stratum(share, strata)
    per_stratum = {h: {"queries": len(v), "ndcg": float(v.mean()),
                       "share": None if shares.get(h) is None else float(shares[h].mean())}
                   for h, v in by_stratum(ndcg, strata).items()}
    return SystemAudit(
        system.name, system.source, stratified_interval(ndcg, strata, weights, resamples, seed),
        stratified_interval(share, strata, weights, resamples, seed) if share else None, per_stratum,
        results=sum(len(items) for items in top.values()), empty=sum(not items for items in top.values()),
        per_query={query: round(value, 6) for query, value in ndcg.items()})


@dataclass(frozen=True)
class PairedDifference:
    """`a` - `b` in nDCG@K, paired per query, with the minimum detectable effect of the sample."""
    a: str
    b: str
    difference: Interval
    standard_error: float
    mde: float                         # MDE_FACTOR x standard_error
    mde_relative: float | None         # mde / b's mean nDCG
    strata: dict[str, float]           # stratum -> mean difference


def paired_difference(a: SystemAudit, b: SystemAudit, sample: Sample, resamples: int = RESAMPLES, seed: int = 0
                      ) -> tuple[PairedDifference, dict[str, float]]:
    """`a` - `b` over the queries both have an nDCG for; also returns the per-query differences."""
    strata, weights = sample.strata, sample.weights()
    per_query = {query: a.per_query[query] - b.per_query[query] for query in b.per_query}
    se = standard_error(per_query, strata, weights)
    comparison = PairedDifference(
        a.name, b.name, stratified_interval(per_query, strata, weights, resamples, seed), se, MDE_FACTOR * se,
        MDE_FACTOR * se / b.ndcg.estimate if b.ndcg.estimate > 0 else None,
        {h: float(v.mean()) for h, v in by_stratum(per_query, strata).items()})
    return comparison, per_query

"""Judging an audit's pool: the distinct (query, item) results of every system's top K, each put on
the workspace's scale by people where the workspace has their judgment, else by the judge."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from relkit.audit.judges import PairJudge, cached_judgments, item_exists
from relkit.audit.lists import ResultLists
from relkit.workspace import Workspace

logger = logging.getLogger(__name__)

Pair = tuple[str, str]                  # (query_id, item_id)


def top_k(systems: list[ResultLists], query_ids: list[str], k: int) -> dict[str, dict[str, list[str]]]:
    """system name -> query_id -> the system's top `k` item ids (none where it returned nothing)."""
    return {s.name: {query: s.lists.get(query, [])[:k] for query in query_ids} for s in systems}


def pool_of(tops: dict[str, dict[str, list[str]]]) -> list[Pair]:
    """The distinct (query, item) results of every system, in order of first appearance."""
    return list(dict.fromkeys((query, item) for top in tops.values() for query, items in top.items()
                              for item in items))


@dataclass(frozen=True)
class JudgedCounts:
    pairs: int            # distinct (query, item) in the judged pool
    human: int            # of them, judged by people in the workspace
    judge: int            # judged by the judge
    judged_now: int       # of those, not in the cache: judged by this run
    unjudged: int         # items not in the catalog or the judge gave no answer: gain 0, not in the share


@dataclass(frozen=True)
class JudgedPool:
    """Each judged pair's distribution over the K levels (one-hot for people's judgments), and who
    judged how many."""
    proba: dict[Pair, np.ndarray]
    counts: JudgedCounts

    def expected_gain(self, gains) -> dict[Pair, float]:
        gains = np.asarray(gains, dtype=np.float64)
        return {pair: float(p @ gains) for pair, p in self.proba.items()}

    def at_least(self, threshold: int) -> dict[Pair, float]:
        """P(level >= threshold) of each judged pair."""
        return {pair: float(p[threshold - 1:].sum()) for pair, p in self.proba.items()}


def people_labels(ws: Workspace, pool: list[Pair]) -> dict[Pair, int]:
    """The workspace's judgments (by people) of the pairs in `pool` that have one."""
    if not pool:
        return {}
    with ws.registered("_audit_pool", {"query_id": [q for q, _ in pool], "item_id": [i for _, i in pool]}):
        return {(q, i): label for q, i, label in ws.fetchall(
            "SELECT query_id, item_id, label FROM judgments JOIN _audit_pool USING (query_id, item_id)")}


def judge_pool(ws: Workspace, judge: PairJudge, pool: list[Pair], human: bool = True) -> JudgedPool:
    """People's judgments where the workspace has them (unless `human` is False), the judge's
    elsewhere (from its cache where it has judged the pair before). A pair whose item is not in the
    catalog, or that the judge gave no answer for, stays unjudged."""
    levels = ws.scale.k
    by_people = people_labels(ws, pool) if human else {}
    known = item_exists(ws, [i for _, i in pool])
    to_judge = [pair for pair in pool if pair not in by_people and pair[1] in known]
    if to_judge:
        logger.info(f"judging {len(to_judge):,} results with {judge.name} (cached ones are not judged again)")
    proba, judged_now = cached_judgments(ws, judge, to_judge)
    judged = {pair: np.eye(levels)[label - 1] for pair, label in by_people.items()}
    judged.update((pair, p) for pair, p in zip(to_judge, proba) if np.isfinite(p).all())
    counts = JudgedCounts(pairs=len(pool), human=len(by_people), judge=len(to_judge), judged_now=judged_now,
                          unjudged=len(pool) - len(judged))
    return JudgedPool(judged, counts)

"""Who judges an audit's (query, item) pairs: `teacher:NAME`, `student:NAME` or `judge:NAME`, behind
one interface (a distribution over the workspace's K levels per pair), with a cache in the workspace
so the same pair is never scored twice by the same model."""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Protocol

import numpy as np

from relkit.errors import RelkitError
from relkit.evaluate import System
from relkit.labels import JudgedPairs
from relkit.systems import make_system
from relkit.workspace import Workspace

CACHE_TABLE = "audit_labels"
CACHE_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {CACHE_TABLE} (    -- a judge's distribution over the levels, per pair
    judge VARCHAR NOT NULL,                   -- teacher:NAME, student:NAME, judge:NAME
    version VARCHAR NOT NULL,                 -- of the model: a retrained one judges again
    query_id VARCHAR NOT NULL,
    item_id VARCHAR NOT NULL,
    p DOUBLE[] NOT NULL,
    PRIMARY KEY (judge, version, query_id, item_id)
)"""


class PairJudge(Protocol):
    """Anything that puts (query_id, item_id) pairs of a workspace on its K-level scale: an (n, K)
    array whose rows sum to 1, or are NaN where the judge gave no answer."""

    name: str
    version: str

    def judge(self, ws: Workspace, pairs: list[tuple[str, str]]) -> np.ndarray: ...


def _fingerprint(path) -> str:
    return hashlib.sha256((path / "relkit.json").read_bytes()).hexdigest()[:16]


def judged_pairs(ws: Workspace, pairs: list[tuple[str, str]]) -> JudgedPairs:
    """The pairs as `JudgedPairs` (the input of relkit's systems), in the given order."""
    queries = dict(ws.fetchall("SELECT query_id, query FROM queries"))
    records = ws.item_records([i for _, i in pairs])
    missing = next(((q, i) for q, i in pairs if q not in queries or i not in records), None)
    if missing:
        raise RelkitError(f"cannot judge query {missing[0]!r} with item {missing[1]!r}: not in the workspace")
    return JudgedPairs(split="audit", query_ids=[q for q, _ in pairs], queries=[queries[q] for q, _ in pairs],
                       items=[records[i] for _, i in pairs], labels=np.zeros(len(pairs), dtype=np.int64))


class SystemJudge:
    """A teacher or student of the workspace, made by the systems registry, as a judge: its
    predicted distribution."""

    def __init__(self, system: System):
        self.system = system
        self.name = system.name
        self.version = _fingerprint(system.path)

    def judge(self, ws: Workspace, pairs: list[tuple[str, str]]) -> np.ndarray:
        if not pairs:
            return np.zeros((0, ws.scale.k))
        return self.system.predict(judged_pairs(ws, pairs)).proba


class LLMJudge:
    """An LLM judge made by `relkit judge --name NAME`. It keeps its own labels (shards under
    labels/judge-NAME, resumable) and answers NaN rows for answers that named no level: those
    pairs count as unjudged and are asked again by the next audit."""

    def __init__(self, system: System):
        self.inner = system.judge
        self.name = system.name
        # the same model and prompt judge the same: a changed template or model judges again
        self.version = f"{self.inner.spec.model_id}@{self.inner.prompt_hash}"

    def judge(self, ws: Workspace, pairs: list[tuple[str, str]]) -> np.ndarray:
        if not pairs:
            return np.zeros((0, ws.scale.k))
        return np.asarray(self.inner.judge(ws, pairs), dtype=np.float64)


# the kinds of system that give a distribution over the levels, each made by `make_system`
JUDGES: dict[str, Callable[[System], PairJudge]] = {"teacher": SystemJudge, "student": SystemJudge, "judge": LLMJudge}


def make_judge(spec: str, ws: Workspace) -> PairJudge:
    """A judge from `teacher:NAME`, `student:NAME` or `judge:NAME`.

        make_judge("teacher:demo", ws).name
        # -> 'teacher:demo'
    """
    kind, _, ref = spec.partition(":")
    if kind not in JUDGES or not ref:
        raise RelkitError(f"--judge must be KIND:NAME with KIND one of {', '.join(JUDGES)} (e.g. teacher:demo), "
                          f"got '{spec}'")
    return JUDGES[kind](make_system(spec, ws))


def cached_judgments(ws: Workspace, judge: PairJudge, pairs: list[tuple[str, str]]) -> tuple[np.ndarray, int]:
    """The judge's distributions of `pairs` ((n, K), NaN rows where it gave no answer), from the
    workspace cache where it has them; the rest are judged and added to it. Returns the array and
    how many pairs were judged now."""
    k = ws.scale.k
    out = np.full((len(pairs), k), np.nan)
    if not pairs:
        return out, 0
    if not ws.read_only:
        ws.run(CACHE_SCHEMA)
    cached: dict[tuple[str, str], list[float]] = {}
    if ws.has_table(CACHE_TABLE):
        wanted = list(dict.fromkeys(pairs))
        with ws.registered("_audit_pairs", {"query_id": [q for q, _ in wanted], "item_id": [i for _, i in wanted]}):
            rows = ws.fetchall(f"""SELECT c.query_id, c.item_id, c.p FROM {CACHE_TABLE} c
                                   JOIN _audit_pairs USING (query_id, item_id)
                                   WHERE c.judge = ? AND c.version = ?""", [judge.name, judge.version])
        cached = {(q, i): p for q, i, p in rows if len(p) == k}
    todo = list(dict.fromkeys(p for p in pairs if p not in cached))
    fresh: dict[tuple[str, str], np.ndarray] = {}
    if todo:
        proba = np.asarray(judge.judge(ws, todo), dtype=np.float64)
        if proba.shape != (len(todo), k):
            raise RelkitError(f"{judge.name} returned an array of shape {proba.shape} for {len(todo)} pairs; "
                              f"expected ({len(todo)}, {k})")
        fresh = dict(zip(todo, proba))
        keep = [(p, v) for p, v in fresh.items() if np.isfinite(v).all()]   # an unanswered pair is asked again
        if keep and not ws.read_only:
            with ws.transaction() as con:
                con.executemany(f"INSERT OR REPLACE INTO {CACHE_TABLE} VALUES (?, ?, ?, ?, ?)",
                                [[judge.name, judge.version, q, i, [float(x) for x in v]] for (q, i), v in keep])
    for n, pair in enumerate(pairs):
        out[n] = cached[pair] if pair in cached else fresh[pair]
    return out, len(todo)


def item_exists(ws: Workspace, item_ids: list[str]) -> set[str]:
    """The ids among `item_ids` that are items of the workspace."""
    if not item_ids:
        return set()
    with ws.registered("_audit_items", {"item_id": list(dict.fromkeys(item_ids))}):
        return {r[0] for r in ws.fetchall("SELECT item_id FROM items JOIN _audit_items USING (item_id)")}


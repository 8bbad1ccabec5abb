"""Which pairs people judge next: strategies that order the unjudged candidate pairs, mixed by weight.

- `uncertain`: the pairs a model is least sure of, by the entropy of its K probabilities (the
  margin between its two most probable levels breaks ties). The model is `teacher:NAME` (its stored
  labels are read, the pairs it has not labeled are scored) or `student:NAME` (scored); with no
  model, the one teacher whose labels are in the workspace.
- `disagree`: the pairs whose stored labels (every teacher's and judge's shards under labels/, and
  the model's when one is given) lie furthest apart in expected level.
- `diverse`: spread over queries (the least judged first) and over each query's candidate ranks
  (BM25 rank, taken top, middle, then the quarters and so on).
- `cold`: for a workspace with no model yet, every query's top BM25 and bi-encoder items, with
  random catalog items mixed in as likely negatives.

The first three order the `pairs` table (`relkit pairs`); `cold` finds its own candidates. A pair
judged by anyone (in `judgments` or `annotations`) is never proposed.

    rank_pairs(ws, {"uncertain": 3, "diverse": 1}, model="student:demo")[:2]
    # -> [('q17', 'item-204'), ('q3', 'item-88')]
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from relkit.errors import RelkitError
from relkit.workspace import Workspace

logger = logging.getLogger(__name__)

STRATEGIES = ("uncertain", "disagree", "diverse", "cold")
COLD_TOP = 10             # items per query from each of BM25 and the bi-encoder
COLD_RANDOM_EVERY = 4     # one random catalog item after every this many retrieved ones

Pair = tuple[str, str]


def rank_pairs(ws: Workspace, weights: dict[str, float], model: str | None = None, seed: int = 0,
               limit: int | None = None, annotated: bool = False) -> list[Pair]:
    """Unjudged (query_id, item_id) pairs in the order to show them: each strategy of `weights`
    orders its candidates, and the orders are interleaved in proportion to the weights (smooth
    weighted round robin, so {"uncertain": 3, "diverse": 1} takes three uncertain pairs for every
    diverse one); a pair two strategies want comes once, where it comes first. A strategy that runs
    out leaves its share to the others. The same workspace, weights and seed give the same order.
    `annotated`: keep the pairs only annotators judged (the app, which sends some of them to a
    second annotator, decides itself who still needs them).
    """
    weights = _check_weights(weights)
    started = time.perf_counter()
    logger.info("building the annotation queue (%s)", ", ".join(f"{name}={w:g}" for name, w in weights.items()))
    judged = judged_pairs(ws, annotated=not annotated)
    orders = {}
    for n, name in enumerate(STRATEGIES):
        if name in weights:   # each strategy's randomness depends on the seed only, not on the mix
            begun = time.perf_counter()
            orders[name] = STRATEGY_FUNCTIONS[name](ws, judged, model, np.random.default_rng([seed, n]))
            logger.info("queue strategy %s: %d pairs in %.1f s", name, len(orders[name]), time.perf_counter() - begun)
    out = interleave(orders, weights, limit)
    logger.info("annotation queue: %d pairs, built in %.1f s", len(out), time.perf_counter() - started)
    return out


def _check_weights(weights: dict[str, float]) -> dict[str, float]:
    unknown = [s for s in weights if s not in STRATEGIES]
    if unknown:
        raise RelkitError(f"unknown queue strategy {', '.join(map(repr, unknown))}; expected some of "
                          f"{', '.join(STRATEGIES)}")
    for name, w in weights.items():
        if not isinstance(w, (int, float)) or not np.isfinite(w) or w < 0:
            raise RelkitError(f"queue strategy {name}: the weight must be a number >= 0, not {w!r}")
    kept = {s: float(w) for s, w in weights.items() if w > 0}
    if not kept:
        raise RelkitError("give at least one queue strategy a weight above 0 (e.g. uncertain=1)")
    return kept


def parse_weights(spec: str) -> dict[str, float]:
    """"uncertain=3,diverse=1" (or just "cold") -> {"uncertain": 3.0, "diverse": 1.0}.

    >>> parse_weights("uncertain=3, diverse")
    {'uncertain': 3.0, 'diverse': 1.0}
    """
    out: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        name, eq, value = part.partition("=")
        try:
            out[name.strip()] = float(value) if eq else 1.0
        except ValueError:
            raise RelkitError(f"queue weights: '{part}' is not STRATEGY=NUMBER") from None
    return _check_weights(out)


def interleave(orders: dict[str, list[Pair]], weights: dict[str, float], limit: int | None = None) -> list[Pair]:
    """Merge ordered lists in proportion to their weights, each pair once.

    >>> interleave({"a": [1, 2, 3, 4], "b": [9, 8, 2]}, {"a": 2, "b": 1})
    [1, 9, 2, 3, 8, 4]
    """
    position = {name: 0 for name in orders}
    credit = {name: 0.0 for name in orders}
    active = [name for name in orders if orders[name]]
    seen: set = set()
    out: list = []
    while active and (limit is None or len(out) < limit):
        total = sum(weights[n] for n in active)
        for n in active:
            credit[n] += weights[n]
        pick = max(active, key=lambda n: credit[n])  # ties go to the first in STRATEGIES order
        credit[pick] -= total
        order = orders[pick]
        while position[pick] < len(order) and order[position[pick]] in seen:
            position[pick] += 1
        if position[pick] < len(order):
            seen.add(order[position[pick]])
            out.append(order[position[pick]])
            position[pick] += 1
        if position[pick] >= len(order):
            active.remove(pick)
            credit.pop(pick)
    return out


def judged_pairs(ws: Workspace, annotated: bool = True) -> set[Pair]:
    """Every pair a person has judged: resolved (`judgments`) or not yet (`annotations`); without
    `annotated`, only the judgments that did not come from the annotation app."""
    if not annotated:
        return set(ws.fetchall("SELECT query_id, item_id FROM judgments "
                               "WHERE coalesce(extra->>'source', '') <> 'annotation'"))
    judged = set(ws.fetchall("SELECT query_id, item_id FROM judgments"))
    if ws.has_table("annotations"):
        judged |= set(ws.fetchall("SELECT DISTINCT query_id, item_id FROM annotations"))
    return judged


def candidate_pairs(ws: Workspace, judged: set[Pair], strategy: str) -> list[Pair]:
    """The unjudged pairs of the `pairs` table, by query then item."""
    rows = [p for p in ws.fetchall("SELECT query_id, item_id FROM pairs ORDER BY query_id, item_id")
            if p not in judged]
    if not rows:
        why = "every candidate pair is judged" if ws.count("pairs") else "the workspace has no candidate pairs"
        raise RelkitError(f"queue strategy {strategy}: {why}; make more with `relkit pairs` (or use the cold "
                          f"strategy, which finds its own)")
    return rows


# --- uncertain --------------------------------------------------------------------------------

def entropy(proba: np.ndarray) -> np.ndarray:
    """Shannon entropy of each row, in nats.

    >>> entropy(np.array([[1.0, 0.0], [0.5, 0.5]])).round(4).tolist()
    [0.0, 0.6931]
    """
    proba = np.asarray(proba, dtype=np.float64)
    return np.maximum(-(proba * np.log(np.clip(proba, 1e-12, 1.0))).sum(axis=1), 0.0)


def margin(proba: np.ndarray) -> np.ndarray:
    """The most probable level's probability minus the second's (small: unsure).

    >>> margin(np.array([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2]])).round(2).tolist()
    [0.5, 0.0]
    """
    top = np.sort(np.asarray(proba, dtype=np.float64), axis=1)
    return top[:, -1] - top[:, -2]


def _uncertain(ws: Workspace, judged: set[Pair], model: str | None, rng: np.random.Generator) -> list[Pair]:
    pairs = candidate_pairs(ws, judged, "uncertain")
    if model is None:
        teachers = stored_teachers(ws)
        if len(teachers) != 1:
            have = f"there are labels of {', '.join(teachers)}" if teachers else "there are no teacher labels"
            raise RelkitError(f"queue strategy uncertain needs a model (teacher:NAME or student:NAME) or the labels "
                              f"of one teacher (`relkit label`); {have}")
        model = f"teacher:{teachers[0]}"
    pairs, proba = model_probabilities(ws, model, pairs)
    if not pairs:
        raise RelkitError(f"queue strategy uncertain: {model} has no labels of the unjudged candidate pairs and "
                          f"its folder is gone, so none can be scored")
    # most unsure first: highest entropy, then smallest margin; a random key breaks exact ties
    order = np.lexsort((rng.random(len(pairs)), margin(proba), -entropy(proba)))
    return [pairs[i] for i in order]


def stored_labels(ws: Workspace) -> str | None:
    """SQL that reads every label shard under labels/ (the rows of the `teacher_labels` view), or None
    when there are none. Read from the files, so a read-only workspace works too."""
    from relkit.labels import LABELS_DIR

    if not any((ws.path / LABELS_DIR).glob("*/shard-*.parquet")):
        return None
    pattern = str(ws.path / LABELS_DIR / "*" / "shard-*.parquet").replace("'", "''")
    return f"read_parquet('{pattern}', union_by_name = true)"


def stored_teachers(ws: Workspace) -> list[str]:
    """Names of the teachers (and judges) with label shards in the workspace."""
    source = stored_labels(ws)
    return [r[0] for r in ws.fetchall(f"SELECT DISTINCT teacher FROM {source} ORDER BY 1")] if source else []


def stored_probabilities(ws: Workspace, teacher: str, pairs: list[Pair]) -> dict[Pair, np.ndarray]:
    """A teacher's stored distributions of those of `pairs` it has labeled."""
    if teacher not in stored_teachers(ws):
        return {}
    probs = ", ".join(f"l.p{i}" for i in range(1, ws.scale.k + 1))
    with ws.registered("_queue_pairs", {"query_id": [q for q, _ in pairs], "item_id": [i for _, i in pairs]}):
        rows = ws.fetchall(f"SELECT l.query_id, l.item_id, {probs} FROM {stored_labels(ws)} l JOIN _queue_pairs "
                           f"USING (query_id, item_id) WHERE l.teacher = ?", [teacher])
    out = {}
    for r in rows:
        p = np.asarray(r[2:], dtype=np.float64)
        out[(r[0], r[1])] = p / p.sum()
    return out


def model_probabilities(ws: Workspace, model: str, pairs: list[Pair]) -> tuple[list[Pair], np.ndarray]:
    """(pairs, (n, K) distributions) from `teacher:NAME` (its stored labels where it has them, the rest
    scored; a teacher whose folder is gone gives only the pairs it has labels of) or `student:NAME`
    (scored)."""
    kind, _, name = model.partition(":")
    if kind not in ("teacher", "student") or not name:
        raise RelkitError(f"the queue's model is teacher:NAME or student:NAME, not '{model}'")
    known: dict[Pair, np.ndarray] = {}
    can_score = True
    if kind == "teacher":
        try:
            stored_name = Workspace.artifact_name("teacher", ws.artifact("teacher", name))
        except RelkitError:
            if name not in stored_teachers(ws):
                raise
            stored_name, can_score = name, False
        known = stored_probabilities(ws, stored_name, pairs)
    missing = [p for p in pairs if p not in known]
    if missing and can_score:
        known.update(zip(missing, score_pairs(ws, model, missing)))
    kept = [p for p in pairs if p in known]
    return kept, (np.stack([known[p] for p in kept]) if kept else np.zeros((0, ws.scale.k)))


def score_pairs(ws: Workspace, model: str, pairs: list[Pair]) -> np.ndarray:
    """Score pairs with a teacher or student system (their labels are unknown: the system only reads
    the query and the item)."""
    from relkit.evaluate import JudgedPairs
    from relkit.systems import make_system

    system = make_system(model, ws)
    queries = dict(ws.fetchall("SELECT query_id, query FROM queries"))
    records = ws.item_records([i for _, i in pairs])
    unlabeled = JudgedPairs(split="unjudged", query_ids=[q for q, _ in pairs], queries=[queries[q] for q, _ in pairs],
                            items=[records[i] for _, i in pairs], labels=np.zeros(len(pairs), dtype=np.int64))
    proba = system.predict(unlabeled).proba
    if proba is None:
        raise RelkitError(f"{model} gives no level probabilities to be unsure about")
    return proba


# --- disagree ---------------------------------------------------------------------------------

def _disagree(ws: Workspace, judged: set[Pair], model: str | None, rng: np.random.Generator) -> list[Pair]:
    pairs = candidate_pairs(ws, judged, "disagree")
    levels: dict[Pair, list[float]] = {p: [] for p in pairs}
    sources = stored_teachers(ws)
    if sources:
        with ws.registered("_queue_pairs", {"query_id": [q for q, _ in pairs], "item_id": [i for _, i in pairs]}):
            for q, i, level in ws.fetchall(f"SELECT l.query_id, l.item_id, l.expected_level FROM {stored_labels(ws)} l "
                                           f"JOIN _queue_pairs USING (query_id, item_id)"):
                levels[(q, i)].append(float(level))
    if model is not None and not (model.startswith("teacher:") and model.partition(":")[2] in sources):
        sources = [*sources, model]
        k = ws.scale.k
        for p, proba in zip(*model_probabilities(ws, model, pairs)):
            levels[p].append(float(proba @ np.arange(1, k + 1)))
    if len(sources) < 2:
        raise RelkitError(f"queue strategy disagree needs labels from at least two sources (teachers or judges "
                          f"with `relkit label`, or a model); found {', '.join(sources) or 'none'}")
    keyed = [(p, v) for p, v in levels.items() if len(v) >= 2]
    if not keyed:
        raise RelkitError("queue strategy disagree: no unjudged pair has labels from two sources")
    spread = np.array([max(v) - min(v) for _, v in keyed])
    sd = np.array([np.std(v) for _, v in keyed])
    order = np.lexsort((rng.random(len(keyed)), -sd, -spread))
    return [keyed[i][0] for i in order]


# --- diverse ----------------------------------------------------------------------------------

def spread_order(n: int) -> list[int]:
    """0..n-1 in an order that spreads over the range: first, middle, then the quarters, and so on.

    >>> spread_order(8)
    [0, 4, 2, 6, 1, 5, 3, 7]
    """
    bits = max(1, (n - 1).bit_length())
    # i -> its place on a grid of 2^bits (one i per cell), then the cell number's bits reversed
    keys = [int(format(i * 2 ** bits // n, f"0{bits}b")[::-1], 2) for i in range(n)]
    return sorted(range(n), key=lambda i: keys[i])


def _round_robin(per_query: dict[str, list[Pair]], query_order: list[str]) -> list[Pair]:
    out, depth = [], 0
    while True:
        row = [per_query[q][depth] for q in query_order if depth < len(per_query[q])]
        if not row:
            return out
        out.extend(row)
        depth += 1


def _query_order(ws: Workspace, query_ids, rng: np.random.Generator) -> list[str]:
    """Queries with the fewest human judgments first; a seeded shuffle orders the rest."""
    counts = dict(ws.fetchall("SELECT query_id, count(*) FROM judgments GROUP BY 1"))
    if ws.has_table("annotations"):
        for q, n in ws.fetchall("SELECT query_id, count(DISTINCT item_id) FROM annotations GROUP BY 1"):
            counts[q] = counts.get(q, 0) + n
    ids = sorted(set(query_ids))
    shuffle = rng.permutation(len(ids))
    return [ids[i] for i in sorted(range(len(ids)), key=lambda i: (counts.get(ids[i], 0), shuffle[i]))]


def _diverse(ws: Workspace, judged: set[Pair], model: str | None, rng: np.random.Generator) -> list[Pair]:
    from relkit.baselines import catalog_index
    from relkit.logs import progress

    pairs = candidate_pairs(ws, judged, "diverse")
    index = catalog_index(ws)
    queries = dict(ws.fetchall("SELECT query_id, query FROM queries"))
    per_query: dict[str, list[Pair]] = {}
    for q, i in pairs:
        per_query.setdefault(q, []).append((q, i))
    for q, items in progress(list(per_query.items()), desc="queue diverse: ranking candidates", unit="query"):
        scores = index.score(queries[q], [i for _, i in items])
        ranked = [items[j] for j in np.argsort(-np.asarray(scores), kind="stable")]
        per_query[q] = [ranked[j] for j in spread_order(len(ranked))]
    return _round_robin(per_query, _query_order(ws, per_query, rng))


# --- cold -------------------------------------------------------------------------------------

def _cold(ws: Workspace, judged: set[Pair], model: str | None, rng: np.random.Generator) -> list[Pair]:
    from relkit.baselines import catalog
    from relkit.features.bm25 import BM25Index
    from relkit.features.embeddings import cached_vectors, nearest, workspace_encoder

    queries = ws.fetchall("SELECT query_id, query FROM queries ORDER BY query_id")
    item_ids, texts = catalog(ws)
    if not queries or not item_ids:
        raise RelkitError("queue strategy cold needs queries and a catalog of items; import them first")
    k = min(COLD_TOP, len(item_ids))
    q_texts = [t for _, t in queries]
    bm25 = BM25Index(item_ids, texts).top_k(q_texts, k)
    # the queries' vectors go to the workspace's cache with the items' (which `relkit pairs` filled):
    # encoding them is most of the work, and the next start finds them there and loads no encoder
    vectors = cached_vectors(ws, workspace_encoder(ws), texts + q_texts, desc="encoding item and query texts",
                             queries=[False] * len(texts) + [True] * len(q_texts))
    dense = nearest(vectors[len(texts):], vectors[:len(texts)], k)
    per_query: dict[str, list[Pair]] = {}
    for (qid, _), by_bm25, by_dense in zip(queries, bm25, dense):
        retrieved = [item_ids[pos] for pair in zip(by_bm25, by_dense) for pos in pair]
        picks = []
        for n, item in enumerate(dict.fromkeys(retrieved), start=1):
            picks.append(item)
            if n % COLD_RANDOM_EVERY == 0:
                picks.append(item_ids[rng.integers(len(item_ids))])
        picks.append(item_ids[rng.integers(len(item_ids))])
        per_query[qid] = [(qid, i) for i in dict.fromkeys(picks) if (qid, i) not in judged]
    out = _round_robin(per_query, _query_order(ws, per_query, rng))
    if not out:
        raise RelkitError("queue strategy cold: every query's top candidates are judged; make candidate pairs "
                          "(`relkit pairs`) and use uncertain, disagree or diverse")
    return out


STRATEGY_FUNCTIONS: dict[str, Callable[[Workspace, set, str | None, np.random.Generator], list[Pair]]] = {
    "uncertain": _uncertain,
    "disagree": _disagree,
    "diverse": _diverse,
    "cold": _cold,
}

__all__ = ["STRATEGIES", "rank_pairs", "parse_weights", "interleave", "entropy", "margin", "spread_order",
           "judged_pairs"]

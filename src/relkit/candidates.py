"""Unlabeled candidate pairs for the teacher to label, when there are no logs to take them from.

First, with fewer train queries than `min_queries`, queries nobody judged are added to the train
split (relkit/query_sources.py): a student learns what the teacher knows from many queries, not
from many items of a few. Then, for every query of the train split, the top k items of the whole
catalog by BM25 and by the bi-encoder's cosine, merged: a pair found by both is kept once, with
source `bm25+embedding`.
Dev and test queries never get candidates (their pairs must not reach a student's training data),
pairs people already judged are left out (they have a human label), and pairs already in the
table are kept as they are.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from relkit.errors import RelkitError
from relkit.query_sources import QueryResult, add_train_queries
from relkit.workspace import Workspace

SOURCES = ("bm25", "embedding")


@dataclass(frozen=True)
class CandidateResult:
    queries: int
    found: int      # distinct (query, item) candidates found, judged ones excluded
    added: int      # new rows in the pairs table
    by_source: dict
    new_queries: QueryResult | None = None  # train queries added first, if any

    def summary(self) -> str:
        sources = ", ".join(f"{n:,} {s}" for s, n in self.by_source.items())
        added = f"{self.new_queries.summary()}\n" if self.new_queries else ""
        return (f"{added}{self.queries:,} train queries: {self.found:,} unjudged candidates ({sources}), "
                f"{self.added:,} new pairs")


def make_pairs(ws: Workspace, k: int = 30, sources: Sequence[str] = SOURCES, encoder: str = "default",
               min_queries: int = 500, query_source: str = "auto") -> CandidateResult:
    from relkit.baselines import catalog, catalog_index

    unknown = [s for s in sources if s not in SOURCES]
    if unknown or not sources:
        raise RelkitError(f"candidate sources are {', '.join(SOURCES)}; got {', '.join(sources) or 'none'}")
    if k < 1:
        raise RelkitError("k must be at least 1")
    if ws.count("splits") == 0:
        raise RelkitError("no query has a split yet: run `relkit split` first, so that dev and test queries "
                          "get no candidates")
    new_queries = add_train_queries(ws, min_queries, query_source) if min_queries else None
    queries = ws.fetchall("SELECT query_id, query FROM queries JOIN splits USING (query_id) "
                          "WHERE split = 'train' ORDER BY query_id")
    if not queries:
        raise RelkitError("the train split has no queries to find candidates for")
    item_ids, texts = catalog(ws)
    if not item_ids:
        raise RelkitError("the workspace has no items to draw candidates from")
    found: dict[tuple[str, str], set[str]] = {}
    q_ids, q_texts = [q for q, _ in queries], [t for _, t in queries]
    if "bm25" in sources:
        index = catalog_index(ws)
        for qid, best in zip(q_ids, index.top_k(q_texts, k)):
            for pos in best:
                found.setdefault((qid, item_ids[pos]), set()).add("bm25")
    if "embedding" in sources:
        for qid, best in zip(q_ids, _embedding_top_k(ws, encoder, q_texts, texts, k)):
            for pos in best:
                found.setdefault((qid, item_ids[pos]), set()).add("embedding")
    judged = set(ws.fetchall("SELECT query_id, item_id FROM judgments JOIN splits USING (query_id) "
                             "WHERE split = 'train'"))
    rows = {key: "+".join(s for s in SOURCES if s in got) for key, got in found.items() if key not in judged}
    by_source: dict[str, int] = {}
    for source in rows.values():
        by_source[source] = by_source.get(source, 0) + 1
    with ws.transaction():
        before = ws.count("pairs")
        with ws.registered("_candidates", {"query_id": [q for q, _ in rows], "item_id": [i for _, i in rows],
                                           "source": list(rows.values())}):
            ws.run("INSERT OR IGNORE INTO pairs SELECT query_id, item_id, source FROM _candidates")
        added = ws.count("pairs") - before
    return CandidateResult(queries=len(queries), found=len(rows), added=added,
                           by_source=dict(sorted(by_source.items())), new_queries=new_queries)


def _embedding_top_k(ws: Workspace, model: str, queries: list[str], texts: list[str], k: int,
                     chunk: int = 256) -> list[list[int]]:
    from relkit.features.embeddings import Encoder, cached_vectors

    encoder = Encoder(model)
    items = cached_vectors(ws, model, texts, encoder)  # shared with the student's features
    q = encoder.encode(queries, bar=True)
    out = []
    k = min(k, len(texts))
    for start in range(0, len(q), chunk):
        sims = q[start:start + chunk] @ items.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        for row, cand in zip(sims, top):
            out.append(cand[np.argsort(-row[cand], kind="stable")].tolist())
    return out

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


from relkit.errors import RelkitError
from relkit.logs import progress
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


def make_pairs(ws: Workspace, k: int = 30, sources: Sequence[str] = SOURCES, encoder: str = "workspace",
               min_queries: int = 500, query_source: str = "auto", block: int = 2048) -> CandidateResult:
    """Candidates for the train queries, `block` queries at a time: each block is retrieved, merged
    and appended to the pairs table in a transaction of its own, so memory is a constant of the
    block (and of the catalog), whatever the number of queries and pairs; an interrupted run keeps
    the blocks it finished, and a rerun adds only what is missing."""
    from relkit.baselines import catalog, catalog_index

    unknown = [s for s in sources if s not in SOURCES]
    if unknown or not sources:
        raise RelkitError(f"candidate sources are {', '.join(SOURCES)}; got {', '.join(sources) or 'none'}")
    if k < 1 or block < 1:
        raise RelkitError(f"--k and the block of queries must be at least 1 (got k={k}, block={block})")
    if ws.count("splits") == 0:
        raise RelkitError("no query has a split yet: run `relkit split` first, so that dev and test queries "
                          "get no candidates")
    new_queries = add_train_queries(ws, min_queries, query_source) if min_queries else None
    (total,) = ws.fetchone("SELECT count(*) FROM queries JOIN splits USING (query_id) WHERE split = 'train'")
    if not total:
        raise RelkitError("the train split has no queries to find candidates for")
    item_ids, texts = catalog(ws)
    if not item_ids:
        raise RelkitError("the workspace has no items to draw candidates from")
    index = catalog_index(ws) if "bm25" in sources else None
    embedding = _EmbeddingTopK(ws, encoder, texts) if "embedding" in sources else None
    del texts
    found = added = 0
    by_source: dict[str, int] = {}
    bar = progress(total=total, desc="finding candidates", unit="query")
    last = ""
    while True:
        queries = ws.fetchall("SELECT query_id, query FROM queries JOIN splits USING (query_id) "
                              "WHERE split = 'train' AND query_id > ? ORDER BY query_id LIMIT ?", [last, block])
        if not queries:
            break
        last = queries[-1][0]
        rows = _candidates(queries, item_ids, k, index, embedding)
        with ws.transaction(), ws.registered("_candidates", {"query_id": [q for q, _ in rows],
                                                             "item_id": [i for _, i in rows],
                                                             "source": list(rows.values())}):
            # pairs people already judged have a human label: no candidate
            ws.run("CREATE TEMP TABLE _unjudged AS SELECT * FROM _candidates c "
                   "ANTI JOIN judgments j USING (query_id, item_id)")
            for source, n in ws.fetchall("SELECT source, count(*) FROM _unjudged GROUP BY source"):
                by_source[source] = by_source.get(source, 0) + n
                found += n
            before = ws.count("pairs")
            ws.run("INSERT OR IGNORE INTO pairs SELECT query_id, item_id, source FROM _unjudged")
            added += ws.count("pairs") - before
            ws.run("DROP TABLE _unjudged")
        bar.update(len(queries))
    bar.close()
    return CandidateResult(queries=total, found=found, added=added,
                           by_source=dict(sorted(by_source.items())), new_queries=new_queries)


def _candidates(queries: list[tuple[str, str]], item_ids: list[str], k: int, index, embedding) -> dict:
    """(query_id, item_id) -> source (`bm25`, `embedding` or `bm25+embedding`) of one block of queries."""
    found: dict[tuple[str, str], set[str]] = {}
    q_ids, q_texts = [q for q, _ in queries], [t for _, t in queries]
    tops = []
    if index is not None:
        tops.append(("bm25", index.top_k(q_texts, k)))
    if embedding is not None:
        tops.append(("embedding", embedding(q_texts, k)))
    for source, top in tops:
        for qid, best in zip(q_ids, top):
            for pos in best:
                found.setdefault((qid, item_ids[pos]), set()).add(source)
    return {key: "+".join(s for s in SOURCES if s in got) for key, got in found.items()}


class _EmbeddingTopK:
    """The catalog's top k by the bi-encoder's cosine for a block of queries; the item vectors are
    encoded once (and shared with the student's features through the workspace cache)."""

    def __init__(self, ws: Workspace, model: str, texts: list[str]):
        from relkit.features.embeddings import Encoder, cached_vectors, workspace_encoder

        model = workspace_encoder(ws, model)   # `workspace`: the workspace's encoder
        self.encoder = Encoder(model)
        self.items = cached_vectors(ws, model, texts, self.encoder)

    def __call__(self, queries: list[str], k: int, chunk: int = 256) -> list[list[int]]:
        from relkit.features.embeddings import nearest

        return nearest(self.encoder.encode_queries(queries), self.items, min(k, len(self.items)), chunk)

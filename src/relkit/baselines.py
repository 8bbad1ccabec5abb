"""Baseline systems: BM25 and a bi-encoder's cosine. Both give ranking scores only."""
from __future__ import annotations

import numpy as np

from relkit.evaluate import JudgedPairs, Prediction
from relkit.features.bm25 import BM25Index
from relkit.features.embeddings import DEFAULT_ENCODER, Encoder, pair_cosines, workspace_encoder
from relkit.text import item_text
from relkit.workspace import Workspace


def catalog(ws: Workspace) -> tuple[list[str], list[str]]:
    """Every item's id and text (the default item text template), in item id order."""
    records = ws.item_records()
    return list(records), [item_text(r) for r in records.values()]


def catalog_index(ws: Workspace) -> BM25Index:
    """BM25 over every item's text, each in the item's language."""
    records = ws.item_records()
    return BM25Index(list(records), [item_text(r) for r in records.values()], [r["language"] for r in records.values()])


class BM25System:
    """BM25 of the query against the item text, with statistics from the whole catalog."""

    def __init__(self, ws: Workspace, name: str = "bm25"):
        self.name = name
        self.ws = ws

    def predict(self, pairs: JudgedPairs) -> Prediction:
        index = catalog_index(self.ws)
        languages = dict(self.ws.fetchall("SELECT query_id, language FROM queries"))
        scores = np.zeros(len(pairs), dtype=np.float64)
        by_query: dict[str, list[int]] = {}
        for i, q in enumerate(pairs.query_ids):
            by_query.setdefault(q, []).append(i)
        item_ids = pairs.item_ids
        for rows_of_query in by_query.values():
            scores[rows_of_query] = index.score(pairs.queries[rows_of_query[0]], [item_ids[i] for i in rows_of_query],
                                                languages.get(pairs.query_ids[rows_of_query[0]]))
        return Prediction(scores=scores)


class EmbeddingSystem:
    """Cosine similarity of query and item text under a sentence-transformers bi-encoder: `model`, or
    when None the workspace's encoder (`relkit init --encoder`; `default` without a workspace)."""

    def __init__(self, model: str | None = None, name: str = "embedding", batch_size: int = 64,
                 ws: Workspace | None = None):
        self.name = name
        self.model = model
        self.batch_size = batch_size
        self.ws = ws    # when given, item vectors come from (and go to) its text_vectors cache

    def predict(self, pairs: JudgedPairs) -> Prediction:
        from relkit.features.embeddings import workspace_vectors

        model = workspace_encoder(self.ws, self.model) if self.ws is not None else self.model or DEFAULT_ENCODER
        encoder = Encoder(model, batch_size=self.batch_size)
        cache = workspace_vectors(self.ws, model, encoder) if self.ws is not None else None
        scores = pair_cosines(encoder, pairs.queries, pairs.item_texts(), text_vectors=cache, bar=True)
        return Prediction(scores=scores)

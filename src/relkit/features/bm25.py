"""BM25 over the catalog with bm25s: the index is built once, scoring a query is a sparse lookup."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class BM25Index:
    """BM25 with statistics (document frequencies, lengths) from the whole catalog.

    >>> index = BM25Index(["a", "b"], ["red chair", "blue hose"])
    >>> index.score("red chairs", ["a", "b"]).round(3).tolist()
    [0.462, 0.0]
    """

    def __init__(self, item_ids: Sequence[str], texts: Sequence[str], k1: float = 1.5, b: float = 0.75,
                 show_progress: bool = False):
        import bm25s
        import Stemmer

        self.stemmer = Stemmer.Stemmer("english")
        self.position = {item_id: i for i, item_id in enumerate(item_ids)}
        corpus = bm25s.tokenize(list(texts), stopwords="en", stemmer=self.stemmer, show_progress=show_progress)
        self.retriever = bm25s.BM25(k1=k1, b=b)
        self.retriever.index(corpus, show_progress=show_progress)

    def tokens(self, query: str) -> list[str]:
        import bm25s

        tokens = bm25s.tokenize([query], stopwords="en", stemmer=self.stemmer, return_ids=False,
                                show_progress=False)[0]
        vocab = self.retriever.vocab_dict
        return [t for t in tokens if t in vocab]

    def score(self, query: str, item_ids: Sequence[str]) -> np.ndarray:
        """BM25 of `query` against each of `item_ids` (which must be in the index)."""
        tokens = self.tokens(query)
        if not tokens:
            return np.zeros(len(item_ids), dtype=np.float32)
        all_scores = self.retriever.get_scores(tokens)
        return all_scores[[self.position[i] for i in item_ids]].astype(np.float32)

    def top_k(self, queries: Sequence[str], k: int) -> list[list[int]]:
        """Positions (in the indexed order) of each query's k best items with a positive score."""
        out = []
        for query in queries:
            tokens = self.tokens(query)
            if not tokens:
                out.append([])
                continue
            scores = self.retriever.get_scores(tokens)
            best = np.argsort(-scores, kind="stable")[:k]
            out.append([int(i) for i in best if scores[i] > 0])
        return out

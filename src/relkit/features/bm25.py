"""BM25 over the catalog with bm25s: the index is built once, scoring a query is a sparse lookup."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class BM25Index:
    """BM25 with statistics (document frequencies, lengths) from the whole catalog.

    >>> index = BM25Index(["a", "b"], ["red chair", "blue hose"])
    >>> [round(float(s), 3) for s in index.score("red chairs", ["a", "b"])]
    [0.555, 0.0]
    """

    def __init__(self, item_ids: Sequence[str], texts: Sequence[str], k1: float = 1.5, b: float = 0.75):
        import bm25s
        import Stemmer

        from relkit.logs import bars_on

        self.stemmer = Stemmer.Stemmer("english")
        self.k1, self.b = k1, b
        self.position = {item_id: i for i, item_id in enumerate(item_ids)}
        bars = bars_on()
        corpus = bm25s.tokenize(list(texts), stopwords="en", stemmer=self.stemmer, show_progress=bars)
        self.retriever = bm25s.BM25(k1=k1, b=b)
        self.retriever.index(corpus, show_progress=bars)
        # the corpus statistics, to score texts that are not in the index as if they were (score_texts)
        self.n_docs = len(corpus.ids)
        self.avg_len = float(np.mean([len(doc) for doc in corpus.ids])) if corpus.ids else 0.0
        df = np.zeros(len(corpus.vocab), dtype=np.int64)
        for doc in corpus.ids:
            df[np.unique(np.asarray(doc, dtype=np.int64))] += 1
        by_token = {token: df[i] for token, i in corpus.vocab.items()}
        self.idf = {t: float(np.log(1 + (self.n_docs - d + 0.5) / (d + 0.5))) for t, d in by_token.items()}

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

    def score_texts(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """BM25 of `query` against texts outside the index, with the catalog's statistics (document
        frequencies, mean length): what `score` would give each text were it in the catalog."""
        import bm25s

        tokens = self.tokens(query)
        out = np.zeros(len(texts), dtype=np.float32)
        if not tokens or not texts:
            return out
        docs = bm25s.tokenize(list(texts), stopwords="en", stemmer=self.stemmer, return_ids=False,
                              show_progress=False)
        for n, doc in enumerate(docs):
            length = len(doc)
            norm = self.k1 * ((1 - self.b) + self.b * length / self.avg_len) if self.avg_len else self.k1
            for token in tokens:
                tf = doc.count(token)
                if tf:
                    out[n] += self.idf[token] * tf / (norm + tf)
        return out

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

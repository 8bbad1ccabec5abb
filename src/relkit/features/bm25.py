"""BM25 over the catalog with bm25s: the index is built once, scoring a query is a sparse lookup.

Each item's text is cut into terms in the item's language, a query's in its own (relkit.tokenization):
given, or detected among the catalog's languages (relkit.languages), so an English catalog reads every
query as English.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from relkit.languages import complete_languages, language_among, load_detector
from relkit.tokenization import DEFAULT_TOKENIZATION, Tokenizer


class BM25Index:
    """BM25 with statistics (document frequencies, lengths) from the whole catalog.

    `languages` are the items' (ISO 639-1 codes; where None, detected from the text), `tokenization`
    how texts become terms (relkit.tokenization).

    >>> index = BM25Index(["a", "b"], ["red chair", "blue hose"], ["en", "en"])
    >>> [round(float(s), 3) for s in index.score("red chairs", ["a", "b"])]
    [0.555, 0.0]
    >>> index = BM25Index(["a", "b"], ["新豪轩 铝合金落地窗", "智云 手持稳定器"], ["zh", "zh"])
    >>> [round(float(s), 3) for s in index.score("大落地窗", ["a", "b"])]
    [1.056, 0.0]
    """

    def __init__(self, item_ids: Sequence[str], texts: Sequence[str], languages: Sequence[str | None] | None = None,
                 tokenization: str = DEFAULT_TOKENIZATION, k1: float = 1.5, b: float = 0.75):
        import bm25s

        from relkit.logs import bars_on

        self.tokenizer = Tokenizer(tokenization, "bm25")
        self.k1, self.b = k1, b
        self.position = {item_id: i for i, item_id in enumerate(item_ids)}
        if self.tokenizer.by_language:   # an item without a language is read in the one it is most likely in
            languages = complete_languages(list(texts), None if languages is None else list(languages))
        # the catalog's languages, by items, weigh a query's (an English catalog reads every query as English)
        self.languages = Counter(code for code in languages or () if code is not None)
        if len(self.languages) > 1:
            load_detector()
        terms = self.tokenizer.terms_of(list(texts), None if languages is None else list(languages))
        vocab: dict[str, int] = {}
        ids = [[vocab.setdefault(t, len(vocab)) for t in doc] for doc in terms]
        self.retriever = bm25s.BM25(k1=k1, b=b)
        self.retriever.index((ids, vocab), show_progress=bars_on())
        # the corpus statistics, to score texts that are not in the index as if they were (score_texts)
        self.n_docs = len(ids)
        self.avg_len = float(np.mean([len(doc) for doc in ids])) if ids else 0.0
        df = np.zeros(len(vocab), dtype=np.int64)
        for doc in ids:
            df[np.unique(np.asarray(doc, dtype=np.int64))] += 1
        self.idf = {t: float(np.log(1 + (self.n_docs - df[i] + 0.5) / (df[i] + 0.5))) for t, i in vocab.items()}

    @property
    def tokenization(self) -> str:
        return self.tokenizer.name

    def query_language(self, query: str) -> str | None:
        """The language `query` is read in: the catalog's, or the most probable of the catalog's several."""
        return language_among(query, self.languages) if self.tokenizer.by_language else None

    def tokens(self, query: str, language: str | None = None) -> list[str]:
        """The query's terms that are in the catalog, in `language` (None: `query_language`)."""
        tokens = self.tokenizer.terms(query, language or self.query_language(query))
        vocab = self.retriever.vocab_dict
        return [t for t in tokens if t in vocab]

    def score(self, query: str, item_ids: Sequence[str], language: str | None = None) -> np.ndarray:
        """BM25 of `query` against each of `item_ids` (which must be in the index)."""
        tokens = self.tokens(query, language)
        if not tokens:
            return np.zeros(len(item_ids), dtype=np.float32)
        all_scores = self.retriever.get_scores(tokens)
        return all_scores[[self.position[i] for i in item_ids]].astype(np.float32)

    def score_texts(self, query: str, texts: Sequence[str], languages: Sequence[str | None] | None = None,
                    language: str | None = None) -> np.ndarray:
        """BM25 of `query` against texts outside the index, with the catalog's statistics (document
        frequencies, mean length): what `score` would give each text were it in the catalog. A text
        without a language is read in the one it is most likely in among the catalog's."""
        tokens = self.tokens(query, language)
        out = np.zeros(len(texts), dtype=np.float32)
        if not tokens or not texts:
            return out
        if self.tokenizer.by_language:
            given = languages if languages is not None else [None] * len(texts)
            languages = [code or language_among(text, self.languages) for text, code in zip(texts, given)]
        docs = self.tokenizer.terms_of(list(texts), None if languages is None else list(languages))
        for n, doc in enumerate(docs):
            length = len(doc)
            norm = self.k1 * ((1 - self.b) + self.b * length / self.avg_len) if self.avg_len else self.k1
            for token in tokens:
                tf = doc.count(token)
                if tf:
                    out[n] += self.idf[token] * tf / (norm + tf)
        return out

    def top_k(self, queries: Sequence[str], k: int, languages: Sequence[str | None] | None = None) -> list[list[int]]:
        """Positions (in the indexed order) of each query's k best items with a positive score."""
        out = []
        for n, query in enumerate(queries):
            tokens = self.tokens(query, None if languages is None else languages[n])
            if not tokens:
                out.append([])
                continue
            scores = self.retriever.get_scores(tokens)
            best = np.argsort(-scores, kind="stable")[:k]
            out.append([int(i) for i in best if scores[i] > 0])
        return out

"""Text-match features of a query and an item: which share of the query's terms the item's title and
whole text contain, and whether the whole query appears in the text as a phrase; and, for a teacher's
prior, the share weighted by how rare each term is in the catalog (`idf_coverage`). Terms and phrases
are relkit.tokenization's (stemmed, stopwords dropped, each text in its language). The student
computes them over the catalog's postings (student/groups.py), a teacher's prior per pair
(teacher/prior.py); both read terms and phrases through relkit.tokenization.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from relkit.languages import complete_languages, language_among
from relkit.tokenization import LEGACY_TOKENIZATION, Tokenizer

NAMES = ("title_coverage", "text_coverage", "exact_phrase")
IDF_NAME = "idf_coverage"


def match_features(queries: Sequence[str], texts: Sequence[str], titles: Sequence[str] | None = None, *,
                   tokenization: str = LEGACY_TOKENIZATION, query_languages: Sequence[str | None] | None = None,
                   text_languages: Sequence[str | None] | None = None,
                   frequencies: DocumentFrequencies | None = None) -> np.ndarray:
    """(n, 3) float32: title coverage, text coverage and exact phrase of each (query, text) pair;
    with `frequencies` (made with the same tokenization), a fourth column, `idf_coverage`: the text
    coverage with each query term weighing its inverse document frequency in the text's language.
    Without `titles`, the text stands for the title too. Under a tokenization `by-language`, a text
    without a language is detected, and a query without one is read in the most probable of the
    texts' languages.

    >>> match_features(["red chairs", "Stühle"], ["red oak chair", "Zwei Stühle aus Eiche"],
    ...                tokenization="by-language", text_languages=["en", "de"]).tolist()
    [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    """
    tokenizer = Tokenizer(tokenization, "match")
    titles = texts if titles is None else titles
    if tokenizer.by_language:
        text_languages = complete_languages(texts, text_languages)
        among = Counter(code for code in text_languages if code is not None)
        given = query_languages if query_languages is not None else [None] * len(queries)
        query_languages = [code or language_among(q, among) for q, code in zip(queries, given)]
    else:
        text_languages = query_languages = [None] * len(queries)
    out = np.zeros((len(queries), len(NAMES) + (frequencies is not None)), dtype=np.float32)
    by_query: dict[tuple, tuple[set[str], str]] = {}      # terms and phrase, once per distinct query
    for n, (query, text, title) in enumerate(zip(queries, texts, titles)):
        key = (query, query_languages[n])
        if key not in by_query:
            by_query[key] = (set(tokenizer.terms(query, key[1])), tokenizer.phrase(query, key[1]))
        terms, q = by_query[key]
        size = max(len(terms), 1)
        language = text_languages[n]
        held = terms & set(tokenizer.terms(text, language))
        out[n, 0] = len(terms & set(tokenizer.terms(title or "", language))) / size
        out[n, 1] = len(held) / size
        out[n, 2] = float(bool(q.strip()) and q in tokenizer.phrase(text, language))
        if frequencies is not None:
            weights = {t: frequencies.idf(t, language) for t in terms}
            total = sum(weights.values())
            out[n, 3] = sum(weights[t] for t in held) / total if total > 0 else 0.0
    return out


@dataclass
class DocumentFrequencies:
    """How many of a catalog's items hold each term, by language: what makes a rare query term count
    for more than a common one in `idf_coverage`. Made with one tokenization, kept only for terms in
    two items or more (a term it does not hold counts as in one item). Under `by-language`, a text
    without a language is detected, as `match_features` reads it.

    >>> df = DocumentFrequencies.of(["red chair", "red table", "oak chair"], ["en"] * 3, "by-language")
    >>> df.counts, df.items
    ({'en': {'chair': 2, 'red': 2}}, {'en': 3})
    >>> round(df.idf("red", "en"), 3), round(df.idf("oak", "en"), 3)
    (0.47, 0.981)
    """

    counts: dict[str, dict[str, int]]   # language ('' for none) -> term -> items holding it
    items: dict[str, int]               # language -> items

    @classmethod
    def of(cls, texts: Sequence[str], languages: Sequence[str | None] | None,
           tokenization: str) -> "DocumentFrequencies":
        tokenizer = Tokenizer(tokenization, "match")
        # each text in the language `idf_coverage` reads it in: the given one, else detected
        languages = complete_languages(texts, languages) if tokenizer.by_language else [None] * len(texts)
        counts: dict[str, Counter] = {}
        for terms, language in zip(tokenizer.terms_of(texts, languages), languages):
            counts.setdefault(language or "", Counter()).update(set(terms))
        items = Counter(language or "" for language in languages)
        return cls({lang: {t: n for t, n in sorted(c.items()) if n >= 2} for lang, c in sorted(counts.items())},
                   dict(sorted(items.items())))

    def idf(self, term: str, language: str | None) -> float:
        """BM25's inverse document frequency of `term` among the items in `language`."""
        key = language or ""
        n, df = self.items.get(key, 0), self.counts.get(key, {}).get(term, 1)
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def to_dict(self) -> dict:
        return {"counts": self.counts, "items": self.items}


def idf_coverage(queries: Sequence[str], texts: Sequence[str], frequencies: DocumentFrequencies, *,
                 tokenization: str, query_languages: Sequence[str | None] | None = None,
                 text_languages: Sequence[str | None] | None = None) -> np.ndarray:
    """(n,) float32: the share of each query's terms that its text holds, each term weighing its
    inverse document frequency in the text's language (`frequencies`, made with the same
    `tokenization`); `match_features`' fourth column, languages read as there.

    >>> df = DocumentFrequencies.of(["red chair", "red table", "oak chair", "red lamp"], ["en"] * 4, "english")
    >>> share = idf_coverage(["red oak"] * 2, ["red lamp", "oak chair"], df, tokenization="english")
    >>> share.astype(float).round(2).tolist()
    [0.23, 0.77]
    """
    return match_features(queries, texts, tokenization=tokenization, query_languages=query_languages,
                          text_languages=text_languages, frequencies=frequencies)[:, len(NAMES)]

"""Text-match features of a query and an item: which share of the query's terms the item's title and
whole text contain, and whether the whole query appears in the text as a phrase. Terms and phrases
are relkit.tokenization's (stemmed, stopwords dropped, each text in its language). The student
computes them over the catalog's postings (student/groups.py), a teacher's prior per pair
(teacher/prior.py); both read terms and phrases through relkit.tokenization.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from relkit.languages import complete_languages, language_among
from relkit.tokenization import LEGACY_TOKENIZATION, Tokenizer

NAMES = ("title_coverage", "text_coverage", "exact_phrase")


def match_features(queries: Sequence[str], texts: Sequence[str], titles: Sequence[str] | None = None, *,
                   tokenization: str = LEGACY_TOKENIZATION, query_languages: Sequence[str | None] | None = None,
                   text_languages: Sequence[str | None] | None = None) -> np.ndarray:
    """(n, 3) float32: title coverage, text coverage and exact phrase of each (query, text) pair.
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
    out = np.zeros((len(queries), len(NAMES)), dtype=np.float32)
    by_query: dict[tuple, tuple[set[str], str]] = {}      # terms and phrase, once per distinct query
    for n, (query, text, title) in enumerate(zip(queries, texts, titles)):
        key = (query, query_languages[n])
        if key not in by_query:
            by_query[key] = (set(tokenizer.terms(query, key[1])), tokenizer.phrase(query, key[1]))
        terms, q = by_query[key]
        size = max(len(terms), 1)
        language = text_languages[n]
        out[n, 0] = len(terms & set(tokenizer.terms(title or "", language))) / size
        out[n, 1] = len(terms & set(tokenizer.terms(text, language))) / size
        out[n, 2] = float(bool(q.strip()) and q in tokenizer.phrase(text, language))
    return out

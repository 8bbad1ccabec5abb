"""Text-match features of a query and an item: which share of the query's terms the item's title and
whole text contain (stemmed, English stopwords dropped), and whether the whole query appears in the
text as a phrase. The student computes them over the catalog's postings (student/features.py), a
teacher's prior per pair (teacher/prior.py); both read terms and phrases through this module.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

NAMES = ("title_coverage", "text_coverage", "exact_phrase")
TOKEN = re.compile(r"\w+")


def stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def stem_tokens(stem, text: str) -> list[str]:
    """The text's lowercased words without English stopwords, stemmed by `stem` (see `stemmer`)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    words = [w for w in TOKEN.findall(text.lower()) if w not in ENGLISH_STOP_WORDS]
    return stem.stemWords(words) if words else []


def phrase(text: str) -> str:
    """The text's words, lowercased, one space apart and padded with a space at each end: `phrase(q)
    in phrase(t)` when t contains q's words in a row."""
    return " " + " ".join(TOKEN.findall(text.lower())) + " "


def match_features(queries: Sequence[str], texts: Sequence[str], titles: Sequence[str] | None = None) -> np.ndarray:
    """(n, 3) float32: title coverage, text coverage and exact phrase of each (query, text) pair.
    Without `titles`, the text stands for the title too."""
    stem = stemmer()
    titles = texts if titles is None else titles
    out = np.zeros((len(queries), len(NAMES)), dtype=np.float32)
    by_query: dict[str, tuple[set[str], str]] = {}      # terms and phrase, once per distinct query
    for n, (query, text, title) in enumerate(zip(queries, texts, titles)):
        if query not in by_query:
            by_query[query] = (set(stem_tokens(stem, query)), phrase(query))
        terms, q = by_query[query]
        size = max(len(terms), 1)
        out[n, 0] = len(terms & set(stem_tokens(stem, title or ""))) / size
        out[n, 1] = len(terms & set(stem_tokens(stem, text))) / size
        out[n, 2] = float(bool(q.strip()) and q in phrase(text))
    return out

"""More train queries for the teacher to label than people judged: a student learns what the
teacher knows from many queries, not from many items of a few.

Two sources, both added to the train split, pinned, with no judgment:

- `log_queries`: the most-shown queries of the engagement log (`relkit import engagement`), the
  queries users really type;
- `title_queries`: phrases of one to three words that recur across item titles ("memory card",
  "snow boots"), for a catalog with no log.

`add_train_queries` tops the train split up to a number of queries from the log when the workspace
has one, else from titles: what `relkit pairs --min-queries` does.

A query that matches one the workspace has (the same stemmed words in any order) is never added,
so no dev or test query, nor one a word-order away from it, reaches a student's training data.
The added queries are marked in `queries.extra` with their source; rerunning adds nothing new.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass

from relkit.errors import RelkitError
from relkit.features.text_match import stem_tokens, stemmer
from relkit.workspace import Workspace

log = logging.getLogger(__name__)
WORD = re.compile(r"[^\W_]+")
FROM = {"log": "the engagement log", "titles": "item titles"}   # each source, as relkit says where queries came from


@dataclass(frozen=True)
class QueryResult:
    source: str
    eligible: int   # distinct new queries the source offered
    added: int      # new train queries

    def summary(self) -> str:
        return f"{self.added:,} new train queries from {FROM[self.source]} ({self.eligible:,} eligible)"


def _edge(word: str) -> bool:
    """Whether a phrase may start or end with `word`: not a stopword, a number or a single letter."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return len(word) > 1 and not word.isdigit() and word not in ENGLISH_STOP_WORDS


def _key(stem, text: str) -> tuple[str, ...]:
    return tuple(sorted(set(stem_tokens(stem, text))))


def _new(ws: Workspace, texts) -> list[str]:
    """`texts` in their order, without those that match a workspace query or an earlier text (the
    same stemmed words, stopwords dropped) or have no word left."""
    stem = stemmer()
    seen = {_key(stem, q) for (q,) in ws.fetchall("SELECT query FROM queries")}
    out = []
    for text in texts:
        key = _key(stem, text)
        if key and key not in seen:
            seen.add(key)
            out.append(text.strip())
    return out


def _add(ws: Workspace, source: str, queries: list[str], eligible: int) -> QueryResult:
    ids = [f"{source}-{hashlib.sha1(q.encode()).hexdigest()[:12]}" for q in queries]
    extra = json.dumps({"source": source})
    with ws.transaction():
        before = ws.count("queries")
        with ws.registered("_more", {"query_id": ids, "query": queries}):
            ws.run("INSERT OR IGNORE INTO queries SELECT query_id, query, NULL, ? FROM _more", [extra])
            ws.run("INSERT OR IGNORE INTO splits SELECT query_id, 'train', TRUE FROM _more")
        added = ws.count("queries") - before
    return QueryResult(source=source, eligible=eligible, added=added)


def title_queries(ws: Workspace, n: int, min_items: int = 3, max_share: float = 0.02) -> QueryResult:
    """Add up to `n` train queries: the phrases of one to three words found in the most item titles,
    in at least `min_items` of them and at most `max_share` (so not 'black' or 'for men'). A phrase
    that starts or ends with a stopword, a number or a single letter ('3 in x', '4 pack'), or has
    only words of two letters ('lb'), is not a query; nor is one mostly seen inside a longer one
    ('mutant' of 'teenage mutant ninja')."""
    if n < 1:
        raise RelkitError("title queries: n must be at least 1")
    titles = [t for (t,) in ws.fetchall("SELECT title FROM items WHERE title IS NOT NULL AND title <> '' "
                                        "ORDER BY item_id")]
    if not titles:
        raise RelkitError("title queries: no item has a title to draw phrases from")
    counts: Counter[tuple[str, ...]] = Counter()
    for title in titles:
        words = WORD.findall(title.lower())
        grams = set()
        for size in (1, 2, 3):
            for start in range(len(words) - size + 1):
                gram = tuple(words[start:start + size])
                if not (_edge(gram[0]) and _edge(gram[-1])) or all(len(w) <= 2 for w in gram):
                    continue
                grams.add(gram)
        counts.update(grams)
    inside = set()  # phrases seen mostly as part of a longer one
    for gram, count in counts.items():
        for size in range(1, len(gram)):
            for start in range(len(gram) - size + 1):
                part = gram[start:start + size]
                if part in counts and count >= 0.9 * counts[part]:
                    inside.add(part)
    most = max(min_items, int(max_share * len(titles)))
    eligible = _new(ws, (" ".join(gram) for gram, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                         if min_items <= count <= most and gram not in inside))
    return _add(ws, "titles", eligible[:n], len(eligible))


def log_queries(ws: Workspace, n: int) -> QueryResult:
    """Add up to `n` train queries: the engagement log's queries with the most impressions."""
    if n < 1:
        raise RelkitError("log queries: n must be at least 1")
    if ws.count("engagement") == 0:
        raise RelkitError("log queries: the workspace has no engagement log (relkit import engagement FILE)")
    rows = ws.fetchall("SELECT query, sum(impressions) AS shown FROM engagement GROUP BY query "
                       "ORDER BY shown DESC, query")
    eligible = _new(ws, (text for text, _ in rows))
    return _add(ws, "log", eligible[:n], len(eligible))


SOURCES = ("auto", "log", "titles")


def add_train_queries(ws: Workspace, at_least: int, source: str = "auto") -> QueryResult | None:
    """Add queries until the train split has `at_least` (None when it has them already): from the
    engagement log (`log`), from item titles (`titles`), or `auto`: the log when the workspace has
    one, else titles."""
    if source not in SOURCES:
        raise RelkitError(f"query source is one of {', '.join(SOURCES)}, not '{source}'")
    (have,) = ws.fetchall("SELECT count(*) FROM splits WHERE split = 'train'")[0]
    if have >= at_least:
        return None
    if source == "auto":
        if ws.count("engagement"):
            source = "log"
        elif ws.fetchall("SELECT 1 FROM items WHERE title <> '' LIMIT 1"):
            source = "titles"
        else:
            log.warning("no engagement log and no item title to draw train queries from: none added")
            return None
    return (log_queries if source == "log" else title_queries)(ws, at_least - have)

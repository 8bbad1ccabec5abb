"""More train queries for the teacher to label than people judged: a student learns what the
teacher knows from many queries, not from many items of a few.

Two sources, both added to the train split, pinned, with no judgment:

- `log_queries`: the most-shown queries of the engagement log (`relkit import engagement`), the
  queries users really type;
- `title_queries`: phrases of one to three words that recur across item titles ("memory card",
  "snow boots"), for a catalog with no log.

`add_train_queries` tops the train split up to a number of queries from the log when the workspace
has one, else from titles: what `relkit pairs --min-queries` does.

A query that matches one the workspace has (the same terms in any order: stemmed, stopwords
dropped, each text in its language by relkit.tokenization) is never added, so no dev or test query,
nor one a word-order away from it, reaches a student's training data. Phrases of a title are in its
item's language: words of a language written with spaces, runs of two to four characters of one
written without (Chinese, Japanese, Thai). The added queries are marked in `queries.extra` with
their source and keep their language; rerunning adds nothing new.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass

from relkit.errors import RelkitError
from relkit.languages import language_among
from relkit.tokenization import Analyzer, Tokenizer, characters
from relkit.workspace import ADDED_QUERIES, Workspace

log = logging.getLogger(__name__)
WORD = re.compile(r"[^\W_]+")
UNSPACED_SIZES = (2, 3, 4)   # characters in a title phrase of a language written without spaces
FROM = ADDED_QUERIES   # each source, as relkit says where queries came from (the workspace's vocabulary)


@dataclass(frozen=True)
class QueryResult:
    source: str
    eligible: int   # distinct new queries the source offered
    added: int      # new train queries

    def summary(self) -> str:
        return f"{self.added:,} new train queries from {FROM[self.source]} ({self.eligible:,} eligible)"


def _edge(word: str, analyzer: Analyzer) -> bool:
    """Whether a phrase may start or end with `word`: not a stopword, a number or a single letter."""
    return len(word) > 1 and not word.isdigit() and word not in analyzer.stopwords


def _edge_char(char: str, analyzer: Analyzer) -> bool:
    """Whether a phrase written without spaces may start or end with `char` (a character with its
    combining marks): not a stopword or a digit."""
    return char not in analyzer.stopwords and not char.isdigit()


def _catalog_languages(ws: Workspace) -> dict[str, int]:
    return dict(ws.fetchall("SELECT language, count(*) FROM items WHERE language IS NOT NULL GROUP BY ALL"))


def _new(ws: Workspace, texts) -> list[tuple[str, str | None]]:
    """`texts` ((text, language) pairs) in their order, without those that match a workspace query or
    an earlier text (the same terms in any order) or have no term left. A query without a stored
    language is read in the one it is most likely in among the catalog's."""
    tokenizer, catalog = Tokenizer(purpose="match"), _catalog_languages(ws)

    def key(text: str, language: str | None) -> tuple[str, ...]:
        return tuple(sorted(set(tokenizer.terms(text, language or language_among(text, catalog)))))

    seen = {key(q, code) for q, code in ws.fetchall("SELECT query, language FROM queries")}
    out = []
    for text, language in texts:
        k = key(text, language)
        if k and k not in seen:
            seen.add(k)
            out.append((text.strip(), language))
    return out


def _add(ws: Workspace, source: str, queries: list[tuple[str, str | None]], eligible: int) -> QueryResult:
    ids = [f"{source}-{hashlib.sha1(q.encode()).hexdigest()[:12]}" for q, _ in queries]
    extra = json.dumps({"source": source})
    with ws.transaction():
        before = ws.count("queries")
        with ws.registered("_more", {"query_id": ids, "query": [q for q, _ in queries],
                                     "language": [code for _, code in queries]}):
            ws.run("INSERT OR IGNORE INTO queries SELECT query_id, query, language, ? FROM _more", [extra])
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
    titles = ws.fetchall("SELECT title, language FROM items WHERE title IS NOT NULL AND title <> '' ORDER BY item_id")
    if not titles:
        raise RelkitError("title queries: no item has a title to draw phrases from")
    tokenizer, catalog = Tokenizer(purpose="match"), _catalog_languages(ws)
    counts: Counter[tuple[str, ...]] = Counter()
    language_of: dict[tuple[str, ...], Counter] = {}    # phrase -> the languages of the titles it is in
    unspaced: set[tuple[str, ...]] = set()              # phrases of characters, written without spaces
    for title, language in titles:
        analyzer = tokenizer.analyzer(language or language_among(title, catalog))
        grams = set()
        for run, words in _word_runs(analyzer, title):
            if words is None:               # a run of a script written without spaces: runs of its characters
                chars = characters(run)
                found = {tuple(chars[i:i + size]) for size in UNSPACED_SIZES for i in range(len(chars) - size + 1)
                         if _edge_char(chars[i], analyzer) and _edge_char(chars[i + size - 1], analyzer)}
                grams |= found
                unspaced |= found
                continue
            for size in (1, 2, 3):
                for start in range(len(words) - size + 1):
                    gram = tuple(words[start:start + size])
                    if not (_edge(gram[0], analyzer) and _edge(gram[-1], analyzer)) or all(len(w) <= 2 for w in gram):
                        continue
                    grams.add(gram)
        counts.update(grams)
        for gram in grams:
            language_of.setdefault(gram, Counter())[analyzer.language] += 1
    inside = set()  # phrases seen mostly as part of a longer one
    for gram, count in counts.items():
        for size in range(1, len(gram)):
            for start in range(len(gram) - size + 1):
                part = gram[start:start + size]
                if part in counts and count >= 0.9 * counts[part]:
                    inside.add(part)
    most = max(min_items, int(max_share * len(titles)))
    eligible = _new(ws, (("".join(gram) if gram in unspaced else " ".join(gram), language_of[gram].most_common(1)[0][0])
                         for gram, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                         if min_items <= count <= most and gram not in inside))
    return _add(ws, "titles", eligible[:n], len(eligible))


def _word_runs(analyzer: Analyzer, title: str):
    """The title as runs: (run, its words) for a stretch of words written with spaces (no phrase
    crosses a run of another script), (run, None) for a run of a script written without spaces."""
    words: list[str] = []
    for run, is_unspaced in analyzer.runs(title):
        if is_unspaced:
            if words:
                yield "", words
                words = []
            yield run, None
        else:
            words.extend(WORD.findall(run))
    if words:
        yield "", words


def log_queries(ws: Workspace, n: int) -> QueryResult:
    """Add up to `n` train queries: the engagement log's queries with the most impressions."""
    if n < 1:
        raise RelkitError("log queries: n must be at least 1")
    if ws.count("engagement") == 0:
        raise RelkitError("log queries: the workspace has no engagement log (relkit import engagement FILE)")
    rows = ws.fetchall("SELECT query, sum(impressions) AS shown FROM engagement GROUP BY query "
                       "ORDER BY shown DESC, query")
    catalog = _catalog_languages(ws)
    eligible = _new(ws, ((text, language_among(text, catalog)) for text, _ in rows))
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

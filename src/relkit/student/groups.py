"""The student's feature groups: one class each, and the registry that names them.

A group does its per-item work once, when the catalog is indexed (`build`), and then scores pairs
with pure functions of what it built: `pair_columns` gives its pair scalars for one query against
rows of an item table (the catalog's, or one of items given by their fields), `item_columns` its
item-only columns of the catalog. `FeatureBuilder` (features.py) lays the groups out in registry
order: the embedding's vector blocks first, then every group's item blocks, then every group's pair
scalars.

To add a group: write its class here (or in a module of its own) and add it to `REGISTRY`. A group
with settings of its own adds them to `FeatureConfig`, which saved students keep.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from relkit.errors import RelkitError
from relkit.features.text_match import NAMES as TEXT_MATCH_NAMES
from relkit.languages import complete_languages, language_among, load_detector, stored_languages
from relkit.text import item_title
from relkit.tokenization import Tokenizer

if TYPE_CHECKING:
    from relkit.features.embeddings import Encoder
    from relkit.student.features import FeatureConfig, ItemTable
    from relkit.workspace import Workspace


@dataclass
class Catalog:
    """What groups index: the workspace's items (records in item id order), their model texts, and
    the encoders a caller passed in (None: the groups load the configured ones)."""

    ws: Workspace
    config: FeatureConfig
    records: list[dict]
    item_ids: list[str]
    position: dict[str, int]
    texts: list[str]
    encoder: Encoder | None = None
    image_encoder: object = None


class FeatureGroup:
    """One feature group. Subclasses set `name` and `pair_names`, build their index in `build`,
    and override what they compute."""

    name: ClassVar[str]
    pair_names: ClassVar[tuple[str, ...]] = ()
    reads_language: ClassVar[bool] = False    # pair_columns reads the query by its language (takes `language=`)

    @classmethod
    def build(cls, catalog: Catalog) -> "FeatureGroup":
        """The group indexed over the catalog: all per-item work happens here."""
        return cls()

    def settings(self) -> dict:
        """FeatureConfig fields the build resolved (a stored embedding's key, an encoder's width):
        kept with a trained student so it reads the same features later."""
        return {}

    def item_blocks(self) -> list[tuple[str, int]]:
        """(name, width) of the group's item-only blocks."""
        return []

    def item_columns(self) -> np.ndarray:
        """(catalog items, total width of item_blocks) float32, in catalog order."""
        raise NotImplementedError

    def index_inline(self, records: Sequence[dict], texts: Sequence[str]) -> object:
        """The group's per-item data for items outside the catalog (kept in their ItemTable's `state`)."""
        return None

    def pair_columns(self, query: str, query_vector: np.ndarray | None, items: ItemTable,
                     rows: np.ndarray) -> list[np.ndarray]:
        """One (len(rows),) array per name in `pair_names`: `query` against `rows` of `items`. A
        group whose `reads_language` is true also gets `language=`: the query's ISO 639-1 code when
        the caller names it (None: detect it among the catalog's languages)."""
        return []


class Embedding(FeatureGroup):
    """Query and item vectors from the bi-encoder (`FeatureConfig.encoder`; item vectors cached in
    the workspace table `text_vectors`), their product, and their cosine. The vectors live in the
    item table (`ItemTable.vectors`) since the student's first layer splits on them."""

    name = "embedding"
    pair_names = ("cosine",)

    def __init__(self, vectors: np.ndarray):
        self.vectors = vectors

    @classmethod
    def build(cls, catalog: Catalog) -> "Embedding":
        from relkit.features.embeddings import cached_vectors

        return cls(cached_vectors(catalog.ws, catalog.config.encoder, catalog.texts, catalog.encoder))

    def pair_columns(self, query, query_vector, items, rows):
        return [items.vectors[rows] @ query_vector]


class BM25(FeatureGroup):
    """BM25 of the query against the item text with the catalog's statistics, and its log1p; items
    outside the catalog are scored as if they were in it. Each text is read in its language
    (`FeatureConfig.tokenization`; relkit/features/bm25.py)."""

    name = "bm25"
    pair_names = ("bm25", "log1p_bm25")
    reads_language = True

    def __init__(self, index):
        self.index = index

    @classmethod
    def build(cls, catalog: Catalog) -> "BM25":
        from relkit.features.bm25 import BM25Index

        return cls(BM25Index(catalog.item_ids, catalog.texts, stored_languages(catalog.records),
                             catalog.config.tokenization))

    def index_inline(self, records, texts):
        return stored_languages(records)   # None: the text's most probable of the catalog's languages, when scored

    def pair_columns(self, query, query_vector, items, rows, language=None):
        if items.inline:
            languages = items.state[self.name]
            bm = self.index.score_texts(query, [items.texts[r] for r in rows], [languages[r] for r in rows],
                                        language=self._read_in(language))
        else:
            tokens = self.index.tokens(query, self._read_in(language))
            bm = self.index.retriever.get_scores(tokens)[rows] if tokens else np.zeros(len(rows))
        bm = bm.astype(np.float32)
        return [bm, np.log1p(bm)]

    def _read_in(self, language: str | None) -> str | None:
        return language if self.index.tokenizer.by_language else None   # the `english` tokenization has one


@dataclass
class Terms:
    """Terms of each item's title and whole text in the item's language, and its text as a phrase.
    For the catalog also the term incidence matrices (postings by term), so that the coverage of many
    rows costs the query terms' postings, not a loop over rows."""

    title_terms: list[frozenset]
    text_terms: list[frozenset]
    phrases: list[str]
    languages: list[str | None]                # each item's (None under the `english` tokenization)
    codes: np.ndarray = None                   # the same as an array, for comparing many rows at once
    distinct: frozenset = frozenset()          # and the languages they are in
    vocabulary: dict[str, int] | None = None   # term -> column of the matrices below
    title_matrix: object = None                # scipy CSC (items x terms), 1 where the title has the term
    text_matrix: object = None

    @classmethod
    def of(cls, tokenizer: Tokenizer, titles: Sequence[str], texts: Sequence[str],
           languages: Sequence[str | None]) -> "Terms":
        languages = list(languages) if tokenizer.by_language else [None] * len(texts)
        return cls([frozenset(t) for t in tokenizer.terms_of(list(titles), languages)],
                   [frozenset(t) for t in tokenizer.terms_of(list(texts), languages)],
                   [tokenizer.phrase(t, code) for t, code in zip(texts, languages)], languages)

    def __post_init__(self) -> None:
        self.codes = np.array(self.languages, dtype=object)
        self.distinct = frozenset(self.languages)

    def index(self) -> "Terms":
        from scipy.sparse import csr_matrix

        vocab: dict[str, int] = {}
        for sets in (self.title_terms, self.text_terms):
            for terms in sets:
                for t in terms:
                    vocab.setdefault(t, len(vocab))

        def matrix(sets):
            indptr, indices = [0], []
            for terms in sets:
                indices.extend(vocab[t] for t in terms)
                indptr.append(len(indices))
            data = np.ones(len(indices), dtype=np.float32)
            return csr_matrix((data, indices, indptr), shape=(len(sets), max(len(vocab), 1)))
        self.vocabulary = vocab
        self.title_matrix, self.text_matrix = matrix(self.title_terms).tocsc(), matrix(self.text_terms).tocsc()
        return self


def coverage(matrix, columns: list[int], rows: np.ndarray) -> np.ndarray:
    """How many of the terms in `columns` each row of an incidence matrix has."""
    counts = np.zeros(matrix.shape[0], dtype=np.float32)
    for c in columns:
        counts[matrix.indices[matrix.indptr[c]:matrix.indptr[c + 1]]] += 1.0
    return counts[rows]


class TextMatch(FeatureGroup):
    """The share of the query's terms found in the title and in the whole item text (stemmed,
    stopwords dropped, each text in its language as `FeatureConfig.tokenization` says; the terms of
    relkit/features/text_match.py, which the teacher's prior reads too), and whether the whole query
    appears in the text as a phrase."""

    name = "text_match"
    pair_names = TEXT_MATCH_NAMES
    reads_language = True

    def __init__(self, terms: Terms, tokenizer: Tokenizer):
        self.terms, self.tokenizer = terms, tokenizer
        # the catalog's languages, by items, weigh a query's (relkit.languages.language_among)
        self.languages = Counter(code for code in terms.languages if code is not None)
        if len(self.languages) > 1:
            load_detector()

    @classmethod
    def build(cls, catalog: Catalog) -> "TextMatch":
        tokenizer = Tokenizer(catalog.config.tokenization, "match")
        titles = [r["title"] or "" for r in catalog.records]
        languages = complete_languages(catalog.texts, stored_languages(catalog.records)) if tokenizer.by_language \
            else [None] * len(titles)
        return cls(Terms.of(tokenizer, titles, catalog.texts, languages).index(), tokenizer)

    def index_inline(self, records, texts):
        languages = [code or (language_among(text, self.languages) if self.tokenizer.by_language else None)
                     for code, text in zip(stored_languages(records), texts)]
        return Terms.of(self.tokenizer, [item_title(r) for r in records], texts, languages)

    def pair_columns(self, query, query_vector, items, rows, language=None):
        index = items.state[self.name] if items.inline else self.terms
        if not self.tokenizer.by_language:
            language = None
        elif language is None:
            language = language_among(query, self.languages)
        terms = set(self.tokenizer.terms(query, language))
        n = max(len(terms), 1)
        if index.vocabulary is not None:     # catalog rows: sparse incidence (a term not in it matches nothing)
            columns = [index.vocabulary[t] for t in terms if t in index.vocabulary]
            title = coverage(index.title_matrix, columns, rows) / n
            text = coverage(index.text_matrix, columns, rows) / n
        else:
            title = np.fromiter((len(terms & index.title_terms[r]) / n for r in rows), np.float64, len(rows))
            text = np.fromiter((len(terms & index.text_terms[r]) / n for r in rows), np.float64, len(rows))
        whole = self.tokenizer.phrase(query, language)
        exact = np.zeros(len(rows), dtype=np.float32)
        if whole.strip():
            # the whole query can only be in a text that has every one of its terms, when the two are
            # stemmed alike (in one language)
            may = text >= 1.0 - 1e-6
            if index.distinct != {language}:
                may |= index.codes[rows] != language
            for i in np.flatnonzero(may) if terms else range(len(rows)):
                exact[i] = whole in index.phrases[rows[i]]
        return [title.astype(np.float32), text.astype(np.float32), exact]


ENGAGEMENT_ITEM = ("item_ctr", "item_save_rate", "item_log_impressions")
ENGAGEMENT_PAIR = ("query_item_ctr", "query_item_save_rate", "query_item_log_impressions")


def rates(impressions: np.ndarray, clicks: np.ndarray, saves: np.ndarray, prior: float,
          global_ctr: float, global_save: float) -> np.ndarray:
    """(n, 3): smoothed CTR, smoothed save rate, log1p impressions; zeros where impressions are 0."""
    seen = impressions > 0
    ctr = np.where(seen, (clicks + prior * global_ctr) / (impressions + prior), 0.0)
    save = np.where(seen, (saves + prior * global_save) / (impressions + prior), 0.0)
    return np.stack([ctr, save, np.log1p(impressions)], axis=1).astype(np.float32)


class Engagement(FeatureGroup):
    """Smoothed click-through and save rates and log impressions from the engagement log, per item
    and per (query, item), the query lowercased and trimmed; zero where there is no log, and for
    items outside the catalog.

    The (query, item) rates are kept as arrays sorted by query, then catalog row: a query's rows are
    one slice, and a batch of candidates is looked up in it with one binary search."""

    name = "engagement"
    pair_names = ENGAGEMENT_PAIR

    def __init__(self, item_rates: np.ndarray, spans: dict[str, tuple[int, int]], pair_rows: np.ndarray,
                 pair_rates: np.ndarray):
        self.item_rates = item_rates      # (catalog items, 3)
        self.spans = spans                # query -> (start, stop) in pair_rows and pair_rates
        self.pair_rows = pair_rows        # (pairs,) catalog rows, ascending within each query's span
        self.pair_rates = pair_rates      # (pairs, 3)

    @classmethod
    def build(cls, catalog: Catalog) -> "Engagement":
        ws, prior = catalog.ws, catalog.config.ctr_prior
        totals = ws.fetchone("SELECT sum(impressions), sum(clicks), sum(saves) FROM engagement")
        impressions, clicks, saves = (float(x or 0) for x in totals)
        g_ctr = clicks / impressions if impressions else 0.0
        g_save = saves / impressions if impressions else 0.0
        per_item = np.zeros((len(catalog.item_ids), 3), dtype=np.float64)
        for item_id, i, c, s in ws.fetchall("SELECT item_id, sum(impressions), sum(clicks), sum(saves) "
                                            "FROM engagement GROUP BY item_id"):
            row = catalog.position.get(item_id)
            if row is not None:
                per_item[row] = (i, c, s)
        pairs = sorted((query, catalog.position[item_id], i, c, s) for query, item_id, i, c, s in ws.fetchall(
            "SELECT lower(trim(query)), item_id, sum(impressions), sum(clicks), sum(saves) FROM engagement "
            "GROUP BY ALL") if item_id in catalog.position)
        counts = np.array([p[2:] for p in pairs], dtype=np.float64).reshape(-1, 3)
        spans: dict[str, tuple[int, int]] = {}
        for n, (query, *_) in enumerate(pairs):
            start = spans.get(query, (n, n))[0]
            spans[query] = (start, n + 1)
        return cls(rates(per_item[:, 0], per_item[:, 1], per_item[:, 2], prior, g_ctr, g_save), spans,
                   np.array([p[1] for p in pairs], dtype=np.int64),
                   rates(counts[:, 0], counts[:, 1], counts[:, 2], prior, g_ctr, g_save))

    def item_blocks(self):
        return [(name, 1) for name in ENGAGEMENT_ITEM]

    def item_columns(self):
        return self.item_rates

    def pair_columns(self, query, query_vector, items, rows):
        found = np.zeros((len(rows), 3), dtype=np.float32)
        span = None if items.inline else self.spans.get(query.strip().lower())
        if span is not None and len(rows):
            known = self.pair_rows[span[0]:span[1]]
            at = np.minimum(np.searchsorted(known, rows), len(known) - 1)
            hit = known[at] == rows
            found[hit] = self.pair_rates[span[0] + at[hit]]
        return list(found.T)


class Graph(FeatureGroup):
    """The item's embedding from co-engagement (relkit/features/graph.py: items engaged with from
    the same queries are close), `graph_dim` wide; zero for items nobody engaged with. Needs an
    engagement log with clicks."""

    name = "graph"

    def __init__(self, vectors: np.ndarray, key: str):
        self.vectors, self.key = vectors, key

    @classmethod
    def build(cls, catalog: Catalog) -> "Graph":
        from relkit.features.graph import item_graph_vectors

        return cls(*item_graph_vectors(catalog.ws, catalog.item_ids, catalog.config.graph_dim,
                                       catalog.config.graph_key))

    def settings(self):
        return {"graph_key": self.key}

    def item_blocks(self):
        return [("item_graph", self.vectors.shape[1])]

    def item_columns(self):
        return self.vectors


class Visual(FeatureGroup):
    """The item's image embedding from an image encoder (relkit/features/images.py; any
    transformers vision model, CLIP by default) and whether the item has a readable image; zero
    without one."""

    name = "visual"

    def __init__(self, vectors: np.ndarray, has_image: np.ndarray):
        self.vectors, self.has_image = vectors, has_image

    @classmethod
    def build(cls, catalog: Catalog) -> "Visual":
        from relkit.features.images import ImageEncoder, item_image_vectors

        config = catalog.config
        encoder = catalog.image_encoder or ImageEncoder(config.image_encoder)
        vectors, has = item_image_vectors(catalog.ws, [r["image"] for r in catalog.records], encoder)
        if config.image_dim is not None and config.image_dim != vectors.shape[1]:
            raise RelkitError(f"the image encoder '{config.image_encoder}' gives {vectors.shape[1]} values, the "
                              f"model was trained on {config.image_dim}")
        return cls(vectors, has)

    def settings(self):
        return {"image_dim": int(self.vectors.shape[1])}

    def item_blocks(self):
        return [("item_image", self.vectors.shape[1]), ("has_image", 1)]

    def item_columns(self):
        return np.concatenate([self.vectors, self.has_image[:, None]], axis=1)


# The groups by name, in the order their blocks take in the model input.
REGISTRY: dict[str, type[FeatureGroup]] = {group.name: group for group in (
    Embedding, BM25, TextMatch, Engagement, Graph, Visual)}

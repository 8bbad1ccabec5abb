"""The student's features: one code path for training, evaluation and serving.

Features come in four blocks, laid out so a scorer can split the work by what it depends on:

- query vectors (the bi-encoder's embedding of the query): computed once per query;
- item vectors (the bi-encoder's embedding of the item text, cached in the workspace table
  `text_vectors`) and item extras (item-level engagement rates, the item's graph and image
  embeddings): computed once per item;
- the query-item product of the two vectors: computed from the two above;
- pair scalars (cosine, bm25, text match, query-item engagement): computed per candidate.

Every block has a name and a width (`FeatureBuilder.blocks`); a saved student records them and
refuses a builder whose blocks differ.

Groups (`FeatureConfig.groups`):
  embedding   query and item vectors, their product, their cosine
  bm25        BM25 of the query against the item text (catalog statistics), and its log1p
  text_match  the share of the query's terms found in the title and in the whole item text (stemmed,
              stopwords dropped), and whether the whole query appears in the text as a phrase
  engagement  smoothed click-through and save rates and log impressions, per item and per
              (query, item); zero where there is no log
  graph       the item's embedding from co-engagement (relkit/features/graph.py: items engaged
              with from the same queries are close), `graph_dim` wide; zero for items nobody
              engaged with. Not in the default groups: it needs an engagement log with clicks
  visual      the item's image embedding from an image encoder (relkit/features/images.py; any
              transformers vision model, CLIP by default) and whether the item has a readable
              image; zero without. Not in the default groups
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from relkit.errors import RelkitError
from relkit.features.embeddings import DEFAULT_ENCODER, Encoder, cached_vectors
from relkit.features.images import DEFAULT_IMAGE_ENCODER
from relkit.features.text_match import NAMES as TEXT_MATCH_NAMES
from relkit.features.text_match import phrase, stem_tokens, stemmer
from relkit.text import DEFAULT_TEMPLATE, item_text, item_title
from relkit.workspace import ITEM_RECORD_COLUMNS, Workspace

GROUPS = ("embedding", "bm25", "text_match", "engagement", "graph", "visual")
DEFAULT_GROUPS = ("embedding", "bm25", "text_match", "engagement")
ENGAGEMENT_ITEM = ("item_ctr", "item_save_rate", "item_log_impressions")
ENGAGEMENT_PAIR = ("query_item_ctr", "query_item_save_rate", "query_item_log_impressions")


@dataclass(frozen=True)
class FeatureConfig:
    encoder: str = DEFAULT_ENCODER    # bi-encoder for query and item vectors (path or hub id)
    groups: tuple[str, ...] = DEFAULT_GROUPS
    ctr_prior: float = 20.0           # pseudo-impressions pulling a rate toward the global rate
    graph_dim: int = 32               # width of the item graph embedding
    graph_key: str | None = None      # the stored graph embedding a model was trained with (set when built)
    image_encoder: str = DEFAULT_IMAGE_ENCODER   # for the visual group (path or hub id)
    image_dim: int | None = None      # its embedding width (set when built)

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(self.groups))
        unknown = [g for g in self.groups if g not in GROUPS]
        if unknown or not self.groups:
            raise RelkitError(f"unknown feature group(s) {unknown or '(none given)'}; choose from {', '.join(GROUPS)}")
        if self.ctr_prior <= 0:
            raise RelkitError("ctr_prior must be positive")
        if self.graph_dim < 1:
            raise RelkitError("graph_dim must be at least 1")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["groups"] = list(self.groups)
        return d


@dataclass
class PairFeatures:
    """Features of n (query, item) pairs. Rows of `query_vectors` and `item_rows` are shared by
    the pairs that index them."""

    query_vectors: np.ndarray     # (number of distinct queries, d)
    query_index: np.ndarray       # (n,) row of each pair's query in query_vectors
    item_rows: np.ndarray         # (n,) row of each pair's item in the catalog (ItemTable)
    pair: np.ndarray              # (n, s) pair scalars

    def __len__(self) -> int:
        return len(self.item_rows)


def _rates(impressions: np.ndarray, clicks: np.ndarray, saves: np.ndarray, prior: float,
           global_ctr: float, global_save: float) -> np.ndarray:
    """(n, 3): smoothed CTR, smoothed save rate, log1p impressions; zeros where impressions are 0."""
    seen = impressions > 0
    ctr = np.where(seen, (clicks + prior * global_ctr) / (impressions + prior), 0.0)
    save = np.where(seen, (saves + prior * global_save) / (impressions + prior), 0.0)
    return np.stack([ctr, save, np.log1p(impressions)], axis=1).astype(np.float32)


@dataclass
class ItemTable:
    """Everything per item the features need, for the whole catalog, in item id order."""

    item_ids: list[str]
    position: dict[str, int]
    texts: list[str]
    vectors: np.ndarray | None             # (items, d) unit vectors, or None without `embedding`
    extra: np.ndarray                      # (items, e) item-level features (engagement)
    title_terms: list[frozenset] = field(default_factory=list)
    text_terms: list[frozenset] = field(default_factory=list)
    phrases: list[str] = field(default_factory=list)
    terms: dict[str, int] | None = None     # term -> column of the incidence matrices below
    title_matrix: object = None             # scipy CSC (items x terms), 1 where the title has the term
    text_matrix: object = None

    def index_terms(self) -> None:
        """Term incidence matrices (postings by term), so that the coverage of many rows costs the
        query terms' postings, not a loop over rows."""
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
        self.terms = vocab
        self.title_matrix, self.text_matrix = matrix(self.title_terms).tocsc(), matrix(self.text_terms).tocsc()

    def coverage(self, matrix, columns: list[int], rows: np.ndarray) -> np.ndarray:
        """How many of the terms in `columns` each row has."""
        counts = np.zeros(matrix.shape[0], dtype=np.float32)
        for c in columns:
            counts[matrix.indices[matrix.indptr[c]:matrix.indptr[c + 1]]] += 1.0
        return counts[rows]

    def rows(self, item_ids: Sequence[str]) -> np.ndarray:
        missing = [i for i in item_ids if i not in self.position]
        if missing:
            raise RelkitError(f"{len(missing)} item(s) are not in the workspace catalog, e.g. {missing[:3]}")
        return np.fromiter((self.position[i] for i in item_ids), dtype=np.int64, count=len(item_ids))


class FeatureBuilder:
    """Builds features for any (query, item) pairs of a workspace's catalog.

    >>> fb = FeatureBuilder.from_workspace(ws)                         # doctest: +SKIP
    >>> f = fb.pairs(["red chair"], ["item-1"]); f.pair.shape           # doctest: +SKIP
    (1, 6)
    """

    def __init__(self, config: FeatureConfig, items: ItemTable, bm25=None, encoder: Encoder | None = None,
                 query_engagement: dict | None = None):
        self.config = config
        self.items = items
        self.bm25 = bm25
        self._encoder = encoder
        self.query_engagement = query_engagement or {}
        self.stemmer = stemmer()
        self.global_rates = (0.0, 0.0)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_workspace(cls, ws: Workspace, config: FeatureConfig | None = None, encoder: Encoder | None = None,
                       image_encoder=None) -> "FeatureBuilder":
        config = config or FeatureConfig()
        cols = ", ".join(ITEM_RECORD_COLUMNS)
        rows = ws.fetchall(f"SELECT {cols} FROM item_records ORDER BY item_id")
        if not rows:
            raise RelkitError("the workspace has no items: import judgments or a catalog first")
        records = [dict(zip(ITEM_RECORD_COLUMNS, r)) for r in rows]
        item_ids = [r["item_id"] for r in records]
        texts = [item_text(r, DEFAULT_TEMPLATE) for r in records]
        vectors = None
        if "embedding" in config.groups:
            vectors = cached_vectors(ws, config.encoder, texts, encoder)
        items = ItemTable(item_ids, {i: n for n, i in enumerate(item_ids)}, texts, vectors,
                          np.zeros((len(item_ids), 0), dtype=np.float32))
        if "text_match" in config.groups:
            stem = stemmer()
            items.title_terms = [frozenset(stem_tokens(stem, r["title"] or "")) for r in records]
            items.text_terms = [frozenset(stem_tokens(stem, t)) for t in texts]
            items.phrases = [phrase(t) for t in texts]
            items.index_terms()
        bm25 = None
        if "bm25" in config.groups:
            from relkit.features.bm25 import BM25Index

            bm25 = BM25Index(item_ids, texts)
        query_engagement: dict = {}
        builder = cls(config, items, bm25, encoder, query_engagement)
        if "engagement" in config.groups:
            builder._load_engagement(ws)
        if "graph" in config.groups:
            from relkit.features.graph import item_graph_vectors

            vectors, key = item_graph_vectors(ws, item_ids, config.graph_dim, config.graph_key)
            items.extra = np.concatenate([items.extra, vectors], axis=1)
            builder.config = replace(builder.config, graph_key=key)
        if "visual" in config.groups:
            from relkit.features.images import ImageEncoder, item_image_vectors

            image_encoder = image_encoder or ImageEncoder(config.image_encoder)
            vectors, has = item_image_vectors(ws, [r["image"] for r in records], image_encoder)
            if config.image_dim is not None and config.image_dim != vectors.shape[1]:
                raise RelkitError(f"the image encoder '{config.image_encoder}' gives {vectors.shape[1]} values, the "
                                  f"model was trained on {config.image_dim}")
            items.extra = np.concatenate([items.extra, vectors, has[:, None]], axis=1)
            builder.config = replace(builder.config, image_dim=int(vectors.shape[1]))
        return builder

    def _load_engagement(self, ws: Workspace) -> None:
        totals = ws.fetchone("SELECT sum(impressions), sum(clicks), sum(saves) FROM engagement")
        impressions, clicks, saves = (float(x or 0) for x in totals)
        g_ctr = clicks / impressions if impressions else 0.0
        g_save = saves / impressions if impressions else 0.0
        self.global_rates = (g_ctr, g_save)
        prior = self.config.ctr_prior
        per_item = np.zeros((len(self.items.item_ids), 3), dtype=np.float64)
        for item_id, i, c, s in ws.fetchall("SELECT item_id, sum(impressions), sum(clicks), sum(saves) "
                                            "FROM engagement GROUP BY item_id"):
            row = self.items.position.get(item_id)
            if row is not None:
                per_item[row] = (i, c, s)
        self.items.extra = _rates(per_item[:, 0], per_item[:, 1], per_item[:, 2], prior, g_ctr, g_save)
        for query, item_id, i, c, s in ws.fetchall(
                "SELECT lower(trim(query)), item_id, sum(impressions), sum(clicks), sum(saves) "
                "FROM engagement GROUP BY ALL"):
            rates = _rates(np.array([i], float), np.array([c], float), np.array([s], float), prior, g_ctr, g_save)
            row = self.items.position.get(item_id)
            if row is not None:
                self.query_engagement.setdefault(query, {})[row] = rates[0]

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = Encoder(self.config.encoder)
        return self._encoder

    # -- layout -------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return 0 if self.items.vectors is None else self.items.vectors.shape[1]

    def pair_names(self) -> list[str]:
        names = []
        groups = self.config.groups
        if "embedding" in groups:
            names.append("cosine")
        if "bm25" in groups:
            names += ["bm25", "log1p_bm25"]
        if "text_match" in groups:
            names += list(TEXT_MATCH_NAMES)
        if "engagement" in groups:
            names += list(ENGAGEMENT_PAIR)
        return names

    def item_extra_blocks(self) -> list[tuple[str, int]]:
        """(name, width) of the item-only blocks, the columns of `items.extra` in order."""
        out = [(name, 1) for name in ENGAGEMENT_ITEM] if "engagement" in self.config.groups else []
        out += [("item_graph", self.config.graph_dim)] if "graph" in self.config.groups else []
        if "visual" in self.config.groups:
            out += [("item_image", self.config.image_dim or 0), ("has_image", 1)]
        return out

    def item_extra_width(self) -> int:
        return sum(width for _, width in self.item_extra_blocks())

    def blocks(self) -> list[tuple[str, int]]:
        """The model input, in order: (name, width) of each block."""
        d = self.dim
        out = [("query_vector", d), ("item_vector", d), ("query_item_product", d)] if d else []
        out += self.item_extra_blocks()
        out += [(name, 1) for name in self.pair_names()]
        return out

    # -- features -----------------------------------------------------------------------------
    def query_vectors(self, queries: Sequence[str], bar: bool = False) -> np.ndarray:
        if not self.dim:
            return np.zeros((len(queries), 0), dtype=np.float32)
        return self.encoder.encode(list(queries), bar)

    def pairs(self, queries: Sequence[str], item_ids: Sequence[str]) -> PairFeatures:
        """Features of the pairs (queries[i], item_ids[i])."""
        if len(queries) != len(item_ids):
            raise RelkitError("pairs: as many queries as items are needed")
        distinct = list(dict.fromkeys(queries))
        index = {q: n for n, q in enumerate(distinct)}
        query_index = np.fromiter((index[q] for q in queries), dtype=np.int64, count=len(queries))
        item_rows = self.items.rows(item_ids)
        vectors = self.query_vectors(distinct, bar=True)
        pair = np.zeros((len(queries), len(self.pair_names())), dtype=np.float32)
        for n, query in enumerate(distinct):
            sel = np.flatnonzero(query_index == n) if len(distinct) > 1 else np.arange(len(queries))
            pair[sel] = self.pair_scalars(query, vectors[n] if self.dim else None, item_rows[sel])
        return PairFeatures(vectors, query_index, item_rows, pair)

    def inline_items(self, records: Sequence[dict]) -> ItemTable:
        """An ItemTable for items that are not in the catalog (records with at least a title; an
        `item_id` is optional): their vectors are encoded now and not cached, item-level engagement,
        graph and image vectors are zero, BM25 uses the catalog's statistics."""
        texts = [item_text(r, DEFAULT_TEMPLATE) for r in records]
        ids = [str(r.get("item_id") or f"inline-{n}") for n, r in enumerate(records)]
        vectors = self.encoder.encode(texts) if self.dim and texts else (
            np.zeros((len(texts), self.dim), dtype=np.float32) if self.dim else None)
        table = ItemTable(ids, {i: n for n, i in enumerate(ids)}, texts, vectors,
                          np.zeros((len(texts), self.item_extra_width()), dtype=np.float32))
        if "text_match" in self.config.groups:
            table.title_terms = [frozenset(stem_tokens(self.stemmer, item_title(r))) for r in records]
            table.text_terms = [frozenset(stem_tokens(self.stemmer, t)) for t in texts]
            table.phrases = [phrase(t) for t in texts]
        return table

    def pair_scalars(self, query: str, query_vector: np.ndarray | None, rows: np.ndarray,
                     items: ItemTable | None = None, cosine: bool = True) -> np.ndarray:
        """(len(rows), s) pair scalars of one query against rows of the catalog (or of `items`, an
        inline_items table): the per-candidate work. `cosine=False` leaves out the cosine column
        (the fast scorer folds it into its query matrix)."""
        inline = items is not None
        items = items if inline else self.items
        cols = []
        groups = self.config.groups
        if "embedding" in groups and cosine:
            cols.append(items.vectors[rows] @ query_vector)
        if "bm25" in groups:
            if inline:
                bm = self.bm25.score_texts(query, [items.texts[r] for r in rows])
            else:
                tokens = self.bm25.tokens(query)
                bm = self.bm25.retriever.get_scores(tokens)[rows] if tokens else np.zeros(len(rows))
            bm = bm.astype(np.float32)
            cols += [bm, np.log1p(bm)]
        if "text_match" in groups:
            terms = set(stem_tokens(self.stemmer, query))
            n = max(len(terms), 1)
            if items.terms is not None:     # catalog rows: sparse incidence (a term not in it matches nothing)
                columns = [items.terms[t] for t in terms if t in items.terms]
                title = items.coverage(items.title_matrix, columns, rows) / n
                text = items.coverage(items.text_matrix, columns, rows) / n
            else:
                title = np.fromiter((len(terms & items.title_terms[r]) / n for r in rows), np.float64, len(rows))
                text = np.fromiter((len(terms & items.text_terms[r]) / n for r in rows), np.float64, len(rows))
            cols += [title.astype(np.float32), text.astype(np.float32)]
            whole = phrase(query)
            exact = np.zeros(len(rows), dtype=np.float32)
            if whole.strip():
                # the whole query can only be in a text that has every one of its terms
                for i in np.flatnonzero(text >= 1.0 - 1e-6) if terms else range(len(rows)):
                    exact[i] = whole in items.phrases[rows[i]]
            cols.append(exact)
        if "engagement" in groups:
            rates = np.zeros((len(rows), 3), dtype=np.float32)
            by_row = {} if inline else self.query_engagement.get(query.strip().lower(), {})
            if by_row:
                for i, r in enumerate(rows.tolist()):
                    if r in by_row:
                        rates[i] = by_row[r]
            cols.extend(rates.T)
        if not cols:
            return np.zeros((len(rows), 0), dtype=np.float32)
        return np.stack(cols, axis=1).astype(np.float32)

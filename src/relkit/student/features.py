"""The student's features: one code path for training, evaluation and serving.

Features come in four blocks, laid out so a scorer can split the work by what it depends on:

- query vectors (the bi-encoder's embedding of the query): computed once per query;
- item vectors (the bi-encoder's embedding of the item text, cached in the workspace table
  `text_vectors`) and item extras (item-level engagement rates, the item's graph and image
  embeddings): computed once per item;
- the query-item product of the two vectors: computed from the two above;
- pair scalars (cosine, bm25, text match, query-item engagement): computed per candidate.

Every block has a name and a width (`FeatureBuilder.blocks`); a saved student records them and its
`FeatureConfig` (among it the tokenization bm25 and text_match read texts with, and the bi-encoder),
and refuses a builder whose blocks or config differ. The bi-encoder is the workspace's (`relkit init
--encoder`): features on another one are refused when built (`check_encoder`), so a student made
before the workspace's encoder changed must be distilled again.

Groups (`FeatureConfig.groups`; each a class in groups.py, named in its `REGISTRY`):
  embedding   query and item vectors, their product, their cosine
  bm25        BM25 of the query against the item text (catalog statistics), and its log1p
  text_match  the share of the query's terms in the title and in the whole item text, and whether
              the whole query appears in the text as a phrase
  engagement  smoothed click-through and save rates and log impressions, per item and per
              (query, item); zero where there is no log
  graph       the item's embedding from co-engagement, `graph_dim` wide. Not in the default
              groups: it needs an engagement log with clicks
  visual      the item's image embedding and whether it has a readable image. Not in the default groups
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from relkit.errors import RelkitError
from relkit.features.embeddings import WORKSPACE_ENCODER, Encoder, check_encoder, workspace_encoder
from relkit.features.images import DEFAULT_IMAGE_ENCODER
from relkit.student.groups import REGISTRY, BM25, Catalog, Embedding, FeatureGroup
from relkit.text import DEFAULT_TEMPLATE, item_text
from relkit.tokenization import DEFAULT_TOKENIZATION, LEGACY_TOKENIZATION, TOKENIZATIONS
from relkit.workspace import ITEM_RECORD_COLUMNS, Workspace

GROUPS = tuple(REGISTRY)
DEFAULT_GROUPS = ("embedding", "bm25", "text_match", "engagement")


@dataclass(frozen=True)
class FeatureConfig:
    encoder: str = WORKSPACE_ENCODER  # bi-encoder for query and item vectors: the workspace's (set when built)
    groups: tuple[str, ...] = DEFAULT_GROUPS
    ctr_prior: float = 20.0           # pseudo-impressions pulling a rate toward the global rate
    graph_dim: int = 32               # width of the item graph embedding
    graph_key: str | None = None      # the stored graph embedding a model was trained with (set when built)
    image_encoder: str = DEFAULT_IMAGE_ENCODER   # for the visual group (path or hub id)
    image_dim: int | None = None      # its embedding width (set when built)
    # how bm25 and text_match cut texts into terms (relkit.tokenization): each text in its language
    tokenization: str = DEFAULT_TOKENIZATION

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(self.groups))
        unknown = [g for g in self.groups if g not in REGISTRY]
        if unknown or not self.groups:
            raise RelkitError(f"unknown feature group(s) {unknown or '(none given)'}; choose from {', '.join(REGISTRY)}")
        if self.tokenization not in TOKENIZATIONS:
            raise RelkitError(f"unknown tokenization '{self.tokenization}'; choose from {', '.join(TOKENIZATIONS)}")
        if self.ctr_prior <= 0:
            raise RelkitError("ctr_prior must be positive")
        if self.graph_dim < 1:
            raise RelkitError("graph_dim must be at least 1")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["groups"] = list(self.groups)
        return d

    @classmethod
    def from_dict(cls, saved: dict) -> "FeatureConfig":
        """The config a model saved (`to_dict`). One saved before tokenizations had names was made with
        English tokenization, and keeps it.

        >>> FeatureConfig.from_dict({"groups": ["bm25"]}).tokenization
        'english'
        """
        return cls(**{"tokenization": LEGACY_TOKENIZATION, **saved})


def grouped(index: np.ndarray):
    """(value, positions) for each distinct value of `index`, smallest value first, positions
    ascending: one stable sort, rather than a scan of every position per value.

    >>> [(v, p.tolist()) for v, p in grouped(np.array([2, 0, 2, 1, 0]))]
    [(0, [1, 4]), (1, [3]), (2, [0, 2])]
    """
    index = np.asarray(index)
    if not len(index):
        return
    order = np.argsort(index, kind="stable")
    ordered = index[order]
    cuts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    for start, stop in zip(np.r_[0, cuts], np.r_[cuts, len(index)]):
        yield int(ordered[start]), order[start:stop]


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


@dataclass
class ItemTable:
    """The items features are computed for, in order: the whole catalog (in item id order), or items
    given by their fields (`inline`). `vectors` and `extra` are the item blocks of the model input;
    `state` holds each group's per-item data for inline items (the catalog's lives in the groups)."""

    item_ids: list[str]
    position: dict[str, int]
    texts: list[str]
    vectors: np.ndarray | None             # (items, d) unit vectors, or None without `embedding`
    extra: np.ndarray                      # (items, e) the groups' item-only columns
    inline: bool = False
    state: dict[str, object] = field(default_factory=dict)

    def rows(self, item_ids: Sequence[str]) -> np.ndarray:
        missing = [i for i in item_ids if i not in self.position]
        if missing:
            raise RelkitError(f"{len(missing)} item(s) are not in the workspace catalog, e.g. {missing[:3]}")
        return np.fromiter((self.position[i] for i in item_ids), dtype=np.int64, count=len(item_ids))


class FeatureBuilder:
    """Builds features for any (query, item) pairs of a workspace's catalog: its groups (groups.py)
    indexed once, laid out in blocks (`blocks`).

    In a workspace with the shop's catalog (`ws`):

        fb = FeatureBuilder.from_workspace(ws, FeatureConfig(groups=("bm25", "text_match")))
        fb.pairs(["red chair"], ["red-chair"]).pair     # bm25, log1p_bm25, title/text coverage, phrase
    """

    def __init__(self, config: FeatureConfig, items: ItemTable, groups: Sequence[FeatureGroup],
                 encoder: Encoder | None = None):
        self.config = config
        self.items = items
        self.groups = list(groups)
        self._encoder = encoder

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_workspace(cls, ws: Workspace, config: FeatureConfig | None = None, encoder: Encoder | None = None,
                       image_encoder=None) -> "FeatureBuilder":
        config = config or FeatureConfig()
        config = replace(config, encoder=workspace_encoder(ws, config.encoder))
        if "embedding" in config.groups:   # one encoder per workspace: its vectors, its ONNX export
            check_encoder(ws, config.encoder, "features on the bi-encoder")
        cols = ", ".join(ITEM_RECORD_COLUMNS)
        rows = ws.fetchall(f"SELECT {cols} FROM item_records ORDER BY item_id")
        if not rows:
            raise RelkitError("the workspace has no items: import judgments or a catalog first")
        records = [dict(zip(ITEM_RECORD_COLUMNS, r)) for r in rows]
        item_ids = [r["item_id"] for r in records]
        position = {i: n for n, i in enumerate(item_ids)}
        texts = [item_text(r, DEFAULT_TEMPLATE) for r in records]
        catalog = Catalog(ws, config, records, item_ids, position, texts, encoder, image_encoder)
        groups = [group.build(catalog) for name, group in REGISTRY.items() if name in config.groups]
        for group in groups:
            config = replace(config, **group.settings())
        extra = np.concatenate([np.zeros((len(item_ids), 0), dtype=np.float32),
                                *(g.item_columns() for g in groups if g.item_blocks())], axis=1)
        vectors = next((g.vectors for g in groups if isinstance(g, Embedding)), None)
        return cls(config, ItemTable(item_ids, position, texts, vectors, extra), groups, encoder)

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = Encoder(self.config.encoder)
        return self._encoder

    @property
    def bm25(self):
        """The catalog's BM25 index (relkit.features.bm25.BM25Index), or None without the bm25 group."""
        return next((g.index for g in self.groups if isinstance(g, BM25)), None)

    # -- layout -------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return 0 if self.items.vectors is None else self.items.vectors.shape[1]

    def pair_names(self) -> list[str]:
        return [name for group in self.groups for name in group.pair_names]

    def item_extra_blocks(self) -> list[tuple[str, int]]:
        """(name, width) of the item-only blocks, the columns of `items.extra` in order."""
        return [block for group in self.groups for block in group.item_blocks()]

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
        return self.encoder.encode_queries(list(queries), bar)

    def pairs(self, queries: Sequence[str], item_ids: Sequence[str]) -> PairFeatures:
        """Features of the pairs (queries[i], item_ids[i])."""
        if len(queries) != len(item_ids):
            raise RelkitError("pairs: as many queries as items are needed")
        distinct = list(dict.fromkeys(queries))
        index = {q: n for n, q in enumerate(distinct)}
        query_index = np.fromiter((index[q] for q in queries), dtype=np.int64, count=len(queries))
        item_rows = self.items.rows(item_ids)
        vectors = self.query_vectors(distinct, bar=True)
        return PairFeatures(vectors, query_index, item_rows, self.pair_block(distinct, vectors, query_index, item_rows))

    def pair_block(self, queries: Sequence[str], vectors: np.ndarray, query_index: np.ndarray,
                   item_rows: np.ndarray) -> np.ndarray:
        """(n, s) pair scalars of the pairs (queries[query_index[j]], catalog row item_rows[j]):
        `pair_scalars` once per distinct query, its rows found with one sort of `query_index`."""
        pair = np.zeros((len(item_rows), len(self.pair_names())), dtype=np.float32)
        for n, rows in grouped(query_index):
            pair[rows] = self.pair_scalars(queries[n], vectors[n] if self.dim else None, item_rows[rows])
        return pair

    def inline_items(self, records: Sequence[dict]) -> ItemTable:
        """An ItemTable for items that are not in the catalog (records with at least a title; an
        `item_id` is optional): their vectors are encoded now and not cached, item-level engagement,
        graph and image vectors are zero, BM25 uses the catalog's statistics."""
        texts = [item_text(r, DEFAULT_TEMPLATE) for r in records]
        ids = [str(r.get("item_id") or f"inline-{n}") for n, r in enumerate(records)]
        vectors = self.encoder.encode(texts) if self.dim and texts else (
            np.zeros((len(texts), self.dim), dtype=np.float32) if self.dim else None)
        return ItemTable(ids, {i: n for n, i in enumerate(ids)}, texts, vectors,
                         np.zeros((len(texts), self.item_extra_width()), dtype=np.float32), inline=True,
                         state={g.name: g.index_inline(records, texts) for g in self.groups})

    def pair_scalars(self, query: str, query_vector: np.ndarray | None, rows: np.ndarray,
                     items: ItemTable | None = None, cosine: bool = True, language: str | None = None) -> np.ndarray:
        """(len(rows), s) pair scalars of one query against rows of the catalog (or of `items`, an
        inline_items table): the per-candidate work. `cosine=False` leaves out the cosine column
        (the fast scorer folds it into its query matrix). `language`: the query's ISO 639-1 code,
        which bm25 and text_match read it in (None: detected among the catalog's languages)."""
        items = self.items if items is None else items
        cols = [column for group in self.groups if cosine or not isinstance(group, Embedding)
                for column in (group.pair_columns(query, query_vector, items, rows, language=language)
                               if group.reads_language else group.pair_columns(query, query_vector, items, rows))]
        if not cols:
            return np.zeros((len(rows), 0), dtype=np.float32)
        return np.stack(cols, axis=1).astype(np.float32)

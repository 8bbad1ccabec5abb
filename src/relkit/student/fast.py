"""Scoring candidates with a student in numpy, splitting the first layer by what each part depends on.

The first layer is linear in the input blocks [q, i, q*i, item extras, cosine, other pair scalars]
(after the standardisation, which folds into its weights), and the cosine is q.i, so

    W x + b = (Wq q + b) + (Wi + (Wp + wc 1^T) diag(q)) i + We e + Ws s

- `Wq q + b` and the matrix `A = Wi + (Wp + wc 1^T) diag(q)` depend on the query only: computed once
  per query;
- `We e` depends on the item only: computed once per item when the scorer is built;
- per candidate there is one product `i A^T` (d x hidden), the other pair scalars `s` and the upper
  layers.

A student trained with `product_rank` r has Wp = U R of rank r, so `Wp + wc 1^T` = U' R' with rank
r + 1 (factored here by SVD, exactly up to rounding). Then `Wi i + We e` is computed once per item
(an items x hidden table) and per candidate there is `(R' diag(q)) i` (d x (r+1)) and its product
with U' ((r+1) x hidden): for r = 32, hidden 128, a third of the multiply-adds.

No torch is imported. The output equals `Student.predict_proba` on the same pairs (tested).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from relkit.errors import RelkitError
from relkit.student.features import FeatureBuilder
from relkit.student.model import Student, softmax


@dataclass(frozen=True, slots=True)
class Scored:
    """One item of a ranking: `score` is the expected gain under the level `probabilities` (the
    scale's K levels, lowest first, rounded to 6 decimals), `level` the student's level (1..K: its
    expected level cut at the cutpoints fit on dev, the most probable level for a student without
    cutpoints), `inline` whether the item was given by its fields rather than by a catalog id."""

    item_id: str
    score: float
    level: int
    probabilities: tuple[float, ...]
    inline: bool = False

    def __post_init__(self):
        if not 1 <= self.level <= len(self.probabilities):
            raise ValueError(f"level {self.level} is not among the {len(self.probabilities)} levels of {self.item_id!r}")


class FastScorer:
    """A student's level probabilities for a query's candidates, in numpy (see the module's notes).

        scorer = FastScorer(Student.load(path), builder)
        scorer.score("red chair", ["item-1", "item-2"])       # (2, K)
        scorer.rank("red chair", ["item-1", "item-2"])        # [Scored(...), ...] best first
    """

    def __init__(self, student: Student, builder: FeatureBuilder):
        student.check_builder(builder)
        self.student, self.builder = student, builder
        self.gains = np.asarray(student.scale.gains, dtype=np.float64)
        w0, b0 = student.layers[0]
        mean, std = student.weights["mean"], student.weights["std"]
        w = (w0 / std).astype(np.float32)                  # standardisation folded in
        self.bias = (b0 - w @ mean).astype(np.float32)
        d = builder.dim
        e = builder.item_extra_width()
        self.d = d
        pair = 3 * d + e                          # first pair-scalar column; the cosine when d > 0
        if d:
            self.w_query, self.w_item = w[:, :d], w[:, d:2 * d]
            self.w_product = w[:, 2 * d:3 * d] + w[:, pair:pair + 1]             # cosine folded in
            pair += 1
        self.w_pair = np.ascontiguousarray(w[:, pair:].T)                         # (s, hidden)
        self.w_extra = w[:, 3 * d:3 * d + e]
        self.item_part = (builder.items.extra @ self.w_extra.T).astype(np.float32) if e else None
        self.upper = [(np.ascontiguousarray(wt.T), bt) for wt, bt in student.layers[1:]]
        rank = int(student.meta.config.get("product_rank") or 0)
        self.factors = None
        if d and rank and rank + 1 < min(self.w_product.shape):
            u, sv, vt = np.linalg.svd(self.w_product.astype(np.float64), full_matrices=False)
            k = rank + 1
            self.factors = (np.ascontiguousarray((u[:, :k] * sv[:k]).T, dtype=np.float32),     # (k, hidden)
                            np.ascontiguousarray(vt[:k], dtype=np.float32))                  # (k, d)
            # the item-only terms of the first layer, once per catalog item
            part = builder.items.vectors @ self.w_item.T
            self.item_part = (part if self.item_part is None else part + self.item_part).astype(np.float32)
        elif d:
            # OpenBLAS (0.3.31 here) runs `i A^T` about 2x slower (6.4 vs 2.8 ms for 1,000 x 384 x 128
            # on one core) until the process has once computed a product of this size the other way
            # round; one such product now costs ~3 ms and keeps every later query on the fast path
            self.w_item @ builder.items.vectors[:1024].T

    def query_part(self, query_vector: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """(base, A): the first layer's query-only terms; A is (hidden, d), or (r+1, d) for a
        low-rank student (R' diag(q))."""
        if not self.d:
            return self.bias, None
        base = self.w_query @ query_vector + self.bias
        if self.factors is not None:
            return base, self.factors[1] * query_vector[None, :]
        return base, self.w_item + self.w_product * query_vector[None, :]

    def score_rows(self, query: str, rows: np.ndarray, query_vector: np.ndarray | None = None,
                   items=None, language: str | None = None) -> np.ndarray:
        """(len(rows), K) level probabilities of catalog rows for `query` (or of rows of `items`, a
        `FeatureBuilder.inline_items` table). Pass `query_vector` when the query's embedding is
        known (cached); otherwise it is encoded here. `language` is the query's ISO 639-1 code
        (BM25 and text matching read the query in it); None: detected among the catalog's languages."""
        if self.d and query_vector is None:
            query_vector = self.builder.query_vectors([query])[0]
        base, a = self.query_part(query_vector)
        pair = self.builder.pair_scalars(query, query_vector, rows, items, cosine=False, language=language)
        h = pair @ self.w_pair + base
        if a is not None:
            vectors = (self.builder.items if items is None else items).vectors[rows]
            if self.factors is None:
                h += vectors @ a.T            # (hidden, d) A C-contiguous, on the fast path set up in __init__
            else:
                h += (vectors @ a.T) @ self.factors[0]
                if items is not None:         # inline items: their item terms now
                    h += vectors @ self.w_item.T
        if self.item_part is not None and items is None:
            h += self.item_part[rows]         # inline items have no item-level engagement: zero
        for w_t, b in self.upper:
            h = np.maximum(h, 0.0, out=h) @ w_t
            h += b
        return softmax(h)

    def score(self, query: str, item_ids: Sequence[str], query_vector: np.ndarray | None = None) -> np.ndarray:
        return self.score_rows(query, self.builder.items.rows(item_ids), query_vector)

    def rank(self, query: str, items: Sequence[str | Mapping], top_k: int | None = None,
             query_vector: np.ndarray | None = None, language: str | None = None) -> list[Scored]:
        """`items` best first for `query` (the first `top_k` of them when given). An item is a
        catalog id, or a record of an item outside the catalog (`title` required; `description`,
        `board_titles`, `link_title`, `link_description` and `item_id` optional, the id
        `inline-N` by its position in `items` otherwise). A catalog id given twice is ranked once;
        an id not in the catalog raises RelkitError. Ties keep the order of `items`, catalog ids
        before records. `language` is the query's ISO 639-1 code ('de'), which BM25 and text
        matching stem it in; None: the most probable of the catalog's languages. This is what
        `relkit serve` answers for `POST /v1/rerank` (`language`: the request's Content-Language).

            scorer = FastScorer(Student.load(path), builder)
            for hit in scorer.rank("red chair", ["item-1", "item-2", {"title": "Red oak chair"}], top_k=2):
                print(hit.item_id, hit.score, hit.level)
        """
        ids = list(dict.fromkeys(i for i in items if isinstance(i, str)))
        records = [dict(r, item_id=str(r.get("item_id") or f"inline-{n}"))
                   for n, r in enumerate(items) if not isinstance(r, str)]
        if top_k is not None and top_k < 1:
            raise RelkitError(f"top_k must be at least 1 (or None for all); got {top_k}")
        if self.d and query_vector is None and (ids or records):
            query_vector = self.builder.query_vectors([query])[0]
        parts = []
        if ids:
            parts.append(self.score_rows(query, self.builder.items.rows(ids), query_vector, language=language))
        if records:
            table = self.builder.inline_items(records)
            parts.append(self.score_rows(query, np.arange(len(records)), query_vector, items=table, language=language))
        if not parts:
            return []
        proba = np.concatenate(parts)
        names = ids + [r["item_id"] for r in records]
        scores = proba @ self.gains
        order = np.argsort(-scores, kind="stable")[:top_k]
        levels = self.student.predict_levels(proba[order]).tolist()
        probabilities = np.round(proba[order].astype(np.float64), 6).tolist()
        return [Scored(names[i], score, level, tuple(p), i >= len(ids))
                for i, score, level, p in zip(order.tolist(), scores[order].tolist(), levels, probabilities)]


def measure_speed(student: Student, builder: FeatureBuilder, queries: Sequence[str], candidates: int = 1000,
                  repeats: int = 3) -> dict:
    """Milliseconds the fast scorer takes to score `candidates` catalog items (or the whole catalog
    when smaller) for each of `queries`, the query's embedding known (as the service's cache has
    it): p50 and p99 over queries x repeats, on this machine."""
    import time

    scorer = FastScorer(student, builder)
    rows = np.arange(min(candidates, len(builder.items.item_ids)))
    vectors = builder.query_vectors(list(queries)) if builder.dim else [None] * len(queries)
    times = []
    for query, vector in zip(queries, vectors):
        for _ in range(repeats):
            start = time.perf_counter()
            scorer.score_rows(query, rows, vector)
            times.append((time.perf_counter() - start) * 1000)
    return {"candidates": int(len(rows)), "queries": len(queries), "p50_ms": float(np.percentile(times, 50)),
            "p99_ms": float(np.percentile(times, 99))}

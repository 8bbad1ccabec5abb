"""Adapters that read public relevance datasets as they are published.

Each maps the file's columns onto relkit's fields and its raw labels onto the workspace scale.

- `homedepot`: Kaggle "Home Depot Product Search Relevance" (2016) train file: `search_term` ->
  query, `product_uid` -> item_id, `product_title` -> title, `relevance` (mean of raters on
  1..3) -> level `floor(2 * (relevance - 1) + 0.5) + 1`, i.e. round(2 * (relevance - 1)) with
  halves rounded up, giving levels 1..5: 1 -> 1; 1.25, 1.33, 1.5, 1.67 -> 2; 1.75, 2 -> 3;
  2.25, 2.33, 2.5, 2.67 -> 4; 2.75, 3 -> 5. Needs a 5-level workspace. A few
  products appear with two titles (the catalog changed while raters worked): the first one wins.
  Queries that differ only in spacing are one query (one such pair, 'slide bolt', judged the
  same product twice): repeated judgments merge as for crowdflower.
- `crowdflower`: Kaggle "Crowdflower Search Results Relevance" (2015) train file: `query`,
  `product_title` -> title, `product_description` -> description, `median_relevance` 1..4 ->
  level 1..4. Products have no id: relkit derives one from title and description. Needs a
  4-level workspace (`relkit init DIR --levels 4`). 108 rows repeat a (query, product) pair,
  33 of them with another label: each pair becomes one judgment whose label is the mean of the
  listed ones, halves rounded up.

- `xquad-r`: XQuAD-R (LAReQA) at paragraph level, one JSON object a line (gzipped or not): `qid`
  -> query_id, `query`, `doc_id` -> item_id, `doc` (the paragraph) -> description, `lang` ->
  language (of the question and of the paragraph), `label` 1 (the paragraph the question was
  written on) or 0 (another paragraph of the article) -> level 2 or 1, `title` (the Wikipedia
  article's, the same for a question's five paragraphs) -> `article` in the judgment's `extra`
  (items have no title). Without `lang`, languages are detected. Needs a 2-level workspace.
- `multicpr`: the Multi-CPR e-commerce set (Chinese product search) in the same JSON shape: `doc`
  is the product's title; `label` 1 (the product people matched to the query) or 0 (a random
  product) -> level 2 or 1. Needs a 2-level workspace.

Every other column (`id`, `relevance_variance`, `label_kind`) is kept in the judgment's `extra`.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from relkit.errors import RelkitError
from relkit.scale import LabelScale


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _number(raw: object) -> float | None:
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _binary(raw: float) -> int | None:
    """Labels 0 and 1 -> levels 1 and 2."""
    return int(raw) + 1 if float(raw).is_integer() else None


@dataclass(frozen=True)
class Adapter:
    name: str
    kind: str
    levels: int
    columns: dict[str, str]          # file column -> relkit field
    label_rule: str                  # said in errors about labels
    to_level: Callable[[float], int]
    low: float
    high: float
    optional: frozenset[str] = frozenset()   # columns of `columns` a file may lack
    encoding: str = "utf-8"
    item_conflicts: str = "error"    # 'first': a repeated item keeps its first description
    merge_label: Callable[[list[int]], int] | None = None  # repeated pairs: one label from several

    def label(self, raw: object) -> int | None:
        value = _number(raw)
        if value is None or not self.low <= value <= self.high:
            return None
        return self.to_level(value)

    def check_scale(self, scale: LabelScale) -> None:
        if scale.k != self.levels:
            raise RelkitError(f"--format {self.name} gives {self.levels} levels, but this workspace's scale has "
                              f"{scale.k}; create a workspace for it with `relkit init DIR --levels {self.levels}`")


ADAPTERS: dict[str, Adapter] = {
    "homedepot": Adapter(
        name="homedepot", kind="judgments", levels=5,
        columns={"search_term": "query", "product_uid": "item_id", "product_title": "title", "relevance": "label"},
        label_rule="homedepot relevance is a number from 1 to 3",
        to_level=lambda r: round_half_up(2 * (r - 1)) + 1, low=1.0, high=3.0,
        item_conflicts="first", merge_label=lambda labels: round_half_up(sum(labels) / len(labels)),
    ),
    "crowdflower": Adapter(
        name="crowdflower", kind="judgments", levels=4,
        columns={"query": "query", "product_title": "title", "product_description": "description",
                 "median_relevance": "label"},
        label_rule="crowdflower median_relevance is a whole number from 1 to 4",
        to_level=lambda r: int(r) if float(r).is_integer() else None, low=1.0, high=4.0,  # type: ignore[return-value]
        merge_label=lambda labels: round_half_up(sum(labels) / len(labels)),
    ),
    "xquad-r": Adapter(
        name="xquad-r", kind="judgments", levels=2,
        columns={"qid": "query_id", "query": "query", "doc_id": "item_id", "doc": "description", "lang": "language",
                 "label": "label", "title": "article"},
        label_rule="xquad-r label is 1 (the question's paragraph) or 0 (another paragraph)",
        to_level=_binary, low=0.0, high=1.0, optional=frozenset({"lang", "title"}),
    ),
    "multicpr": Adapter(
        name="multicpr", kind="judgments", levels=2,
        columns={"qid": "query_id", "query": "query", "doc_id": "item_id", "doc": "title", "lang": "language",
                 "label": "label"},
        label_rule="multicpr label is 1 (the product people matched) or 0 (a random product)",
        to_level=_binary, low=0.0, high=1.0, optional=frozenset({"lang"}),
    ),
}

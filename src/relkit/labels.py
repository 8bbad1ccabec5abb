"""The label store: people's judgments of a split, and the soft labels that teachers and judges
give (K probabilities per pair), kept as Parquet shards under labels/NAME in the workspace and
read with DuckDB through the view `teacher_labels` (columns teacher, query_id, item_id, p1..pK,
expected_level; a judge's shards add its model, prompt hash and answer).

A shard exists whole or not at all: it is written to a temporary name and renamed when complete,
so a run killed at any moment leaves whole shards and at most stray temporary files, which the
next run removes with `clear_strays`.

    refresh_view(ws)
    ws.fetchall("SELECT teacher, count(*) FROM teacher_labels GROUP BY 1")
    for batch in label_batches(ws, "demo"):    # pyarrow record batches, one shard at a time
        ...
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from relkit.errors import RelkitError
from relkit.text import ItemTextTemplate, item_text
from relkit.workspace import ITEM_RECORD_COLUMNS, SPLITS, Workspace

LABELS_DIR = "labels"
VIEW = "teacher_labels"
PENDING = "pending-input.parquet"   # a labeling run's input: removed when the run ends, a stray if it was killed
JUDGE_PREFIX = "judge:"             # a judge's labels are the teacher labels of `judge:NAME`, in labels/judge-NAME


# --- people's judgments ------------------------------------------------------------------------

@dataclass(frozen=True)
class JudgedPairs:
    """The judged (query, item) pairs of one split, in a fixed order (query, then item)."""

    split: str
    query_ids: list[str]
    queries: list[str]
    items: list[dict]
    labels: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.labels)
        if not (len(self.query_ids) == len(self.queries) == len(self.items) == n):
            raise ValueError("query_ids, queries, items and labels must have the same length")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def item_ids(self) -> list[str]:
        return [item["item_id"] for item in self.items]

    def item_texts(self, template: ItemTextTemplate | None = None) -> list[str]:
        return [item_text(item, template) for item in self.items]

    def take(self, rows) -> "JudgedPairs":
        """The pairs at `rows` (positions, in the order given)."""
        return JudgedPairs(split=self.split, query_ids=[self.query_ids[i] for i in rows],
                           queries=[self.queries[i] for i in rows], items=[self.items[i] for i in rows],
                           labels=self.labels[np.asarray(rows, dtype=np.int64)])


def load_judged_pairs(ws: Workspace, split: str = "test") -> JudgedPairs:
    """The pairs people judged among `split`'s queries, with their levels."""
    if split not in SPLITS:
        raise RelkitError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
    if ws.count("splits") == 0:
        raise RelkitError("no query has a split yet: run `relkit split` first")
    cols = ", ".join(f"i.{c}" for c in ITEM_RECORD_COLUMNS)
    rows = ws.fetchall(f"""
        SELECT j.query_id, q.query, j.label, {cols}
        FROM judgments j JOIN splits s USING (query_id) JOIN queries q USING (query_id)
        JOIN item_records i USING (item_id)
        WHERE s.split = ? ORDER BY j.query_id, j.item_id""", [split])
    if not rows:
        raise RelkitError(f"the {split} split has no judged pairs")
    return JudgedPairs(split=split, query_ids=[r[0] for r in rows], queries=[r[1] for r in rows],
                       labels=np.array([r[2] for r in rows], dtype=np.int64),
                       items=[dict(zip(ITEM_RECORD_COLUMNS, r[3:])) for r in rows])


# --- shards --------------------------------------------------------------------------------------

def judge_name(ref: str) -> str:
    """`NAME` from `judge:NAME`, `judge-NAME` or `NAME`.

    >>> judge_name("judge:smol"), judge_name("judge-smol"), judge_name("smol")
    ('smol', 'smol', 'smol')
    """
    return ref.removeprefix(JUDGE_PREFIX).removeprefix("judge-")


def labels_dir(ws: Workspace, name: str) -> Path:
    """The folder of the shards of `name`: a teacher's name (labels/NAME) or `judge:NAME`
    (labels/judge-NAME)."""
    if name.startswith(JUDGE_PREFIX):
        return ws.path / LABELS_DIR / f"judge-{name.removeprefix(JUDGE_PREFIX)}"
    return ws.path / LABELS_DIR / name


def shards(directory: Path) -> list[Path]:
    """The whole shards of a labels folder, in the order they were written."""
    return sorted(directory.glob("shard-*.parquet"))


def clear_strays(directory: Path) -> None:
    """Remove the temporary files a killed run left: a shard exists whole or not at all."""
    for stray in [*directory.glob("*.tmp"), directory / PENDING]:
        stray.unlink(missing_ok=True)


def next_shard_number(directory: Path) -> int:
    """The number the next shard of `directory` takes: one more than the highest written."""
    return 1 + max((int(p.stem.split("-")[1]) for p in shards(directory)), default=-1)


def write_shard(directory: Path, number: int, table) -> Path:
    """Write `table` as shard `number` of `directory`: to a temporary name, renamed when complete."""
    import pyarrow.parquet as pq

    final = directory / f"shard-{number:05d}.parquet"
    tmp = final.with_suffix(".tmp")
    pq.write_table(table, tmp)
    tmp.rename(final)
    return final


def refresh_view(ws: Workspace) -> None:
    """(Re)create `teacher_labels` over every shard of every teacher and judge; no view when there
    is no shard."""
    files = sorted((ws.path / LABELS_DIR).glob("*/shard-*.parquet"))
    ws.run(f"DROP VIEW IF EXISTS {VIEW}")
    if files:
        pattern = str(ws.path / LABELS_DIR / "*" / "shard-*.parquet").replace("'", "''")
        ws.run(f"CREATE VIEW {VIEW} AS SELECT * FROM read_parquet('{pattern}', union_by_name = true)")


def _view_exists(ws: Workspace) -> bool:
    refresh_view(ws)
    return bool(ws.fetchone("SELECT count(*) FROM duckdb_views() WHERE view_name = ?", [VIEW])[0])


# --- reading labels --------------------------------------------------------------------------------

def label_batches(ws: Workspace, name: str, columns: list[str] | None = None,
                  batch_size: int = 65_536) -> Iterator:
    """The stored labels of `name` (a teacher's name or `judge:NAME`) as pyarrow record batches of
    at most `batch_size` rows, read shard by shard: memory is a constant of the batch size,
    whatever the number of labels. `columns`: the ones to read (default all).

        rows = sum(len(b) for b in label_batches(ws, "demo", ["query_id", "item_id", "p1"]))
    """
    import pyarrow.dataset as ds

    if batch_size < 1:
        raise RelkitError("batch_size must be at least 1")
    files = shards(labels_dir(ws, name))
    if not files:
        raise RelkitError(f"no labels of '{name}' in {ws.path / LABELS_DIR}")
    dataset = ds.dataset([str(f) for f in files], format="parquet")
    missing = [c for c in columns or [] if c not in dataset.schema.names]
    if missing:
        raise RelkitError(f"the labels of '{name}' have no column {', '.join(missing)} "
                          f"(columns: {', '.join(dataset.schema.names)})")
    yield from dataset.to_batches(columns=columns, batch_size=batch_size)


@dataclass
class LabeledPairs:
    """Pairs with a target distribution each: a teacher's or judge's soft labels, or people's levels."""

    query_ids: list[str]
    queries: list[str]
    item_ids: list[str]
    targets: np.ndarray     # (n, K) distributions


def teacher_labels(ws: Workspace, teacher: str) -> LabeledPairs:
    """The soft labels `teacher` (a teacher's name or `judge:NAME`) gave train-split pairs, in a
    fixed order (query, then item); a judge's answers that named no level are left out."""
    k = ws.scale.k
    if not _view_exists(ws):
        raise RelkitError("no teacher labels in this workspace: run `relkit pairs` and `relkit label` first")
    probs = ", ".join(f"l.p{i}" for i in range(1, k + 1))
    rows = ws.fetchall(f"""
        SELECT l.query_id, q.query, l.item_id, {probs} FROM {VIEW} l JOIN queries q USING (query_id)
        JOIN splits s USING (query_id) WHERE l.teacher = ? AND s.split = 'train'
        AND l.p1 IS NOT NULL  -- a judge's answer that named no level is no label
        ORDER BY l.query_id, l.item_id""", [teacher])
    if not rows:
        known = [r[0] for r in ws.fetchall(f"SELECT DISTINCT teacher FROM {VIEW} ORDER BY 1")]
        raise RelkitError(f"teacher '{teacher}' has labeled no train-split pairs; teachers with labels: "
                          f"{', '.join(known) or 'none'}")
    targets = np.array([r[3:] for r in rows], dtype=np.float32)
    targets /= targets.sum(axis=1, keepdims=True)
    return LabeledPairs([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], targets)


def judged_split(ws: Workspace, ref: str, split: str) -> tuple[JudgedPairs, np.ndarray]:
    """A judge's labels of the pairs of `split`'s queries, as (JudgedPairs whose labels are each
    pair's most probable level, (n, K) distributions); unparsed answers left out. For training a
    teacher on judge labels where people judged nothing.

        pairs, targets = judged_split(ws, "judge:smol", "train")
    """
    name = JUDGE_PREFIX + judge_name(ref)
    k = ws.scale.k
    if not _view_exists(ws):
        raise RelkitError(f"no labels of {name}: run `relkit judge --name {judge_name(ref)}` first")
    probs = ", ".join(f"l.p{i}" for i in range(1, k + 1))
    cols = ", ".join(f"i.{c}" for c in ITEM_RECORD_COLUMNS)
    rows = ws.fetchall(f"""
        SELECT l.query_id, q.query, {probs}, {cols} FROM {VIEW} l JOIN queries q USING (query_id)
        JOIN splits s USING (query_id) JOIN item_records i USING (item_id)
        WHERE l.teacher = ? AND s.split = ? AND l.p1 IS NOT NULL ORDER BY l.query_id, l.item_id""", [name, split])
    if not rows:
        raise RelkitError(f"{name} has labeled no pair of a {split} query: judge some (`relkit judge --name "
                          f"{judge_name(ref)}` on the pairs table, --split {split} or --file)")
    targets = np.array([r[2:2 + k] for r in rows], dtype=np.float32)
    targets /= targets.sum(axis=1, keepdims=True)
    pairs = JudgedPairs(split=split, query_ids=[r[0] for r in rows], queries=[r[1] for r in rows],
                        items=[dict(zip(ITEM_RECORD_COLUMNS, r[2 + k:])) for r in rows],
                        labels=targets.argmax(axis=1).astype(np.int64) + 1)
    return pairs, targets

"""The teacher labels unlabeled pairs: soft labels (K probabilities and the expected level) as
Parquet shards in the workspace, readable with DuckDB as the view `teacher_labels`.

Resumable by construction: each run labels the pairs of the `pairs` table that no shard holds
yet, in fixed-size shards, each written to a temporary name and renamed when complete. A run
killed at any moment (SIGKILL included) leaves whole shards and at most one stray temporary
file, which the next run removes; the rerun labels only what is missing, so every pair ends up
labeled exactly once. Pairs with the same query and item text are scored once.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from relkit.errors import RelkitError
from relkit.workspace import ITEM_RECORD_COLUMNS, Workspace

LABELS_DIR = "labels"
VIEW = "teacher_labels"


@dataclass(frozen=True)
class LabelResult:
    teacher: str
    pending: int        # pairs that had no label when the run started
    labeled: int        # pairs labeled by this run
    scored: int         # distinct (query, item text) the teacher scored
    shards: int         # shards written by this run
    seconds: float

    def summary(self) -> str:
        rate = self.scored / self.seconds if self.seconds else 0.0
        return (f"teacher-{self.teacher}: labeled {self.labeled:,} of {self.pending:,} pending pairs in "
                f"{self.shards:,} shards ({self.scored:,} distinct texts scored, {rate:.1f}/s)")


def labels_dir(ws: Workspace, teacher: str) -> Path:
    return ws.path / LABELS_DIR / teacher


def _shards(directory: Path) -> list[Path]:
    return sorted(directory.glob("shard-*.parquet"))


def refresh_view(ws: Workspace) -> None:
    """`teacher_labels`: every shard of every teacher (columns teacher, query_id, item_id, p1..pK,
    expected_level)."""
    files = sorted((ws.path / LABELS_DIR).glob("*/shard-*.parquet"))
    ws.run(f"DROP VIEW IF EXISTS {VIEW}")
    if files:
        pattern = str(ws.path / LABELS_DIR / "*" / "shard-*.parquet").replace("'", "''")
        ws.run(f"CREATE VIEW {VIEW} AS SELECT * FROM read_parquet('{pattern}', union_by_name = true)")


def label_pairs(ws: Workspace, teacher_ref: str, shard_size: int = 4096, batch_size: int = 64,
                show_progress: bool = True, log=print) -> LabelResult:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    from relkit.teacher.model import Teacher
    from relkit.teacher.system import TeacherSystem

    if shard_size < 1 or batch_size < 1:
        raise RelkitError("shard_size and batch_size must be at least 1")
    system = TeacherSystem.from_workspace(ws, teacher_ref)
    name = system.path.name.removeprefix("teacher-")
    out = labels_dir(ws, name)
    out.mkdir(parents=True, exist_ok=True)
    for stray in out.glob("*.tmp"):
        stray.unlink()  # a shard being written when a run was killed
    done = _shards(out)
    labeled_sql = (f"ANTI JOIN read_parquet(?) l USING (query_id, item_id)" if done else "")
    params = [[str(p) for p in done]] if done else []
    cols = ", ".join(f"i.{c}" for c in ITEM_RECORD_COLUMNS)
    rows = ws.fetchall(f"""
        SELECT p.query_id, q.query, {cols} FROM pairs p JOIN queries q USING (query_id)
        JOIN item_records i USING (item_id) {labeled_sql} ORDER BY p.query_id, p.item_id""", params)
    started = time.perf_counter()
    if not rows:
        refresh_view(ws)
        return LabelResult(name, 0, 0, 0, 0, 0.0)
    teacher = Teacher.load(system.path)
    k = teacher.scale.k
    next_number = 1 + max((int(p.stem.split("-")[1]) for p in done), default=-1)
    labeled = scored = shards = 0
    bar = tqdm(total=len(rows), disable=not show_progress, desc=f"labeling with teacher-{name}", unit="pair")
    for start in range(0, len(rows), shard_size):
        chunk = rows[start:start + shard_size]
        texts = [teacher.meta.template.item(dict(zip(ITEM_RECORD_COLUMNS, r[2:]))) for r in chunk]
        distinct: dict[tuple[str, str], int] = {}
        for r, text in zip(chunk, texts):
            distinct.setdefault((r[1], text), len(distinct))
        proba = teacher.predict_proba(list(distinct), batch_size=batch_size)
        rows_proba = proba[[distinct[(r[1], t)] for r, t in zip(chunk, texts)]]
        table = {"teacher": [name] * len(chunk), "query_id": [r[0] for r in chunk],
                 "item_id": [r[2] for r in chunk]}
        for level in range(k):
            table[f"p{level + 1}"] = rows_proba[:, level].astype(np.float32)
        table["expected_level"] = (rows_proba @ np.arange(1, k + 1)).astype(np.float32)
        final = out / f"shard-{next_number + shards:05d}.parquet"
        tmp = final.with_suffix(".tmp")
        pq.write_table(pa.table(table), tmp)
        tmp.rename(final)  # a shard exists whole or not at all
        labeled += len(chunk)
        scored += len(distinct)
        shards += 1
        bar.update(len(chunk))
        bar.set_postfix(texts_s=f"{scored / (time.perf_counter() - started):.1f}")
    bar.close()
    refresh_view(ws)
    return LabelResult(name, len(rows), labeled, scored, shards, time.perf_counter() - started)

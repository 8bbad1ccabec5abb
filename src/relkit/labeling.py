"""The teacher labels unlabeled pairs: soft labels (K probabilities and the expected level) as
Parquet shards in the workspace, readable with DuckDB as the view `teacher_labels`.

Resumable by construction: each run labels the pairs of the `pairs` table that no shard holds
yet, in fixed-size shards, each written to a temporary name and renamed when complete. A run
killed at any moment (SIGKILL included) leaves whole shards and at most one stray temporary
file, which the next run removes; the rerun labels only what is missing, so every pair ends up
labeled exactly once. Pairs with the same query and item text are scored once.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from relkit.errors import RelkitError
from relkit.labels import PENDING, clear_strays, labels_dir, next_shard_number, refresh_view, shards, write_shard
from relkit.logs import progress
from relkit.text import item_title
from relkit.workspace import ITEM_RECORD_COLUMNS, Workspace


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


def score_table(teacher, table, batch_size: int = 32):
    """The one scoring function of both engines: a table of (query_id, item_id, query, text[, title]) ->
    (teacher, query_id, item_id, p1..pK, expected_level). A repeated (query, text, title) is scored once."""
    import pyarrow as pa

    queries, texts = table.column("query").to_pylist(), table.column("text").to_pylist()
    titles = table.column("title").to_pylist() if "title" in table.column_names else texts
    distinct: dict[tuple[str, str, str], int] = {}
    for pair in zip(queries, texts, titles):
        distinct.setdefault(pair, len(distinct))
    q, t, ti = zip(*distinct) if distinct else ((), (), ())
    proba = teacher.predict_texts(list(q), list(t), list(ti), batch_size=batch_size)
    proba = proba[[distinct[pair] for pair in zip(queries, texts, titles)]]
    k = proba.shape[1]
    name = Workspace.artifact_name("teacher", teacher.path) if teacher.path else "teacher"
    out = {"teacher": [name] * len(queries), "query_id": table.column("query_id"), "item_id": table.column("item_id")}
    for level in range(k):
        out[f"p{level + 1}"] = proba[:, level].astype(np.float32)
    out["expected_level"] = (proba @ np.arange(1, k + 1)).astype(np.float32)
    return pa.table(out), len(distinct)


class RayScorer:
    """A Ray Data actor: loads the teacher once, then scores batches with `score_table`."""

    def __init__(self, path: str, backend: str, batch_size: int):
        from relkit.teacher.model import Teacher

        self.teacher = Teacher.load(path)
        if backend != "torch":
            self.teacher.use_onnx(int8=backend == "onnx-int8")
        self.batch_size = batch_size

    def __call__(self, table):
        import pyarrow as pa

        scored, distinct = score_table(self.teacher, table, self.batch_size)
        return scored.append_column("distinct", pa.array([distinct] + [0] * (len(scored) - 1), pa.int64()))


BACKENDS = ("torch", "onnx", "onnx-int8")
ENGINES = ("local", "ray")


def label_pairs(ws: Workspace, teacher_ref: str, shard_size: int = 4096, batch_size: int = 32,
                backend: str = "torch", engine: str = "local", ray_address: str | None = None,
                ray_actors: int = 2) -> LabelResult:
    """Label the pairs no shard holds yet. `backend`: torch, onnx (ONNX Runtime, fp32) or onnx-int8
    (dynamically quantized weights). `engine`: local (this process) or ray (Ray Data: Parquet in,
    `map_batches` over a pool of `ray_actors` actors; a local Ray unless `ray_address`); both write
    the same shards."""
    import pyarrow as pa

    from relkit.teacher.model import Teacher
    from relkit.teacher.system import TeacherSystem

    if backend not in BACKENDS:
        raise RelkitError(f"unknown backend '{backend}'; one of {', '.join(BACKENDS)}")
    if engine not in ENGINES:
        raise RelkitError(f"unknown engine '{engine}'; one of {', '.join(ENGINES)}")
    if shard_size < 1 or batch_size < 1 or ray_actors < 1:
        raise RelkitError("shard_size, batch_size and ray_actors must be at least 1")
    system = TeacherSystem.from_workspace(ws, teacher_ref)
    name = Workspace.artifact_name("teacher", system.path)
    out = labels_dir(ws, name)
    out.mkdir(parents=True, exist_ok=True)
    clear_strays(out)
    done = shards(out)
    labeled_sql = "ANTI JOIN read_parquet(?) l USING (query_id, item_id)" if done else ""
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
    template = teacher.meta.template
    records = [dict(zip(ITEM_RECORD_COLUMNS, r[2:])) for r in rows]
    pending = pa.table({"query_id": [r[0] for r in rows], "item_id": [r[2] for r in rows],
                        "query": [r[1] for r in rows], "text": [template.item(r) for r in records],
                        "title": [item_title(r) for r in records]})
    if engine == "local":
        if teacher.meta.prior:
            from relkit.features.embeddings import cached_vectors

            # the prior's item vectors come from (and go to) the workspace cache that `relkit pairs`
            # filled, all of them now: the scoring below runs with the workspace released
            texts = sorted(set(pending.column("text").to_pylist()))
            vectors = dict(zip(texts, cached_vectors(ws, teacher.meta.prior["model"], texts)))
            teacher.text_vectors = lambda wanted: np.stack([vectors[t] for t in wanted])
        if backend != "torch":
            teacher.use_onnx(int8=backend == "onnx-int8")
        results = (score_table(teacher, pending.slice(s, shard_size), batch_size)
                   for s in range(0, len(pending), shard_size))
    else:
        results = _ray_results(pending, system.path, out, backend, batch_size, shard_size, ray_address, ray_actors)
    next_number = next_shard_number(out)
    ws.release()  # shards are files: other commands can use the workspace while the teacher scores
    labeled = scored = written = 0
    bar = progress(total=len(rows), desc=f"labeling with teacher-{name}", unit="pair")
    for table, distinct in results:
        write_shard(out, next_number + written, table)
        labeled += len(table)
        scored += distinct
        written += 1
        bar.update(len(table))
        bar.set_postfix(texts_s=f"{scored / (time.perf_counter() - started):.1f}")
    bar.close()
    refresh_view(ws)
    return LabelResult(name, len(rows), labeled, scored, written, time.perf_counter() - started)


def _ray_results(pending, teacher_path: Path, out: Path, backend: str, batch_size: int, shard_size: int,
                 address: str | None, actors: int):
    """Score `pending` on Ray Data; yields (shard table, distinct texts scored) as batches finish."""
    import pyarrow.parquet as pq

    try:
        import ray
    except ImportError:
        raise RelkitError("the ray engine needs Ray: pip install 'relkit[ray]' (ray[data]==2.60.0)") from None
    source = out / PENDING
    pq.write_table(pending, source)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 # the actors hold a CPU each; reading and writing blocks need one more
                 **({} if address else {"num_cpus": max(actors + 1, os.cpu_count() or 1)}))
    try:
        ds = ray.data.read_parquet(str(source)).map_batches(
            RayScorer, fn_constructor_kwargs={"path": str(teacher_path), "backend": backend, "batch_size": batch_size},
            batch_size=shard_size, batch_format="pyarrow", concurrency=actors)
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            distinct = int(sum(batch.column("distinct").to_pylist()))
            yield batch.drop_columns(["distinct"]), distinct
    finally:
        source.unlink(missing_ok=True)
        if started_here:
            ray.shutdown()

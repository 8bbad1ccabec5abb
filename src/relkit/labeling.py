"""The teacher labels unlabeled pairs: soft labels (K probabilities and the expected level) as
Parquet shards in the workspace, readable with DuckDB as the view `teacher_labels`.

Resumable by construction: each run labels the pairs of the `pairs` table that no shard holds
yet, in fixed-size shards, each written to a temporary name and renamed when complete. A run
killed at any moment (SIGKILL included) leaves whole shards and at most one stray temporary
file, which the next run removes; the rerun labels only what is missing, so every pair ends up
labeled exactly once. Pairs with the same query and item text are scored once.

Memory is a constant of the shard size, whatever the number of pairs: DuckDB writes the pending
pairs (with their query and item text) to a Parquet file beside the shards, and the run reads it
back one shard at a time. Each shard is a block with a fixed number (the shard's), so a block
scored twice on a cluster that lost a node is still written once.
"""
from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from relkit.errors import RelkitError
from relkit.labels import PENDING, clear_strays, labels_dir, next_shard_number, refresh_view, shards, write_shard
from relkit.logs import progress
from relkit.text import item_title
from relkit.workspace import Workspace


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


def score_table(teacher, table, batch_size: int = 32, name: str | None = None):
    """The one scoring function of both engines: a table of (query_id, item_id, query, text[, title,
    query_language, language]) -> (teacher, query_id, item_id, p1..pK, expected_level). A repeated
    (query, text, title) in the same languages is scored once. `name`: the teacher's name in the
    output (default: its folder's)."""
    import pyarrow as pa

    def column(name: str, default: list) -> list:
        return table.column(name).to_pylist() if name in table.column_names else default

    queries, texts = table.column("query").to_pylist(), table.column("text").to_pylist()
    titles = column("title", texts)
    languages = zip(column("query_language", [None] * len(queries)), column("language", [None] * len(queries)))
    distinct: dict[tuple, int] = {}
    keys = list(zip(queries, texts, titles, languages))
    for key in keys:
        distinct.setdefault(key, len(distinct))
    q, t, ti, lang = zip(*distinct) if distinct else ((), (), (), ())
    proba = teacher.predict_texts(list(q), list(t), list(ti), batch_size=batch_size,
                                  languages=[b for _, b in lang], query_languages=[a for a, _ in lang])
    proba = proba[[distinct[key] for key in keys]]
    k = proba.shape[1]
    if name is None:
        name = Workspace.artifact_name("teacher", teacher.path) if teacher.path else "teacher"
    out = {"teacher": [name] * len(queries), "query_id": table.column("query_id"), "item_id": table.column("item_id")}
    for level in range(k):
        out[f"p{level + 1}"] = proba[:, level].astype(np.float32)
    out["expected_level"] = (proba @ np.arange(1, k + 1)).astype(np.float32)
    return pa.table(out), len(distinct)


BACKENDS = ("torch", "onnx", "onnx-int8")
ENGINES = ("local", "ray")
MAX_LOST = 3          # a block whose actor dies this many times is not retried again: it is the cause


def label_pairs(ws: Workspace, teacher_ref: str, shard_size: int = 4096, batch_size: int = 32,
                backend: str = "torch", engine: str = "local", ray_address: str | None = None,
                ray_actors: int = 2) -> LabelResult:
    """Label the pairs no shard holds yet. `backend`: torch, onnx (ONNX Runtime, fp32) or onnx-int8
    (dynamically quantized weights). `engine`: local (this process) or ray (a pool of `ray_actors`
    actors on a Ray cluster, `ray_address`, or a local Ray; the teacher's files and the pairs reach
    the actors through Ray's object store); both write the same shards."""
    from relkit.teacher.model import META_FILE, TeacherMeta
    from relkit.teacher.system import TeacherSystem

    if backend not in BACKENDS:
        raise RelkitError(f"unknown backend '{backend}'; one of {', '.join(BACKENDS)}")
    if engine not in ENGINES:
        raise RelkitError(f"unknown engine '{engine}'; one of {', '.join(ENGINES)}")
    if shard_size < 1 or batch_size < 1 or ray_actors < 1:
        raise RelkitError("shard_size, batch_size and ray_actors must be at least 1")
    system = TeacherSystem.from_workspace(ws, teacher_ref)
    name = Workspace.artifact_name("teacher", system.path)
    meta = TeacherMeta.from_json((system.path / META_FILE).read_text())
    out = labels_dir(ws, name)
    out.mkdir(parents=True, exist_ok=True)
    clear_strays(out)
    source = out / PENDING
    started = time.perf_counter()
    try:
        pending, texts = _write_pending(ws, out, source, meta.template)
        if not pending:
            refresh_view(ws)
            return LabelResult(name, 0, 0, 0, 0, 0.0)
        blocks = _blocks(source, shard_size)
        if engine == "local":
            results = _local_results(ws, blocks, system.path, name, texts, backend, batch_size)
        else:
            results = _ray_results(blocks, system.path, name, backend, batch_size, ray_address, ray_actors)
        del texts
        next_number = next_shard_number(out)
        ws.release()  # shards are files: other commands can use the workspace while the teacher scores
        labeled = scored = written = 0
        bar = progress(total=pending, desc=f"labeling with teacher-{name}", unit="pair")
        for number, table, distinct in results:
            write_shard(out, next_number + number, table)
            labeled += len(table)
            scored += distinct
            written += 1
            bar.update(len(table))
            bar.set_postfix(texts_s=f"{scored / (time.perf_counter() - started):.1f}")
        bar.close()
    finally:
        source.unlink(missing_ok=True)
    refresh_view(ws)
    return LabelResult(name, pending, labeled, scored, written, time.perf_counter() - started)


def _write_pending(ws: Workspace, out: Path, source: Path, template) -> tuple[int, list[str]]:
    """Write the pairs no shard of `out` holds to `source` (Parquet: query_id, item_id, query, text,
    title, query_language, language; by query, then item), with DuckDB, which keeps what does not fit
    in memory on disk. Item texts are rendered once per item, not once per pair. Returns (pairs
    written, distinct item texts)."""
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    done = shards(out)
    labeled = pads.dataset([str(p) for p in done], format="parquet") if done else \
        pa.table({"query_id": pa.array([], pa.string()), "item_id": pa.array([], pa.string())})
    with ws.registered("_labeled", labeled):
        item_ids = [r[0] for r in ws.fetchall(
            "SELECT DISTINCT item_id FROM pairs p ANTI JOIN _labeled l USING (query_id, item_id)")]
        records = ws.item_records(item_ids)
        del item_ids
        texts = {"item_id": list(records), "text": [template.item(r) for r in records.values()],
                 "title": [item_title(r) for r in records.values()],
                 "language": [r.get("language") for r in records.values()]}
        del records
        with ws.registered("_pending_items", texts), ws.memory_limit(PENDING_MEMORY):
            path = str(source).replace("'", "''")
            ws.run(f"""COPY (
                SELECT p.query_id, p.item_id, q.query, t.text, t.title, q.language AS query_language, t.language
                FROM pairs p JOIN queries q USING (query_id)
                JOIN _pending_items t USING (item_id) ANTI JOIN _labeled l USING (query_id, item_id)
                ORDER BY p.query_id, p.item_id) TO '{path}' (FORMAT parquet)""")
    return pq.ParquetFile(source).metadata.num_rows, sorted(set(texts["text"]))


PENDING_MEMORY = "256MB"   # DuckDB's memory while it writes the pending pairs: a sort past it goes to disk


def _blocks(source: Path, size: int) -> Iterator:
    """The pending pairs of `source` as pyarrow tables of exactly `size` rows (the last one fewer),
    read a record batch at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    held, rows = [], 0
    for batch in pq.ParquetFile(source).iter_batches(batch_size=size):
        held.append(batch)
        rows += len(batch)
        while rows >= size:
            table = pa.Table.from_batches(held)
            yield table.slice(0, size).combine_chunks()
            rest = table.slice(size)
            held, rows = rest.to_batches(), len(rest)
    if rows:
        yield pa.Table.from_batches(held).combine_chunks()


def _local_results(ws: Workspace, blocks, path: Path, name: str, texts: list[str], backend: str, batch_size: int):
    """Score the blocks in this process; yields (block number, shard table, distinct texts scored)."""
    from relkit.teacher.model import Teacher

    teacher = Teacher.load(path)
    if teacher.meta.prior:
        from relkit.features.embeddings import cached_vectors

        # the prior's item vectors come from (and go to) the workspace cache that `relkit pairs`
        # filled, all of them now (one per distinct item text): the scoring runs with the workspace released
        vectors = dict(zip(texts, cached_vectors(ws, teacher.meta.prior["model"], texts)))
        teacher.text_vectors = lambda wanted: np.stack([vectors[t] for t in wanted])
    if backend != "torch":
        teacher.use_onnx(int8=backend == "onnx-int8")
    return ((number, *score_table(teacher, block, batch_size, name)) for number, block in enumerate(blocks))


# --- the ray engine ---------------------------------------------------------------------------------

PRIOR_DIR = "prior-encoder"   # where a prior's local bi-encoder goes in an actor's copy of the teacher


def folder_files(path: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under `path` (relative path -> bytes), leaving out the top-level entries named in `skip`."""
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*"))
            if f.is_file() and f.relative_to(path).parts[0] not in skip}


def teacher_files(path: Path) -> dict[str, bytes]:
    """What an actor on any node needs to load the teacher at `path`: its files (not its training
    checkpoint) and, for a prior whose bi-encoder is a local folder, that folder's under PRIOR_DIR."""
    from relkit.teacher.model import CHECKPOINT, META_FILE, TeacherMeta

    files = folder_files(path, skip=(CHECKPOINT,))
    meta = TeacherMeta.from_json((path / META_FILE).read_text())
    if meta.prior and Path(meta.prior["model"]).is_dir():
        files.update({f"{PRIOR_DIR}/{k}": v for k, v in folder_files(Path(meta.prior["model"])).items()})
    return files


class RayScorer:
    """A labeling actor: writes the teacher's files (from the object store) to a folder of its own
    node, loads the teacher once, then scores blocks with `score_table`."""

    def __init__(self, files: dict[str, bytes], name: str, backend: str, batch_size: int):
        from relkit.teacher.model import Teacher

        self.folder = tempfile.TemporaryDirectory(prefix="relkit-teacher-")
        root = Path(self.folder.name)
        for relative, data in files.items():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_bytes(data)
        self.teacher = Teacher.load(root)
        if self.teacher.meta.prior and (root / PRIOR_DIR).is_dir():
            self.teacher.meta.prior["model"] = str(root / PRIOR_DIR)
        if backend != "torch":
            self.teacher.use_onnx(int8=backend == "onnx-int8")
        self.name, self.batch_size = name, batch_size

    def ready(self) -> bool:
        """True once the actor is up (a call that waits while Ray restarts it)."""
        return True

    def close(self) -> None:
        """Remove the teacher's files from this node (`ray.kill` runs no finalizer)."""
        self.folder.cleanup()

    def score(self, number: int, table):
        """(number, shard table, distinct texts scored) of block `number`."""
        return (number, *score_table(self.teacher, table, self.batch_size, self.name))


def _ray_results(blocks, teacher_path: Path, name: str, backend: str, batch_size: int,
                 address: str | None, actors: int):
    """Score the blocks on a pool of `actors` Ray actors, at most two blocks per actor in flight (so
    memory stays a constant of the shard size); yields (block number, shard table, distinct texts
    scored) as blocks finish, in any order. Nothing is read from a path on the workers' side: the
    teacher's files and each block travel through the object store. An actor lost with its node is
    restarted by Ray where there is room; its blocks go at once to the actors still running, and it
    gets blocks again once it is back."""
    from collections import deque

    try:
        import ray
        from ray.exceptions import RayActorError
    except ImportError:
        raise RelkitError("the ray engine needs Ray: pip install 'relkit[ray]' (ray==2.60.0)") from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     # each actor holds a CPU
                     **({} if address else {"num_cpus": max(actors, os.cpu_count() or 1)}))
        except ConnectionError as e:
            raise RelkitError(f"no Ray cluster at {address}: {e}") from None
    pool = []
    try:
        files = ray.put(teacher_files(teacher_path))
        scorer = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=0)(RayScorer)
        pool = [scorer.remote(files, name, backend, batch_size) for _ in range(actors)]

        def ping(n: int):
            """A call that resolves once actor `n` is (back) up: retried, unlike a block, while Ray restarts it."""
            return pool[n].ready.options(max_task_retries=-1).remote()

        pings = {ping(n): n for n in range(actors)}
        load: dict[int, int] = {}        # blocks in flight on each actor that is up
        running: dict = {}               # object ref -> (actor, block)
        retry, blocks, more = deque(), enumerate(blocks), True
        lost: dict[int, int] = {}        # block -> times its actor died while scoring it
        while more or retry or running:
            for n in sorted(load, key=load.__getitem__):
                while load[n] < 2 and (retry or more):
                    block = retry.popleft() if retry else next(blocks, None)
                    if block is None:
                        more = False
                        break
                    running[pool[n].score.remote(*block)] = (n, block)
                    load[n] += 1
            if not (load or pings):
                raise RelkitError("every labeling actor of the Ray pool is gone")
            if not running and not pings:
                continue
            (ref,), _ = ray.wait([*running, *pings], num_returns=1)
            if ref in pings:
                n = pings.pop(ref)
                try:
                    ray.get(ref)
                    load[n] = 0
                except RayActorError:
                    pass    # dead for good (killed): the others carry on
                continue
            n, block = running.pop(ref)
            try:
                result = ray.get(ref)
            except RayActorError:
                lost[block[0]] = lost.get(block[0], 0) + 1
                if lost[block[0]] >= MAX_LOST:    # the block itself kills its actor (memory, a crash)
                    raise RelkitError(f"the Ray actor scoring shard block {block[0]} died {MAX_LOST} times: "
                                      f"see the Ray logs of its node (out of memory? try a smaller "
                                      f"--shard-size)") from None
                retry.append(block)
                if n in load:           # down: no more blocks until Ray has restarted it
                    del load[n]
                    pings[ping(n)] = n
                continue
            if n in load:
                load[n] = max(load[n] - 1, 0)
            yield result
    finally:
        from ray.exceptions import GetTimeoutError

        for actor in pool:           # also when the run stops early: no actor left holding a CPU
            try:
                ray.get(actor.close.remote(), timeout=30)
            except (RayActorError, GetTimeoutError):
                pass                 # gone, or not back: its node's temporary folder is Ray's to clear
            ray.kill(actor)
        if started_here:
            ray.shutdown()

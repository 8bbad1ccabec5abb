"""The student's training data as a stream: memory stays a constant of the shuffle window, however
many teacher-labeled pairs there are.

A training row is a pair's factors, not its model input: the row of its query's vector (query
vectors are kept once per distinct query text), its item's catalog row (item vectors and item
extras live once per item in the feature builder's `ItemTable`), its pair scalars, its target
distribution and whether people labeled it. `StudentRows` reads the teacher's label shards chunk
by chunk (`relkit.labels.label_batches`: pyarrow record batches, one shard at a time), computes
each chunk's pair scalars and appends the rows to a file on disk (57 bytes a pair with relkit's
default feature groups and three levels); people's train labels follow the teacher's.

`TrainingStream` serves a selection of those rows to `fit_student` as standardised batches, each
batch's model input assembled from the factors (`assemble`, the function every path uses):

- the standardisation's mean and std come from one pass over the rows: query and item columns
  from how often each query and item occurs, the product and pair columns merged block by block
  (Chan et al.'s pairwise update), all in float64: numpy's figures on the assembled inputs, up to
  rounding;
- a selection of at most `shuffle_rows` rows is read once and kept; every epoch is then one
  permutation of it, drawn as `fit_student` draws one for an in-memory set, so the batches are
  the same;
- a larger one is shuffled by windows: the row file's blocks in a random order each epoch, rows
  gathered into a window of `shuffle_rows`, the window permuted and cut into batches (what a batch
  leaves over goes on to the next window). A block shuffle rather than a sampling buffer (tf.data's,
  or `datasets`' `IterableDataset.shuffle`) because blocks read whole from disk and the permutation
  is one vectorized call; and since a label shard is sorted by query, a window of many random blocks
  mixes many queries in every batch. Every selected row is in exactly one batch per epoch.

What grows with the pairs stays on disk; in memory, per pair, a byte for whether it is selected.

    rows = StudentRows.from_workspace(ws, builder, "demo")
    stream = TrainingStream(rows, np.arange(rows.teacher_rows))
    student = fit_student(stream, dev, ws.scale, builder, config)
"""
from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from relkit.errors import RelkitError
from relkit.logs import progress
from relkit.student.features import FeatureBuilder, PairFeatures
from relkit.student.model import assemble

logger = logging.getLogger(__name__)

BLOCK_ROWS = 8192          # rows a block of the row file holds: the unit read from disk and shuffled
SHUFFLE_ROWS = 1 << 20     # rows shuffled together in memory (about 60 MB); a selection this small is kept whole
CHUNK_ROWS = 65_536        # label rows read and featurised at a time
STATS_ROWS = 4096          # rows assembled at a time for the standardisation's dense columns


def row_dtype(k: int, s: int) -> np.dtype:
    """One training row: its query's row in the query vectors, its item's catalog row, whether
    people labeled it, its K-level target distribution and its s pair scalars."""
    return np.dtype([("query", "<i4"), ("item", "<i4"), ("human", "u1"), ("target", "<f4", (k,)),
                     ("pair", "<f4", (s,))])


def sharpen(targets: np.ndarray, temperature: float) -> np.ndarray:
    """Soft labels at another temperature: p^(1/T), renormalised per row (T = 1 leaves them as they are).

    >>> sharpen(np.array([[0.5, 0.5, 0.0], [0.8, 0.2, 0.0]]), 0.5).astype(float).round(3).tolist()
    [[0.5, 0.5, 0.0], [0.941, 0.059, 0.0]]
    """
    if temperature == 1.0:
        return targets
    powered = np.power(np.asarray(targets, dtype=np.float64), 1.0 / temperature)
    return (powered / powered.sum(axis=1, keepdims=True)).astype(np.float32)


@dataclass(frozen=True)
class LabelChunk:
    """Labeled pairs of train queries: ids as pyarrow arrays (as the shards hold them), targets (n, K)."""

    query_ids: object
    item_ids: object
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)


def train_queries(ws) -> dict[str, str]:
    """query_id -> query text of the train split's queries."""
    return dict(ws.fetchall("SELECT query_id, query FROM queries JOIN splits USING (query_id) "
                            "WHERE split = 'train' ORDER BY query_id"))


def teacher_chunks(ws, teacher: str, train_ids: Sequence[str], chunk_rows: int = CHUNK_ROWS) -> Iterator[LabelChunk]:
    """The soft labels `teacher` (a teacher's name or `judge:NAME`) gave pairs of `train_ids`'
    queries, read shard by shard in the order they were written (for one `relkit label` run: by
    query, then item), each row normalised to sum to 1; a judge's answers that named no level are
    left out. The rows of `relkit.labels.teacher_labels` (in its order when one run wrote the
    shards), without holding them all."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from relkit.labels import label_batches

    k = ws.scale.k
    probs = [f"p{i}" for i in range(1, k + 1)]
    wanted = pa.array(list(train_ids), type=pa.string())
    for batch in label_batches(ws, teacher, ["teacher", "query_id", "item_id", *probs], chunk_rows):
        keep = pc.and_(pc.and_(pc.equal(batch.column("teacher"), teacher), pc.is_valid(batch.column("p1"))),
                       pc.is_in(batch.column("query_id"), value_set=wanted))
        batch = batch.filter(keep)
        if not len(batch):
            continue
        targets = np.stack([batch.column(p).to_numpy(zero_copy_only=False) for p in probs], axis=1)
        targets = targets.astype(np.float32)
        targets /= targets.sum(axis=1, keepdims=True)
        yield LabelChunk(batch.column("query_id"), batch.column("item_id"), targets)


def labeled_query_ids(ws, teacher: str, train_ids: Sequence[str], chunk_rows: int = CHUNK_ROWS) -> set[str]:
    """The train queries `teacher` labeled pairs of: one pass over the shards' query ids."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from relkit.labels import label_batches, labels_dir, shards

    if not shards(labels_dir(ws, teacher)):
        return set()
    wanted = pa.array(list(train_ids), type=pa.string())
    found: set[str] = set()
    for batch in label_batches(ws, teacher, ["query_id"], chunk_rows):
        ids = pc.unique(batch.column("query_id"))
        found.update(ids.filter(pc.is_in(ids, value_set=wanted)).to_pylist())
    return found


class StudentRows:
    """Training rows on disk (`row_dtype`), teacher-labeled ones first, then people's; the query
    vectors they point to; the feature builder whose item table they index. Built once, read back
    in blocks of `block_rows`; the file goes when the object does (or at `close`)."""

    def __init__(self, builder: FeatureBuilder, k: int, queries: Mapping[str, str],
                 directory: str | Path | None = None, block_rows: int = BLOCK_ROWS):
        """Empty rows over `queries` (query_id -> text), whose distinct texts are encoded now, in
        query id order; the file is made in `directory` (default: the system's temporary folder,
        which may be in memory: the Distiller puts it in the workspace's folder)."""
        if block_rows < 1:
            raise RelkitError("block_rows must be at least 1")
        self.builder, self.k, self.block_rows = builder, k, block_rows
        self._ids = sorted(queries)
        self.query_texts = list(dict.fromkeys(queries[q] for q in self._ids))
        self.query_vectors = builder.query_vectors(self.query_texts, bar=True)
        text_row = {t: n for n, t in enumerate(self.query_texts)}
        self._id_row = np.array([text_row[queries[q]] for q in self._ids], dtype=np.int32)
        self.dtype = row_dtype(k, len(builder.pair_names()))
        self.width = sum(width for _, width in builder.blocks())
        self.teacher_rows = self.human_rows = 0
        self._teacher_seen = np.zeros(len(self.query_texts), dtype=bool)
        # a file with no name: the system removes it when it is closed or the process ends, even killed
        self._file = tempfile.TemporaryFile(prefix="relkit-student-rows-", dir=directory)
        self._finished = False

    # -- building ----------------------------------------------------------------------------------
    @classmethod
    def from_workspace(cls, ws, builder: FeatureBuilder, teacher: str | None, human=None,
                       chunk_rows: int = CHUNK_ROWS, directory: str | Path | None = None,
                       block_rows: int = BLOCK_ROWS) -> "StudentRows":
        """The rows of the soft labels `teacher` (a teacher's name or `judge:NAME`; None: no
        teacher) gave train-split pairs, then those of `human` (a `relkit.labels.LabeledPairs` of
        the train split's judgments, or None)."""
        queries = train_queries(ws)
        ids = labeled_query_ids(ws, teacher, list(queries), chunk_rows) if teacher else set()
        if teacher and not ids:
            raise no_labels(ws, teacher)
        if human is not None:
            ids |= set(human.query_ids)
        rows = cls(builder, ws.scale.k, {q: queries[q] for q in ids}, directory, block_rows)
        if teacher:
            rows.add(teacher_chunks(ws, teacher, sorted(ids), chunk_rows), human=False)
            if not rows.teacher_rows:
                rows.close()
                raise no_labels(ws, teacher)
        if human is not None and len(human.targets):
            rows.add(human_chunks(human, chunk_rows), human=True)
        return rows.finish()

    def add(self, chunks: Iterable[LabelChunk], human: bool) -> None:
        """Append the rows of `chunks` (teacher-labeled rows must all come before people's)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if not human and self.human_rows:
            raise RelkitError("teacher-labeled rows go before people's")
        if self._finished:
            raise RelkitError("these rows are finished: no more can be added")
        ids = pa.array(self._ids, type=pa.string())
        catalog = pa.array(self.builder.items.item_ids, type=pa.string())
        bar = progress(desc="student rows (people's labels)" if human else "student rows (teacher's labels)",
                       unit="pair")
        for chunk in chunks:
            position = pc.index_in(chunk.query_ids, value_set=ids)
            if position.null_count:
                raise RelkitError(f"{position.null_count} labeled pair(s) of queries these rows were not built for")
            items = pc.index_in(chunk.item_ids, value_set=catalog)
            if items.null_count:
                missing = chunk.item_ids.filter(pc.is_null(items)).to_pylist()
                raise RelkitError(f"{len(missing)} item(s) are not in the workspace catalog, e.g. {missing[:3]}")
            rows = np.zeros(len(chunk), dtype=self.dtype)
            rows["query"] = self._id_row[position.to_numpy(zero_copy_only=False)]
            rows["item"] = items.to_numpy(zero_copy_only=False)
            rows["human"] = human
            rows["target"] = chunk.targets
            rows["pair"] = self.builder.pair_block(self.query_texts, self.query_vectors, rows["query"], rows["item"])
            rows.tofile(self._file)
            if human:
                self.human_rows += len(rows)
            else:
                self.teacher_rows += len(rows)
                self._teacher_seen[rows["query"]] = True
            bar.update(len(rows))
        bar.close()

    def finish(self) -> "StudentRows":
        """Done adding: the rows can be read."""
        self._file.flush()
        self._finished = True
        logger.info("%s teacher-labeled and %s human-labeled training rows, %.1f MB on disk", f"{self.teacher_rows:,}",
                    f"{self.human_rows:,}", len(self) * self.dtype.itemsize / 1e6)
        return self

    def close(self) -> None:
        """Remove the rows from disk now (they also go with the object, or the process)."""
        self._file.close()

    # -- reading -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.teacher_rows + self.human_rows

    @property
    def teacher_queries(self) -> int:
        """Distinct query texts among the teacher-labeled rows."""
        return int(np.count_nonzero(self._teacher_seen))

    @property
    def n_blocks(self) -> int:
        return -(-len(self) // self.block_rows)

    def block(self, number: int) -> np.ndarray:
        """Rows [number * block_rows, (number + 1) * block_rows) as a structured array of `row_dtype`."""
        if not self._finished:
            raise RelkitError("the rows are still being written: call finish() first")
        start = number * self.block_rows
        self._file.seek(start * self.dtype.itemsize)
        return np.fromfile(self._file, dtype=self.dtype, count=min(self.block_rows, len(self) - start))

    def take(self, index: np.ndarray) -> np.ndarray:
        """The rows `index` (in that order), reading only the blocks that hold them."""
        index = np.asarray(index, dtype=np.int64)
        if len(index) and (index.min() < 0 or index.max() >= len(self)):
            raise RelkitError(f"row index out of range: there are {len(self):,} rows")
        order = np.argsort(index, kind="stable")
        ordered = index[order]
        out = np.empty(len(index), dtype=self.dtype)
        for number in np.unique(ordered // self.block_rows):
            lo, hi = np.searchsorted(ordered, [number * self.block_rows, (number + 1) * self.block_rows])
            out[order[lo:hi]] = self.block(int(number))[ordered[lo:hi] - number * self.block_rows]
        return out

    def inputs(self, rows: np.ndarray) -> np.ndarray:
        """The model input (n, width) float32 of `rows`: the same `assemble` the in-memory path uses."""
        items = self.builder.items
        features = PairFeatures(self.query_vectors, rows["query"], rows["item"], rows["pair"])
        return assemble(features, items.vectors, items.extra)


def no_labels(ws, teacher: str) -> RelkitError:
    """The error for a teacher with no labels of train-split pairs, naming the teachers that have some."""
    from relkit.labels import LABELS_DIR, VIEW, refresh_view

    if not any((ws.path / LABELS_DIR).glob("*/shard-*.parquet")):
        return RelkitError("no teacher labels in this workspace: run `relkit pairs` and `relkit label` first")
    refresh_view(ws)
    known = [r[0] for r in ws.fetchall(f"SELECT DISTINCT teacher FROM {VIEW} ORDER BY 1")]
    return RelkitError(f"teacher '{teacher}' has labeled no train-split pairs; teachers with labels: "
                       f"{', '.join(known) or 'none'}")


def human_chunks(human, chunk_rows: int = CHUNK_ROWS) -> Iterator[LabelChunk]:
    """A LabeledPairs (people's levels as one-hot targets) as LabelChunks."""
    import pyarrow as pa

    for start in range(0, len(human.targets), chunk_rows):
        stop = start + chunk_rows
        yield LabelChunk(pa.array(human.query_ids[start:stop], type=pa.string()),
                         pa.array(human.item_ids[start:stop], type=pa.string()),
                         np.asarray(human.targets[start:stop], dtype=np.float32))


@dataclass(frozen=True)
class RowStats:
    """What one pass over a selection of rows finds: the standardisation of every input column
    (float64, as numpy's mean and population std of the assembled inputs) and the distinct query
    texts of its teacher-labeled rows."""

    mean: np.ndarray
    std: np.ndarray
    teacher_queries: int


def row_stats(blocks: Iterable[np.ndarray], rows: StudentRows, sub_rows: int = STATS_ROWS) -> RowStats:
    """`RowStats` of the rows of `blocks`, in one pass. The query and item columns are exact
    weighted sums over the query vectors and the item table (each weighted by how often its rows
    occur); the product and pair columns are assembled `sub_rows` at a time and merged with Chan
    et al.'s update of mean and sum of squared deviations."""
    items = rows.builder.items
    d = rows.builder.dim
    n_items = len(items.item_ids)
    query_counts = np.zeros(len(rows.query_vectors), dtype=np.int64)
    teacher_counts = np.zeros(len(rows.query_vectors), dtype=np.int64)
    item_counts = np.zeros(n_items, dtype=np.int64)
    n = 0
    dense_mean = dense_m2 = None
    for block in blocks:
        if not len(block):
            continue
        query_counts += np.bincount(block["query"], minlength=len(query_counts))
        teacher_counts += np.bincount(block["query"][block["human"] == 0], minlength=len(teacher_counts))
        item_counts += np.bincount(block["item"], minlength=n_items)
        for start in range(0, len(block), sub_rows):
            part = block[start:start + sub_rows]
            cols = [part["pair"].astype(np.float64)]
            if d:
                product = rows.query_vectors[part["query"]] * items.vectors[part["item"]]   # float32, as assembled
                cols.insert(0, product.astype(np.float64))
            dense = np.concatenate(cols, axis=1)
            m = len(dense)
            part_mean = dense.mean(axis=0)
            part_m2 = ((dense - part_mean) ** 2).sum(axis=0)
            if dense_mean is None:
                dense_mean, dense_m2 = part_mean, part_m2
            else:
                delta = part_mean - dense_mean
                dense_mean = dense_mean + delta * (m / (n + m))
                dense_m2 = dense_m2 + part_m2 + delta ** 2 * (n * m / (n + m))
            n += m
    if not n:
        raise RelkitError("no training rows to standardise")

    def weighted(counts: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        table = table.astype(np.float64)
        mean = counts @ table / n
        return mean, counts @ (table - mean) ** 2 / n

    # columns in the model input's order: query, item, product, item extras, pair scalars
    parts = []
    if d:
        parts += [weighted(query_counts, rows.query_vectors), weighted(item_counts, items.vectors),
                  (dense_mean[:d], dense_m2[:d] / n)]
    if items.extra.shape[1]:
        parts.append(weighted(item_counts, items.extra))
    parts.append((dense_mean[d:], dense_m2[d:] / n))
    mean = np.concatenate([m for m, _ in parts])
    std = np.sqrt(np.maximum(np.concatenate([v for _, v in parts]), 0.0))
    return RowStats(mean, std, int(np.count_nonzero(teacher_counts)))


class TrainingStream:
    """The rows `selection` (indices into `rows`) as a training set for `fit_student`: batches of
    standardised inputs, targets (teacher rows at `temperature`) and weights (`human_weight` for a
    people-labeled row, 1 for a teacher-labeled one). See the module's notes for the shuffle."""

    def __init__(self, rows: StudentRows, selection: np.ndarray, human_weight: float = 1.0,
                 temperature: float = 1.0, shuffle_rows: int = SHUFFLE_ROWS):
        if shuffle_rows < 1:
            raise RelkitError("shuffle_rows must be at least 1")
        self.rows, self.human_weight, self.temperature = rows, float(human_weight), float(temperature)
        self.shuffle_rows = shuffle_rows
        self.width = rows.width
        selection = np.asarray(selection, dtype=np.int64)
        self._len = len(selection)
        self.resident = self._mask = None
        if len(selection) <= shuffle_rows:   # kept whole, in the selection's order
            self.resident = self._prepare(rows.take(selection))
        else:                                # read block by block: which rows, a byte each
            self._mask = np.zeros(len(rows), dtype=bool)
            self._mask[selection] = True
            if np.count_nonzero(self._mask) != len(selection):
                raise RelkitError("a selection of more rows than the stream keeps whole cannot repeat a row")
        self._stats: RowStats | None = None

    def __len__(self) -> int:
        return self._len

    @property
    def stats(self) -> RowStats:
        if self._stats is None:
            blocks = [self.resident] if self.resident is not None else map(self._selected, range(self.rows.n_blocks))
            self._stats = row_stats(blocks, self.rows)
        return self._stats

    def standardization(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std (float32) of every input column; a std below 1e-6 is taken as 1."""
        std = self.stats.std.copy()
        std[std < 1e-6] = 1.0
        return self.stats.mean.astype(np.float32), std.astype(np.float32)

    def batches(self, batch_size: int, rng: np.random.Generator, mean: np.ndarray, std: np.ndarray
                ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """One epoch: (standardised inputs, targets, weights) float32 batches of `batch_size` rows
        (the last one smaller), every selected row in exactly one."""
        if self.resident is not None:
            order = rng.permutation(len(self.resident))
            for start in range(0, len(order), batch_size):
                yield self._batch(self.resident[order[start:start + batch_size]], mean, std)
            return
        carry = None
        for window in self._windows(rng):
            if carry is not None:
                window = np.concatenate([carry, window])
            order = rng.permutation(len(window))
            full = len(window) - len(window) % batch_size
            for start in range(0, full, batch_size):
                yield self._batch(window[order[start:start + batch_size]], mean, std)
            carry = window[order[full:]]
        if carry is not None and len(carry):
            yield self._batch(carry, mean, std)

    # -- helpers ---------------------------------------------------------------------------------------
    def _selected(self, number: int) -> np.ndarray:
        """The selected rows of block `number`, in file order."""
        size = self.rows.block_rows
        mask = self._mask[number * size:(number + 1) * size]
        if not mask.any():
            return np.empty(0, dtype=self.rows.dtype)
        return self.rows.block(number)[mask]

    def _windows(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """The selected rows in windows of at least `shuffle_rows` (the last one smaller), gathered
        from the blocks in a random order."""
        window, size = [], 0
        for number in rng.permutation(self.rows.n_blocks):
            part = self._selected(int(number))
            if len(part):
                window.append(self._prepare(part))
                size += len(part)
            if size >= self.shuffle_rows:
                yield np.concatenate(window)
                window, size = [], 0
        if window:
            yield np.concatenate(window)

    def _prepare(self, rows: np.ndarray) -> np.ndarray:
        """Teacher targets at the stream's temperature (in place: `rows` is a copy read for this stream)."""
        if self.temperature != 1.0:
            teacher = rows["human"] == 0
            rows["target"][teacher] = sharpen(rows["target"][teacher], self.temperature)
        return rows

    def _batch(self, rows: np.ndarray, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, ...]:
        x = (self.rows.inputs(rows) - mean) / std
        weights = np.where(rows["human"] == 1, np.float32(self.human_weight), np.float32(1.0)).astype(np.float32)
        # a copy, always: a one-row field of the structured rows counts as contiguous to numpy and
        # would come back as a view with the record's stride, which torch cannot take
        return x, np.array(rows["target"], dtype=np.float32, copy=True), weights

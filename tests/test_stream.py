"""The student's streamed training data (relkit/student/stream.py): rows factorized on disk, the
standardisation in one pass, batches shuffled across blocks, and students equal to the in-memory ones."""
import json
import os
import subprocess
import sys
import tracemalloc

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, head_lines, make_shop, shared_file, write_teacher_labels
from relkit.labels import LabeledPairs, load_judged_pairs, teacher_labels
from relkit.student.features import FeatureBuilder, FeatureConfig
from relkit.student.model import DevSet, StudentConfig, TrainingSet, assemble, fit_student
from relkit.student.distill import Distiller
from relkit.student.stream import StudentRows, TrainingStream, sharpen

TEXT = FeatureConfig(groups=("bm25", "text_match"))


def people(ws) -> LabeledPairs:
    """The train split's judgments as one-hot targets (levels 1..3)."""
    judged = load_judged_pairs(ws, "train")
    return LabeledPairs(judged.query_ids, judged.queries, judged.item_ids,
                        np.eye(3, dtype=np.float32)[judged.labels - 1])


def dense(builder, queries, item_ids) -> np.ndarray:
    return assemble(builder.pairs(queries, item_ids), builder.items.vectors, builder.items.extra)


@pytest.fixture(scope="module")
def shop_rows(tmp_path_factory):
    """The shop with the rule teacher's labels, its default features (bi-encoder included) and its
    rows in blocks of 16, next to the inputs the in-memory path assembles for the same pairs."""
    ws = make_shop(tmp_path_factory.mktemp("stream"))
    write_teacher_labels(ws)
    builder = FeatureBuilder.from_workspace(ws)
    human = people(ws)
    rows = StudentRows.from_workspace(ws, builder, "rule", human, block_rows=16)
    labels = teacher_labels(ws, "rule")
    x = np.concatenate([dense(builder, labels.queries, labels.item_ids), dense(builder, human.queries, human.item_ids)])
    yield ws, builder, rows, labels, human, x
    rows.close()
    ws.close()


def epoch(stream, batch_size=50, seed=0, standardise=False):
    mean, std = stream.standardization() if standardise else (np.zeros(stream.width, np.float32),
                                                              np.ones(stream.width, np.float32))
    return list(stream.batches(batch_size, np.random.default_rng(seed), mean, std))


def row_of(rows, x_all: np.ndarray, batches: list, human_weight: float) -> np.ndarray:
    """The row of `rows` each row of the batches is: found by its inputs among `x_all` (the rows'
    inputs) and, since people judged pairs the teacher labeled too, by its weight."""
    x = np.concatenate([b[0] for b in batches])
    human = np.concatenate([b[2] for b in batches]) == np.float32(human_weight)
    is_human = np.arange(len(x_all)) >= rows.teacher_rows
    match = (x[:, None, :] == x_all[None, :, :]).all(axis=2) & (human[:, None] == is_human[None, :])
    assert (match.sum(axis=1) == 1).all()
    return match.argmax(axis=1)


def test_rows_hold_the_factors_of_the_in_memory_inputs(shop_rows):
    ws, builder, rows, labels, human, x = shop_rows
    assert (rows.teacher_rows, rows.human_rows) == (len(labels.targets), len(human.targets))
    assert rows.n_blocks == -(-len(rows) // 16)
    every = rows.take(np.arange(len(rows)))
    np.testing.assert_array_equal(rows.inputs(every), x)        # the same float32 inputs, bit for bit
    np.testing.assert_array_equal(every["target"][:rows.teacher_rows], labels.targets)
    np.testing.assert_array_equal(every["target"][rows.teacher_rows:], human.targets)
    assert every["human"].tolist() == [0] * rows.teacher_rows + [1] * rows.human_rows
    # one vector per distinct query text, the pair's text at its row
    texts = labels.queries + human.queries
    assert [rows.query_texts[q] for q in every["query"]] == texts
    assert len(rows.query_vectors) == len(set(texts))
    assert rows.teacher_queries == len(set(labels.queries))
    some = np.array([40, 3, 700, 3, len(rows) - 1])
    np.testing.assert_array_equal(rows.take(some), every[some])


def test_the_standardisation_is_numpys_in_float64_in_one_pass(shop_rows):
    ws, builder, rows, labels, human, x = shop_rows
    subset = np.random.default_rng(5).permutation(rows.teacher_rows)[:300]
    for selection in (np.arange(len(rows)), np.concatenate([subset, np.arange(rows.teacher_rows, len(rows))])):
        want = x[selection].astype(np.float64)
        for shuffle_rows in (10**6, 100):            # kept whole, and read block by block
            stream = TrainingStream(rows, selection, shuffle_rows=shuffle_rows)
            assert (stream.resident is None) == (shuffle_rows == 100)
            np.testing.assert_allclose(stream.stats.mean, want.mean(axis=0), rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(stream.stats.std, want.std(axis=0), rtol=1e-12, atol=1e-15)
            teacher = selection[selection < rows.teacher_rows]
            assert stream.stats.teacher_queries == len({labels.queries[i] for i in teacher})
            # the in-memory set's figures are numpy's in float32: the same up to float32 rounding
            mean32, std32 = TrainingSet(x[selection], None, None).standardization()
            mean, std = stream.standardization()
            np.testing.assert_allclose(mean, mean32, rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(std, std32, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("shuffle_rows", [100, 10**6])
def test_every_selected_row_is_in_exactly_one_batch_per_epoch(shop_rows, shuffle_rows):
    ws, builder, rows, labels, human, x = shop_rows
    selection = np.concatenate([np.random.default_rng(1).permutation(rows.teacher_rows)[:500],
                                np.arange(rows.teacher_rows, len(rows))])
    stream = TrainingStream(rows, selection, human_weight=0.3, shuffle_rows=shuffle_rows)
    orders = []
    for seed in (0, 1):
        batches = epoch(stream, batch_size=64, seed=seed)
        assert [len(b[0]) for b in batches] == [64] * (len(selection) // 64) + [len(selection) % 64]
        got = row_of(rows, x, batches, 0.3)
        assert sorted(got.tolist()) == sorted(selection.tolist())
        targets = np.concatenate([b[1] for b in batches])
        every = rows.take(got)
        np.testing.assert_array_equal(targets, every["target"])
        weights = np.concatenate([b[2] for b in batches])
        np.testing.assert_array_equal(weights, np.where(got >= rows.teacher_rows, np.float32(0.3), np.float32(1)))
        orders.append(got)
        if shuffle_rows == 100:
            # a window gathers random blocks: the first batch's rows come from many blocks of the file
            assert len(set(got[:64] // rows.block_rows)) >= 5
    assert orders[0].tolist() != orders[1].tolist()


@pytest.mark.parametrize("shuffle_rows", [100, 10**6])
def test_a_last_batch_of_one_row_goes_to_torch(shop_rows, shuffle_rows):
    """Rows a multiple of the batch size plus one: the last batch holds one row, and every array of
    every batch is one torch takes (a one-row view of the structured rows would not be)."""
    import torch

    ws, builder, rows, labels, human, x = shop_rows
    selection = np.concatenate([np.arange(257 - rows.human_rows), np.arange(rows.teacher_rows, len(rows))])
    assert len(selection) == 257
    batches = epoch(TrainingStream(rows, selection, human_weight=0.3, shuffle_rows=shuffle_rows), batch_size=64, seed=0)
    assert [len(b[0]) for b in batches] == [64, 64, 64, 64, 1]
    for batch in batches:
        tensors = [torch.from_numpy(a) for a in batch]
        assert all(t.dtype == torch.float32 and t.is_contiguous() for t in tensors)
    assert float(batches[-1][1].sum()) == pytest.approx(1.0, abs=1e-5)   # one row's target: a distribution


def test_teacher_targets_are_sharpened_and_people_s_left_one_hot(shop_rows):
    ws, builder, rows, labels, human, x = shop_rows
    selection = np.arange(len(rows))
    for shuffle_rows in (100, 10**6):
        batches = epoch(TrainingStream(rows, selection, 0.5, temperature=0.5, shuffle_rows=shuffle_rows))
        got = row_of(rows, x, batches, 0.5)
        targets = np.concatenate([b[1] for b in batches])
        teacher = got < rows.teacher_rows
        # the rule teacher's 0.8 / 0.1 / 0.1 at T = 0.5: 0.64 / 0.01 / 0.01, renormalised
        np.testing.assert_allclose(np.sort(targets[teacher], axis=1)[:, ::-1][0],
                                   [0.64 / 0.66, 0.01 / 0.66, 0.01 / 0.66], rtol=1e-6)
        np.testing.assert_allclose(targets[teacher], sharpen(labels.targets[got[teacher]], 0.5))
        np.testing.assert_array_equal(targets[~teacher], human.targets[got[~teacher] - rows.teacher_rows])


def test_a_stream_kept_whole_gives_the_in_memory_sets_batches(shop_rows):
    """The same permutation per epoch as `fit_student` draws for an in-memory set: the same batches."""
    ws, builder, rows, labels, human, x = shop_rows
    order = np.random.default_rng(0).permutation(rows.teacher_rows)[:400]     # as a scaling curve picks pairs
    selection = np.concatenate([order, np.arange(rows.teacher_rows, len(rows))])
    stream = TrainingStream(rows, selection, human_weight=0.3)
    memory = TrainingSet(x[selection], np.concatenate([labels.targets[order], human.targets]),
                         np.concatenate([np.ones(len(order)), np.full(len(human.targets), 0.3)]).astype(np.float32))
    mean, std = memory.standardization()
    for seed in (0, 7):
        streamed = list(stream.batches(64, np.random.default_rng(seed), mean, std))
        in_memory = list(memory.batches(64, np.random.default_rng(seed), mean, std))
        assert len(streamed) == len(in_memory)
        for a, b in zip(streamed, in_memory):
            for u, v in zip(a, b):
                np.testing.assert_array_equal(u, v)


def shop_dev(ws, builder) -> DevSet:
    dev = load_judged_pairs(ws, "dev")
    return DevSet(dense(builder, dev.queries, dev.item_ids), dev.labels, dev.query_ids, dev.item_ids)


def test_the_streamed_student_is_the_in_memory_one(tmp_path):
    ws = make_shop(tmp_path)
    write_teacher_labels(ws)
    builder = FeatureBuilder.from_workspace(ws, TEXT)
    human = people(ws)
    labels = teacher_labels(ws, "rule")
    rows = StudentRows.from_workspace(ws, builder, "rule", human, block_rows=32)
    dev = shop_dev(ws, builder)
    config = StudentConfig(hidden=(16,), epochs=8, patience=8, seed=3)
    selection = np.concatenate([np.random.default_rng(3).permutation(rows.teacher_rows),
                                np.arange(rows.teacher_rows, len(rows))])
    x = np.concatenate([dense(builder, labels.queries, labels.item_ids), dense(builder, human.queries, human.item_ids)])
    targets = np.concatenate([labels.targets, human.targets])
    weights = np.where(selection < rows.teacher_rows, 1.0, config.human_weight).astype(np.float32)
    memory = fit_student(TrainingSet(x[selection], targets[selection], weights), dev, ws.scale, builder, config)
    kept = fit_student(TrainingStream(rows, selection, config.human_weight), dev, ws.scale, builder, config)
    windowed = fit_student(TrainingStream(rows, selection, config.human_weight, shuffle_rows=100), dev, ws.scale,
                           builder, config)
    assert memory.meta.data["train_rows"] == kept.meta.data["train_rows"] == len(selection)
    # kept whole: the same batches; the standardisation differs by float32 rounding only
    np.testing.assert_allclose(kept.logits(dev.x), memory.logits(dev.x), atol=1e-3)
    assert kept.meta.metrics["best_epoch"] == memory.meta.metrics["best_epoch"]
    losses = [[h["loss"] for h in s.meta.metrics["history"]] for s in (memory, kept, windowed)]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
    # shuffled by windows of 100 rows of random blocks: other batches, the same learning
    np.testing.assert_allclose(losses[2], losses[0], rtol=0.1)
    assert windowed.meta.metrics["dev"]["accuracy"] == pytest.approx(memory.meta.metrics["dev"]["accuracy"], abs=0.1)
    rows.close()
    ws.close()


def test_the_distiller_trains_on_what_the_in_memory_path_assembled(tmp_path):
    """A student of the streaming Distiller is the one relkit trained from one in-memory array: the
    teacher's labels in a fixed order, a random n of them at temperature T, then people's at their
    weight. Shuffled by windows of 100 rows, another student that learns as much."""
    ws = make_shop(tmp_path)
    write_teacher_labels(ws)
    before = sorted(ws.path.iterdir())
    distiller = Distiller(ws, "rule", TEXT)
    assert sorted(ws.path.iterdir()) == before       # its rows are in a file with no name in the workspace's folder
    config = StudentConfig(hidden=(16,), epochs=6, patience=6, seed=4, label_temperature=0.5, human_weight=0.5)
    student = distiller.train(300, config)
    # the in-memory set, as relkit assembled it before the stream
    builder, labels, human = distiller.builder, teacher_labels(ws, "rule"), people(ws)
    order = np.random.default_rng(4).permutation(len(labels.targets))[:300]
    x = np.concatenate([dense(builder, labels.queries, labels.item_ids)[order],
                        dense(builder, human.queries, human.item_ids)])
    targets = np.concatenate([sharpen(labels.targets[order], 0.5), human.targets])
    weights = np.concatenate([np.ones(300), np.full(len(human.targets), 0.5)]).astype(np.float32)
    memory = fit_student(TrainingSet(x, targets, weights), distiller.dev, ws.scale, builder, config)
    assert student.meta.data["teacher_pairs"] == 300 and student.meta.data["human_pairs"] == len(human.targets)
    assert student.meta.data["teacher_queries"] == len({labels.queries[i] for i in order})
    assert distiller.teacher_queries == len(set(labels.queries)) and distiller.human_pairs == len(human.targets)
    np.testing.assert_allclose([h["loss"] for h in student.meta.metrics["history"]],
                               [h["loss"] for h in memory.meta.metrics["history"]], rtol=1e-4)
    np.testing.assert_allclose(student.logits(distiller.dev.x), memory.logits(distiller.dev.x), atol=1e-3)
    windowed = Distiller(ws, "rule", TEXT, shuffle_rows=100).train(300, config)
    np.testing.assert_allclose([h["loss"] for h in windowed.meta.metrics["history"]],
                               [h["loss"] for h in memory.meta.metrics["history"]], rtol=0.1)
    distiller.close()
    ws.close()


def write_repeated_labels(ws, name: str, times: int) -> int:
    """The rule teacher's labels of every train pair, `times` over, in shards of about 2,000 rows."""
    write_teacher_labels(ws, name)
    one = pq.read_table(ws.path / "labels" / name / "shard-00000.parquet")
    table = pa.concat_tables([one] * times)
    (ws.path / "labels" / name / "shard-00000.parquet").unlink()
    for n, start in enumerate(range(0, len(table), 2000)):
        pq.write_table(table.slice(start, 2000), ws.path / "labels" / name / f"shard-{n:05d}.parquet")
    return len(table)


def test_memory_does_not_grow_with_the_pairs_beyond_their_indices(tmp_path):
    """Building the rows, the standardisation pass and an epoch at N and at 4N pairs: what Python and
    numpy allocate grows by a byte a pair at most (the selection as a mask), never by rows."""
    ws = make_shop(tmp_path)
    builder = FeatureBuilder.from_workspace(ws, TEXT)
    peaks, sizes = {}, {}
    for name, times in (("small", 16), ("large", 64)):
        sizes[name] = write_repeated_labels(ws, name, times)
        tracemalloc.start()
        rows = StudentRows.from_workspace(ws, builder, name, chunk_rows=1024, block_rows=256)
        build = tracemalloc.get_traced_memory()[1]
        selection = np.random.default_rng(0).permutation(rows.teacher_rows)   # the caller's
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        stream = TrainingStream(rows, selection, shuffle_rows=2048)
        mean, std = stream.standardization()
        for _ in stream.batches(128, np.random.default_rng(0), mean, std):
            pass
        train = tracemalloc.get_traced_memory()[1] - before
        tracemalloc.stop()
        assert rows.teacher_rows == sizes[name]
        peaks[name] = (build, train)
        rows.close()
    extra = sizes["large"] - sizes["small"]
    assert extra >= 25_000
    row_bytes = rows.dtype.itemsize
    assert row_bytes == 4 + 4 + 1 + 3 * 4 + 5 * 4
    build_growth = peaks["large"][0] - peaks["small"][0]
    train_growth = peaks["large"][1] - peaks["small"][1]
    assert build_growth < extra * 1, (peaks, extra)           # no row kept: not even a byte a pair
    assert train_growth < extra * 2, (peaks, extra)           # a byte a pair: whether it is selected
    ws.close()


def test_pairs_find_each_querys_rows_in_one_sort(shop):
    """Features of interleaved pairs of many queries are each query's features on its own."""
    builder = FeatureBuilder.from_workspace(shop, TEXT)
    rng = np.random.default_rng(0)
    queries = [f"{c} {t}" for c in ("red", "blue", "green") for t in ("chair", "lamp", "saw")]
    picks = [(queries[q], builder.items.item_ids[i]) for q, i in zip(rng.integers(0, 9, 200), rng.integers(0, 32, 200))]
    together = builder.pairs([q for q, _ in picks], [i for _, i in picks]).pair
    for query in queries:
        at = [n for n, (q, _) in enumerate(picks) if q == query]
        alone = builder.pairs([query] * len(at), [picks[n][1] for n in at]).pair
        np.testing.assert_array_equal(together[at], alone)


def test_scale_benchmark_on_a_tiny_slice(tmp_path):
    """benchmarks/scale.py on 300 Home Depot judgments, three sizes and the human-only point: every
    stage measured, the stand-in labeler named in its rows, which carry no quality figure (the
    human-only student does); seeds up to --seeds-max; past what the title queries give at --k 4, k
    is raised."""
    data = head_lines(shared_file("homedepot/pairs.csv"), tmp_path / "hd.csv", 300)
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--data", str(data),
                          "--sizes", "400,150,900,0", "--k", "4", "--sources", "bm25", "--features", "bm25,text_match",
                          "--epochs", "2", "--chunk", "100", "--seeds", "2", "--seeds-max", "150",
                          "--workdir", str(tmp_path / "work"), "--json", str(tmp_path / "rows.json")],
                         capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"}, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [(r["pairs"], r["stage"], r.get("seed")) for r in rows] == [
        (0, "setup", None), (0, "distill", 0), (0, "distill", 1),
        (150, "pairs", None), (150, "label", None), (150, "distill", 0), (150, "distill", 1),
        *((size, stage, 0 if stage == "distill" else None) for size in (400, 900) for stage in ("pairs", "label", "distill"))]
    metrics = ("auroc@2", "qwk", "ndcg@10", "accuracy", "argmax_qwk")
    at = {(r["pairs"], r["stage"]): r for r in rows}     # the last seed's row of a size
    for r in rows:
        assert r["seconds"] > 0 and r["peak_rss_mb"] > 50    # a Python process with numpy and relkit loaded
        if r["pairs"] == 0 and r["stage"] == "distill":     # people's labels alone: a real student's figures
            assert r["labeler"] is None and r["teacher_pairs"] == 0 and r["human_pairs"] > 0
            assert -1 <= r["qwk"] <= 1 and 0 < r["ndcg@10"] <= 1 and 0 <= r["accuracy"] <= 1
        else:
            assert all(r[m] is None for m in metrics)            # no teacher: no quality figure anywhere
            assert r["labeler"] == (None if r["stage"] in ("setup", "pairs") else "student:human")
    con = duckdb.connect(str(tmp_path / "work" / "ws" / "relkit.duckdb"), read_only=True)
    shards = str(tmp_path / "work" / "ws" / "labels" / "standin-human" / "shard-*.parquet")
    pairs, labeled, distinct = con.execute(f"""SELECT (SELECT count(*) FROM pairs), count(*),
        count(DISTINCT (query_id, item_id)) FROM read_parquet('{shards}')""").fetchone()
    assert labeled == distinct == pairs == at[900, "label"]["labeled"] >= 900    # every pair labeled once
    assert at[150, "label"]["labeled"] == at[150, "pairs"]["train_pairs"] >= 150
    assert [r["teacher_pairs"] for r in rows if r["stage"] == "distill"] == [0, 0, 150, 150, 400, 900]
    # 300 judgments' items give a few hundred title queries: 900 pairs need more candidates a query
    assert at[150, "pairs"]["k"] == at[400, "pairs"]["k"] == 4 and at[900, "pairs"]["k"] > 4
    assert at[900, "pairs"]["train_pairs"] >= 900
    assert all(r["epochs"] == 2 for r in rows if r["stage"] == "distill")
    # the curve printed at the end: the sizes with quality figures only, averaged over their seeds
    people = [r for r in rows if r["pairs"] == 0 and r["stage"] == "distill"]
    last = run.stdout.splitlines()[-1].split()
    assert last[:5] == ["0", "human", "labels", "only", "2"]
    assert float(last[5]) == pytest.approx((people[0]["auroc@2"] + people[1]["auroc@2"]) / 2, abs=5e-5) \
        if people[0]["auroc@2"] is not None else last[5] == "-"
    con.close()


def test_stream_check_benchmark_on_a_tiny_shop(tmp_path):
    """benchmarks/stream_check.py: the streamed and the in-memory student of the same labels, seed
    for seed, and the checks of the target."""
    ws = make_shop(tmp_path)
    write_teacher_labels(ws)
    available = len(teacher_labels(ws, "rule").targets)
    ws.close()
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "stream_check.py"), "--workspace", str(ws.path),
                          "--teacher", "rule", "--seeds", "2", "--pairs", "300", "--features", "bm25,text_match",
                          "--set", "hidden=16", "--set", "epochs=4", "--json", str(tmp_path / "check.json")],
                         capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"}, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = json.loads((tmp_path / "check.json").read_text())
    assert available > 300 and out["pairs"] == 300
    assert [(r["seed"], r["path"]) for r in out["rows"]] == [(0, "stream"), (0, "memory"), (1, "stream"), (1, "memory")]
    for seed in (0, 1):
        stream, memory = (r for r in out["rows"] if r["seed"] == seed)
        assert 1 <= stream["best_epoch"] <= 4 and 0 <= stream["auroc@2"] <= 1 and 0 < stream["ndcg@10"] <= 1
        # the same rows, the same batches: the same learning up to float rounding
        assert stream["auroc@2"] == pytest.approx(memory["auroc@2"], abs=0.05)
    for metric in ("auroc@2", "qwk"):
        diff = out["means"]["stream"][metric] - out["means"]["memory"][metric]
        assert out["checks"][metric]["difference"] == pytest.approx(diff)
        assert out["checks"][metric]["met"] == (abs(diff) <= out["checks"][metric]["limit"])
    assert "stream - memory" in run.stdout

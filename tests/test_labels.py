import numpy as np
import pyarrow as pa
import pytest

from relkit import RelkitError
from relkit.labels import (PENDING, VIEW, clear_strays, judge_name, judged_split, label_batches, labels_dir,
                           next_shard_number, refresh_view, shards, teacher_labels, write_shard)


def label_table(name: str, rows: list[tuple[str, str, list | None]], **extra) -> pa.Table:
    """Shard rows as `relkit label` writes them: (query_id, item_id, p1..p3 or None when unparsed)."""
    p = [r[2] for r in rows]
    out = {"teacher": [name] * len(rows), "query_id": [r[0] for r in rows], "item_id": [r[1] for r in rows]}
    for level in range(3):
        out[f"p{level + 1}"] = pa.array([None if x is None else x[level] for x in p], pa.float32())
    out["expected_level"] = pa.array([None if x is None else float(np.dot(x, [1, 2, 3])) for x in p], pa.float32())
    return pa.table({**out, **extra})


def query_of(ws, split: str, n: int = 0) -> str:
    return ws.fetchall("SELECT query_id FROM splits WHERE split = ? ORDER BY 1", [split])[n][0]


def test_shards_are_numbered_after_the_last_and_strays_are_cleared(ws):
    folder = labels_dir(ws, "demo")
    folder.mkdir(parents=True)
    assert next_shard_number(folder) == 0
    table = label_table("demo", [("q1", "i1", [0.2, 0.3, 0.5])])
    write_shard(folder, 0, table)
    write_shard(folder, 7, table)
    (folder / "shard-00008.tmp").write_bytes(b"half")     # a killed run's leftovers
    (folder / PENDING).write_bytes(b"input")
    assert [p.name for p in shards(folder)] == ["shard-00000.parquet", "shard-00007.parquet"]
    assert next_shard_number(folder) == 8
    clear_strays(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["shard-00000.parquet", "shard-00007.parquet"]


def test_a_judge_keeps_its_labels_in_its_own_folder(ws):
    assert labels_dir(ws, "demo") == ws.path / "labels" / "demo"
    assert labels_dir(ws, "judge:smol") == ws.path / "labels" / "judge-smol"
    assert [judge_name(r) for r in ("judge:smol", "judge-smol", "smol")] == ["smol", "smol", "smol"]


def test_the_view_reads_every_teacher_and_judge_shard(ws):
    refresh_view(ws)
    assert ws.fetchone("SELECT count(*) FROM duckdb_views() WHERE view_name = ?", [VIEW])[0] == 0
    for name, rows, extra in [("demo", [("q1", "i1", [0.2, 0.3, 0.5]), ("q1", "i2", [1.0, 0.0, 0.0])], {}),
                              ("judge:smol", [("q2", "i1", None)], {"model": ["local:smol"]})]:
        folder = labels_dir(ws, name)
        folder.mkdir(parents=True)
        write_shard(folder, 0, label_table(name, rows, **extra))
    refresh_view(ws)
    got = ws.fetchall(f"SELECT teacher, query_id, item_id, p3, model FROM {VIEW} ORDER BY 1, 2, 3")
    assert got == [("demo", "q1", "i1", pytest.approx(0.5), None), ("demo", "q1", "i2", 0.0, None),
                   ("judge:smol", "q2", "i1", None, "local:smol")]


def test_label_batches_stream_a_teachers_shards_in_bounded_batches(ws):
    folder = labels_dir(ws, "demo")
    folder.mkdir(parents=True)
    rows = [(f"q{n}", f"i{n}", [0.5, 0.25, 0.25]) for n in range(12)]
    for number, (start, stop) in enumerate([(0, 5), (5, 10), (10, 12)]):
        write_shard(folder, number, label_table("demo", rows[start:stop]))
    batches = list(label_batches(ws, "demo", ["query_id", "p1"], batch_size=4))
    assert [len(b) for b in batches] == [4, 1, 4, 1, 2]                 # no batch spans two shards
    assert all(b.schema.names == ["query_id", "p1"] for b in batches)
    assert [q for b in batches for q in b.column("query_id").to_pylist()] == [f"q{n}" for n in range(12)]
    with pytest.raises(RelkitError, match="no column stars"):
        next(label_batches(ws, "demo", ["stars"]))
    with pytest.raises(RelkitError, match="no labels of 'other'"):
        next(label_batches(ws, "other"))


def test_teacher_labels_are_the_train_splits_labelled_pairs_normalised(shop):
    train, dev = query_of(shop, "train"), query_of(shop, "dev")
    folder = labels_dir(shop, "t")
    folder.mkdir(parents=True)
    write_shard(folder, 0, label_table("t", [
        (train, "red-lamp", [2.0, 1.0, 1.0]),       # sums to 4: the target is [0.5, 0.25, 0.25]
        (train, "blue-rug", None),                   # an answer that named no level is no label
        (train, "black-saw", [0.0, 0.0, 1.0]),
        (dev, "red-lamp", [1.0, 0.0, 0.0]),          # not a train query
    ]))
    labels = teacher_labels(shop, "t")
    assert (labels.query_ids, labels.item_ids) == ([train, train], ["black-saw", "red-lamp"])
    query = shop.fetchone("SELECT query FROM queries WHERE query_id = ?", [train])[0]
    assert labels.queries == [query, query]
    np.testing.assert_allclose(labels.targets, [[0.0, 0.0, 1.0], [0.5, 0.25, 0.25]])
    with pytest.raises(RelkitError, match="teacher 'u' has labeled no train-split pairs; teachers with labels: t"):
        teacher_labels(shop, "u")


def test_judged_split_labels_a_pair_with_the_judges_most_probable_level(shop):
    dev, test = query_of(shop, "dev"), query_of(shop, "test")
    folder = labels_dir(shop, "judge:j")
    folder.mkdir(parents=True)
    write_shard(folder, 0, label_table("judge:j", [
        (dev, "red-chair", [0.1, 0.2, 0.7]),
        (dev, "blue-door", [0.6, 0.3, 0.1]),
        (dev, "green-hose", None),
        (test, "red-chair", [0.1, 0.8, 0.1]),
    ]))
    pairs, targets = judged_split(shop, "judge-j", "dev")
    assert (pairs.split, pairs.query_ids, pairs.item_ids) == ("dev", [dev, dev], ["blue-door", "red-chair"])
    assert pairs.labels.tolist() == [1, 3]
    assert [item["title"] for item in pairs.items] == ["blue door", "red chair"]
    np.testing.assert_allclose(targets, [[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]], rtol=1e-6)
    with pytest.raises(RelkitError, match="judge:j has labeled no pair of a train query"):
        judged_split(shop, "j", "train")

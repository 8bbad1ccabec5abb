import pytest

from conftest import write_csv
from relkit import InputError, RelkitError, SplitConfig, import_file, pin_from_file, split_queries


def add_queries(tmp_path, ws, names, start=0):
    rows = [[q, f"item of {q}", "3"] for q in names] + [[q, f"other item of {q}", "1"] for q in names]
    return import_file(ws, "judgments", write_csv(tmp_path / f"j{start}.csv", ["query", "title", "label"], rows))


def assignment(ws):
    return dict(ws.fetchall("SELECT query_id, split FROM splits"))


def test_whole_queries_with_requested_fractions(tmp_path, ws):
    add_queries(tmp_path, ws, [f"query {i}" for i in range(2000)])
    summary = split_queries(ws, SplitConfig(seed=1, dev=0.1, test=0.2))
    assert summary.assigned == 2000
    assert 0.17 < summary.counts["test"] / 2000 < 0.23 and 0.07 < summary.counts["dev"] / 2000 < 0.13
    # every judgment of a query is in that query's split: splits are keyed by query, not row
    assert ws.fetchone("SELECT count(*) FROM judgments ANTI JOIN splits USING (query_id)") == (0,)


def test_stable_when_new_queries_arrive(tmp_path, ws):
    add_queries(tmp_path, ws, [f"query {i}" for i in range(300)])
    split_queries(ws, SplitConfig(seed=7))
    before = assignment(ws)
    add_queries(tmp_path, ws, [f"new query {i}" for i in range(300)], start=1)
    summary = split_queries(ws)  # the stored config is used
    assert summary.assigned == 300 and summary.config.seed == 7
    after = assignment(ws)
    assert {q: after[q] for q in before} == before
    assert len(after) == 600


def test_seed_decides_and_changing_it_needs_reset(tmp_path, ws):
    add_queries(tmp_path, ws, [f"query {i}" for i in range(300)])
    split_queries(ws, SplitConfig(seed=1))
    first = assignment(ws)
    with pytest.raises(RelkitError, match="--reset"):
        split_queries(ws, SplitConfig(seed=2))
    split_queries(ws, SplitConfig(seed=2), reset=True)
    assert assignment(ws) != first
    split_queries(ws, SplitConfig(seed=1), reset=True)
    assert assignment(ws) == first  # same seed, same split, on any machine


def test_pinned_queries_stay(tmp_path, ws):
    add_queries(tmp_path, ws, [f"query {i}" for i in range(100)])
    pinned = write_csv(tmp_path / "fixed.csv", ["query", "title", "label"], [["my test query", "an item", "4"]])
    import_file(ws, "judgments", pinned, split="test")
    split_queries(ws, SplitConfig(seed=3, dev=0.5, test=0.0))
    split_queries(ws, SplitConfig(seed=4, dev=0.5, test=0.0), reset=True)
    rows = ws.fetchall("SELECT split, pinned FROM splits JOIN queries USING (query_id) WHERE query = 'my test query'")
    assert rows == [("test", True)]


def test_pin_from_file_by_id_or_text(tmp_path, ws):
    add_queries(tmp_path, ws, ["red chair", "blue hose", "paint"])
    split_queries(ws, SplitConfig(seed=0, dev=0.0, test=0.0))
    hose_id = ws.fetchone("SELECT query_id FROM queries WHERE query = 'blue hose'")[0]
    listing = tmp_path / "test-queries.txt"
    listing.write_text(f"red  chair\n\n{hose_id}\n")
    assert pin_from_file(ws, listing, "test") == 2
    assert sorted(ws.fetchall("SELECT query, split FROM splits JOIN queries USING (query_id)")) == [
        ("blue hose", "test"), ("paint", "train"), ("red chair", "test")]
    listing.write_text("red chair\ngreen lamp\n")
    with pytest.raises(InputError, match=r"test-queries.txt, line 2: 'green lamp' is neither a query id nor"):
        pin_from_file(ws, listing, "test")


def test_bad_fractions():
    with pytest.raises(RelkitError, match="must leave queries for train"):
        SplitConfig(dev=0.5, test=0.5)
    with pytest.raises(RelkitError, match="fraction"):
        SplitConfig(test=-0.1)

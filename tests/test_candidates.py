import pytest

from conftest import write_csv
from relkit import RelkitError, import_file, split_queries
from relkit.candidates import make_pairs

THINGS = ["chair", "table", "lamp", "hose", "drill", "door", "saw", "rug"]


@pytest.fixture
def catalog_ws(tmp_path, ws):
    items = [[f"{c}-{t}", f"{c} {t}", f"a {t} made of {m}"]
             for t in THINGS for c, m in (("red", "oak"), ("blue", "steel"), ("green", "pine"))]
    import_file(ws, "items", write_csv(tmp_path / "items.csv", ["item_id", "title", "description"], items))
    judgments = [[f"red {t}", f"red-{t}", "5"] for t in THINGS]
    import_file(ws, "judgments", write_csv(tmp_path / "j.csv", ["query", "item_id", "label"], judgments))
    import_file(ws, "judgments", write_csv(tmp_path / "t.csv", ["query", "item_id", "label"],
                                           [["green saw", "green-saw", "5"]]), split="test")
    import_file(ws, "queries", write_csv(tmp_path / "q.csv", ["query_id", "query"], [["u1", "blue lamp"]]),
                split="train")  # a query nobody judged
    split_queries(ws)
    return ws


def test_candidates_for_train_queries_only(catalog_ws):
    ws = catalog_ws
    result = make_pairs(ws, k=3)
    train = {q for (q,) in ws.fetchall("SELECT query FROM queries JOIN splits USING (query_id) WHERE split='train'")}
    assert "blue lamp" in train and result.queries == len(train)
    rows = ws.fetchall("SELECT q.query, p.item_id, p.source FROM pairs p JOIN queries q USING (query_id)")
    assert {q for q, _, _ in rows} <= train and "green saw" not in {q for q, _, _ in rows}
    lamp = {item: source for q, item, source in rows if q == "blue lamp"}
    assert lamp["blue-lamp"] == "bm25+embedding"  # found by both: one row
    assert set(lamp) <= {f"{c}-lamp" for c in ("red", "blue", "green")} | {f"blue-{t}" for t in THINGS}
    judged = set(ws.fetchall("SELECT query_id, item_id FROM judgments"))
    assert not judged & set(ws.fetchall("SELECT query_id, item_id FROM pairs"))
    assert result.added == len(rows) == result.found and sum(result.by_source.values()) == result.found
    assert make_pairs(ws, k=3).added == 0  # again: nothing new
    only_bm25 = make_pairs(ws, k=5, sources=["bm25"])
    assert set(only_bm25.by_source) == {"bm25"}


def test_candidates_need_a_split_and_known_sources(tmp_path, ws):
    import_file(ws, "judgments", write_csv(tmp_path / "j.csv", ["query", "title", "label"], [["a", "b", "1"]]))
    with pytest.raises(RelkitError, match="run `relkit split` first"):
        make_pairs(ws)
    split_queries(ws)
    with pytest.raises(RelkitError, match="candidate sources are bm25, embedding; got logs"):
        make_pairs(ws, sources=["logs"])


def test_blocks_of_queries_give_the_pairs_of_one_block(catalog_ws, tmp_path):
    import shutil

    from relkit import Workspace

    ws = catalog_ws
    ws.close()
    shutil.copytree(ws.path, tmp_path / "copy")
    with Workspace.open(ws.path) as one, Workspace.open(tmp_path / "copy") as many:
        train = one.fetchone("SELECT count(*) FROM splits WHERE split = 'train'")[0]
        whole = make_pairs(one, k=4, sources=["bm25"], min_queries=0, block=10_000)
        blocks = make_pairs(many, k=4, sources=["bm25"], min_queries=0, block=2)   # ceil(train / 2) blocks
        rows = "SELECT query_id, item_id, source FROM pairs ORDER BY ALL"
        assert many.fetchall(rows) == one.fetchall(rows) and len(one.fetchall(rows)) == whole.added > train
        assert (blocks.queries, blocks.found, blocks.added, blocks.by_source) == \
            (whole.queries, whole.found, whole.added, whole.by_source) == (train, whole.added, whole.added,
                                                                           {"bm25": whole.added})

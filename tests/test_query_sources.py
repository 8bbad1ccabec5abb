import json

import pytest
from typer.testing import CliRunner

from conftest import write_csv
from relkit import RelkitError, import_file, split_queries
from relkit.candidates import make_pairs
from relkit.cli import app
from relkit.query_sources import add_train_queries, log_queries, title_queries

# "memory card" and "snow boots" recur across titles; "black" is in too many to be a query
TITLES = ([f"SanDisk Memory Card {n}GB black" for n in (8, 16, 32)] + ["Lexar Memory Card"]
          + [f"Women's Snow Boots size {n}" for n in (6, 7, 8)]
          + [f"Espresso Maker model {m} black" for m in "abcd"]
          + [f"Black Gadget {n}" for n in range(10)])


@pytest.fixture
def titled_ws(tmp_path, ws):
    items = [[f"i{n}", title, ""] for n, title in enumerate(TITLES)]
    import_file(ws, "items", write_csv(tmp_path / "items.csv", ["item_id", "title", "description"], items))
    import_file(ws, "judgments", write_csv(tmp_path / "j.csv", ["query", "item_id", "label"],
                                           [["gadget", "i12", "4"], ["maker espresso", "i6", "5"]]), split="train")
    import_file(ws, "judgments", write_csv(tmp_path / "t.csv", ["query", "item_id", "label"],
                                           [["snow boot", "i3", "5"]]), split="test")
    split_queries(ws)
    return ws


def added(ws, source):
    return {q: (split, pinned, json.loads(extra)) for q, split, pinned, extra in ws.fetchall(
        "SELECT query, split, pinned, extra FROM queries JOIN splits USING (query_id) WHERE query_id LIKE ?",
        [f"{source}-%"])}


def test_title_queries_are_recurring_phrases_and_never_a_workspace_query(titled_ws):
    ws = titled_ws
    result = title_queries(ws, 50, min_items=3, max_share=0.3)
    got = added(ws, "titles")
    assert result.added == len(got) == result.eligible
    assert "memory card" in got and "sandisk memory card" in got
    # the test query "snow boot" keeps out "snow boots" (same stem); "espresso maker" is a train query
    # in another order; "black" is in 17 of 22 titles, over 30%; "card 8gb" is in one title only
    assert not {"snow boots", "espresso maker", "black", "card 8gb"} & set(got)
    # "sandisk" is seen only inside "sandisk memory card", "memory" inside "memory card": not queries
    assert not {"sandisk", "memory", "sandisk memory", "card"} & set(got)
    assert all(value == ("train", True, {"source": "titles"}) for value in got.values())
    assert title_queries(ws, 50, min_items=3, max_share=0.3).added == 0  # again: nothing new

    fewer = title_queries(ws, 1, min_items=3, max_share=0.3)  # nothing new to add: all were taken
    assert fewer.added == 0


def test_title_queries_take_the_most_frequent_first(titled_ws):
    ws = titled_ws
    title_queries(ws, 2, min_items=3, max_share=0.3)
    # in 4 titles each; every other eligible phrase is in 3 ("model" only inside "espresso maker model")
    assert set(added(ws, "titles")) == {"espresso maker model", "memory card"}


def test_added_queries_get_candidates_and_keep_their_split(titled_ws):
    ws = titled_ws
    title_queries(ws, 50, min_items=3, max_share=0.3)
    result = make_pairs(ws, k=2, sources=["bm25"], min_queries=0)
    with_pairs = {q for (q,) in ws.fetchall("SELECT DISTINCT query FROM pairs JOIN queries USING (query_id)")}
    assert "memory card" in with_pairs and result.queries == 2 + len(added(ws, "titles"))
    assert "snow boot" not in with_pairs  # test queries never get candidates
    split_queries(ws)  # a new split run moves none of them
    assert {v[0] for v in added(ws, "titles").values()} == {"train"}


def test_log_queries_most_shown_first_without_workspace_queries(tmp_path, titled_ws):
    ws = titled_ws
    rows = [["Snow Boots", "i3", "900", "2024-01-01"], ["usb stick", "i0", "500", "2024-01-01"],
            ["usb stick", "i1", "450", "2024-01-02"], ["espresso cups", "i6", "800", "2024-01-01"],
            ["gadget", "i12", "9999", "2024-01-01"], ["rare thing", "i9", "3", "2024-01-01"]]
    import_file(ws, "engagement", write_csv(tmp_path / "log.csv", ["query", "item_id", "impressions", "timestamp"],
                                            rows))
    result = log_queries(ws, 2)
    assert (result.added, result.eligible) == (2, 3)
    assert set(added(ws, "log")) == {"usb stick", "espresso cups"}  # 950 and 800 shown
    assert log_queries(ws, 5).added == 1 and "rare thing" in added(ws, "log")


def test_errors_name_what_is_missing(ws):
    with pytest.raises(RelkitError, match="no engagement log"):
        log_queries(ws, 10)
    with pytest.raises(RelkitError, match="no item has a title"):
        title_queries(ws, 10)
    with pytest.raises(RelkitError, match="at least 1"):
        title_queries(ws, 0)


def test_the_train_split_is_topped_up_from_the_log_when_there_is_one(tmp_path, titled_ws):
    ws = titled_ws
    assert add_train_queries(ws, 2) is None  # it has 2 train queries already
    first = add_train_queries(ws, 4)  # no log: titles
    assert (first.source, first.added) == ("titles", 2)
    import_file(ws, "engagement", write_csv(tmp_path / "log.csv", ["query", "item_id", "impressions", "timestamp"],
                                            [["usb stick", "i0", "5", "2024-01-01"]]))
    second = add_train_queries(ws, 6)
    assert (second.source, second.added) == ("log", 1)  # the log has only one new query
    third = add_train_queries(ws, 7, "titles")  # 2 wanted; the titles have one phrase left
    assert (third.added, third.eligible) == (1, 1)
    with pytest.raises(RelkitError, match="query source is one of auto, log, titles, not 'web'"):
        add_train_queries(ws, 100, "web")


def test_cli_pairs_tops_up_the_train_queries_then_finds_their_candidates(titled_ws):
    path = titled_ws.path
    titled_ws.close()
    result = CliRunner().invoke(app, ["pairs", "-w", str(path), "--min-queries", "5", "--k", "2",
                                      "--source", "bm25"])
    assert result.exit_code == 0, result.output
    assert "3 new train queries from item titles" in result.output
    assert "5 train queries" in result.output
    status = CliRunner().invoke(app, ["status", "-w", str(path)])
    assert "train queries nobody judged, added by relkit pairs: 3 from item titles" in " ".join(status.output.split())
    result = CliRunner().invoke(app, ["pairs", "-w", str(path), "--min-queries", "9", "--query-source", "log"])
    assert result.exit_code == 2 and "no engagement log" in result.output


def test_nothing_to_add_is_not_an_error(tmp_path, ws, caplog):
    # titles that share no phrase: no eligible query, and none added
    import_file(ws, "items", write_csv(tmp_path / "items.csv", ["item_id", "title"], [["a", "red chair"], ["b", "oak"]]))
    import_file(ws, "judgments", write_csv(tmp_path / "j.csv", ["query", "item_id", "label"], [["chair", "a", "5"]]))
    split_queries(ws)
    result = title_queries(ws, 10)
    assert (result.added, result.eligible) == (0, 0)
    ws.run("UPDATE items SET title = NULL")
    assert add_train_queries(ws, 10) is None and "none added" in caplog.text   # auto: nothing to draw from
    with pytest.raises(RelkitError, match="no item has a title"):
        add_train_queries(ws, 10, "titles")


def test_no_dev_or_test_query_leaks_at_a_larger_size(tmp_path, ws):
    """2,000 generated titles, 300 judged queries drawn from them: hundreds of title queries are
    added, pairs are made in small blocks, and no dev or test query (nor its words in another order)
    gets a pair or is added."""
    import random

    rng = random.Random(7)
    words = ["oak", "pine", "steel", "brass", "chair", "table", "lamp", "hose", "drill", "door", "saw", "rug",
             "shelf", "bench", "valve", "mirror", "faucet", "ladder", "grill", "heater", "cedar", "copper",
             "walnut", "marble", "basket", "blanket", "candle", "carpet", "curtain", "drawer", "fence", "glove",
             "hammer", "kettle", "pillow", "sink", "stool", "towel", "vase", "wrench"]
    titles = [" ".join(rng.sample(words, 4)) for _ in range(2000)]
    items = [[f"i{n}", title] for n, title in enumerate(titles)]
    import_file(ws, "items", write_csv(tmp_path / "items.csv", ["item_id", "title"], items))
    judged = sorted({frozenset(rng.sample(words, 2)) for _ in range(400)}, key=sorted)[:300]
    judged = [" ".join(rng.sample(sorted(q), 2)) for q in judged]    # no two share their words
    rows = [[q, f"i{rng.randrange(2000)}", str(rng.randint(1, 5))] for q in judged]
    import_file(ws, "judgments", write_csv(tmp_path / "j.csv", ["query", "item_id", "label"], rows))
    split_queries(ws)
    held_out = {frozenset(q.split()) for (q,) in ws.fetchall(
        "SELECT query FROM queries JOIN splits USING (query_id) WHERE split <> 'train'")}
    assert len(held_out) >= 40
    result = make_pairs(ws, k=5, sources=["bm25"], min_queries=2000, block=37)
    new = added(ws, "titles")
    assert result.new_queries.added == len(new) >= 300
    assert not {frozenset(q.split()) for q in new} & held_out
    with_pairs = ws.fetchall("SELECT DISTINCT q.query, s.split FROM pairs JOIN queries q USING (query_id) "
                             "JOIN splits s USING (query_id)")
    assert {s for _, s in with_pairs} == {"train"} and not {frozenset(q.split()) for q, _ in with_pairs} & held_out
    assert len(with_pairs) == result.queries

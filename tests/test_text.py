import pytest

from conftest import write_csv
from relkit import RelkitError, import_file, load_judged_pairs, split_queries
from relkit.features.engagement import EngagedQueriesConfig, refresh_engaged_queries
from relkit.text import ItemTextTemplate, item_text


def test_template_orders_labels_and_budgets_fields():
    item = {"title": "Oak chair", "description": "A  low chair\nin solid oak with a woven seat",
            "caption": "a wooden chair on a porch", "engaged_queries": "porch chair oak",
            "board_titles": ["Porch ideas", "", None, "Reading nook"], "link_title": None, "link_description": "  "}
    assert item_text(item) == ("Oak chair\nA low chair in solid oak with a woven seat\nimage: a wooden chair on a "
                               "porch\nsearched: porch chair oak\nboards: Porch ideas; Reading nook")
    short = ItemTextTemplate.parse("caption:3,title")
    assert short.render(item) == "image: a wooden chair\nOak chair"
    assert short.render({"title": None}) == ""  # every field missing: empty text, no labels
    saved = ItemTextTemplate.from_list(short.to_list())
    assert saved == short and ItemTextTemplate.from_list(["title", "description"]).names == ("title", "description")


@pytest.mark.parametrize("spec, message", [
    ("title,colour", "unknown item text field 'colour'"),
    ("title:0", "word budget of 'title' must be a positive whole number"),
    ("title:x", "word budget of 'title'"),
    ("title,title", "named twice"),
    (" , ", "at least one field"),
])
def test_bad_template_specs(spec, message):
    with pytest.raises(RelkitError, match=message):
        ItemTextTemplate.parse(spec)


@pytest.fixture
def engaged_ws(tmp_path, ws):
    import_file(ws, "items", write_csv(tmp_path / "items.csv", ["item_id", "title"],
                                       [["A", "Chair"], ["B", "Lamp"], ["C", "Door"]]))
    rows = [
        ["red oak chair", "A", 10, 5, 0, 0, "2026-01-01"],
        ["the red chair", "A", 10, 2, 1, 0, "2025-06-01"],      # 'the' is a stopword
        ["blue lamp", "A", 50, 0, 0, 0, "2025-06-01"],          # no engagement: not counted
        ["old chair", "A", 10, 90, 10, 0, "2020-01-01"],        # older than two years before 2026-01-01
        ["Lámpara  azul", "B", 10, 0, 0, 3, "2025-12-01"],      # tokens of any script, lowercased
    ]
    path = write_csv(tmp_path / "eng.csv", ["query", "item_id", "impressions", "clicks", "saves", "long_clicks",
                                            "timestamp"], rows)
    result = import_file(ws, "engagement", path)
    assert result.engaged_items == 2 and "2 items with engaged-query tokens" in result.summary()
    return ws


def tokens(ws):
    return dict(ws.fetchall("SELECT item_id, tokens FROM engaged_queries"))


def test_engaged_query_tokens_have_known_answers(engaged_ws):
    # A: chair 5+3, red 5+3, oak 5 (ties by token); B: azul 3, lámpara 3; C: no engagement
    assert tokens(engaged_ws) == {"A": "chair red oak", "B": "azul lámpara"}
    assert refresh_engaged_queries(engaged_ws, EngagedQueriesConfig(top_n=1)) == 2
    assert tokens(engaged_ws) == {"A": "chair", "B": "azul"}
    refresh_engaged_queries(engaged_ws, EngagedQueriesConfig(window_days=3000))  # the 2020 row counts now
    assert tokens(engaged_ws) == {"A": "chair old red oak", "B": "azul lámpara"}
    refresh_engaged_queries(engaged_ws, EngagedQueriesConfig(as_of="2025-07-01"))  # only the 2025-06 rows
    assert tokens(engaged_ws) == {"A": "chair red"}


def test_engaged_tokens_reach_the_item_text(engaged_ws, tmp_path):
    judgments = write_csv(tmp_path / "j.csv", ["query", "item_id", "label"],
                          [["chair", "A", "5"], ["chair", "B", "1"], ["lamp", "C", "1"]])
    import_file(engaged_ws, "judgments", judgments, split="test")
    split_queries(engaged_ws)
    texts = dict(zip(load_judged_pairs(engaged_ws, "test").item_ids, load_judged_pairs(engaged_ws, "test").item_texts()))
    assert texts == {"A": "Chair\nsearched: chair red oak", "B": "Lamp\nsearched: azul lámpara", "C": "Door"}
    assert engaged_ws.get_meta("engaged_queries") is not None


def test_bad_engaged_config():
    with pytest.raises(RelkitError, match="top_n and window_days"):
        EngagedQueriesConfig(top_n=0)
    with pytest.raises(RelkitError, match="as_of must be an ISO date"):
        EngagedQueriesConfig(as_of="yesterday")

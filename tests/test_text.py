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


# --- tokenization by language (relkit.tokenization) ----------------------------------------------

def test_chinese_is_cut_into_characters_and_pairs_of_characters():
    import bm25s.stopwords

    from relkit.tokenization import Analyzer, Tokenizer

    assert "地" in bm25s.stopwords.STOPWORDS_CHINESE     # dropped alone, kept in its pairs
    assert Analyzer("zh", "bm25").terms("iPhone13手机壳 大落地窗") == [
        "iphone13", "手", "机", "壳", "手机", "机壳", "大", "落", "窗", "大落", "落地", "地窗"]
    tok = Tokenizer("by-language", "match")
    assert tok.phrase("落地窗", "zh") == " 落 地 窗 "
    assert tok.phrase("落地窗", "zh") in tok.phrase("铝合金落地窗断桥铝", "zh")
    # the English tokenization reads a run of ideographs as one word
    assert Tokenizer("english", "bm25").terms("大落地窗") == ["大落地窗"]


def test_thai_characters_keep_their_marks():
    from relkit.tokenization import Analyzer, characters

    assert characters("รองเท้าวิ่ง") == ["ร", "อ", "ง", "เ", "ท้", "า", "วิ่", "ง"]
    terms = Analyzer("th", "bm25").terms("วิ่ง")
    assert terms == ["วิ่", "ง", "วิ่ง"]


def test_german_and_spanish_are_stemmed_in_their_language():
    import Stemmer

    from relkit.tokenization import Tokenizer

    german, spanish = Stemmer.Stemmer("german"), Stemmer.Stemmer("spanish")
    tok = Tokenizer("by-language", "match")
    # 'die', 'für', 'las', 'de', 'la' are stopwords of their language
    assert tok.terms("Die Stühle für die Küche", "de") == german.stemWords(["stühle", "küche"]) \
        == ["stuhl", "kuch"]
    assert tok.terms("Stuhl", "de") == ["stuhl"] and tok.terms("Küchen", "de") == ["kuch"]
    assert tok.terms("Las lámparas de la cocina", "es") == spanish.stemWords(["lámparas", "cocina"]) \
        == ["lamp", "cocin"]
    assert tok.terms("corriendo", "es") == tok.terms("correr", "es") == ["corr"]
    # read as English they keep their forms (and 'die' is no English stopword)
    assert Tokenizer("english", "match").terms("Die Stühle für die Küche", "de") == ["die", "stühle", "für", "die",
                                                                                    "küche"]
    # a language without a stemmer: words lowercased, stopwords kept
    assert tok.terms("Tiếng Việt", "vi") == ["tiếng", "việt"]


def test_english_text_reads_as_it_always_has(tmp_path):
    """English under `by-language` gives what relkit gave before it read languages: bm25s's
    tokenizer with its English stopwords and the Snowball stemmer for BM25, scikit-learn's English
    stopwords for text match, on real Home Depot titles and queries."""
    import csv
    import re

    import bm25s
    import Stemmer
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    from conftest import head_lines, shared_file
    from relkit.tokenization import Tokenizer

    path = head_lines(shared_file("homedepot/pairs.csv"), tmp_path / "hd.csv", 500)
    with open(path, encoding="utf-8", newline="") as f:
        texts = [t for row in csv.DictReader(f) for t in (row["product_title"], row["search_term"])]
    english = Stemmer.Stemmer("english")
    want = bm25s.tokenize(texts, stopwords="en", stemmer=english, return_ids=False, show_progress=False)
    for name in ("by-language", "english"):
        assert Tokenizer(name, "bm25").terms_of(texts, ["en"] * len(texts)) == want
        match = Tokenizer(name, "match")
        for text in texts:
            words = [w for w in re.findall(r"\w+", text.lower()) if w not in ENGLISH_STOP_WORDS]
            assert match.terms(text, "en") == english.stemWords(words)
            assert match.phrase(text, "en") == " " + " ".join(re.findall(r"\w+", text.lower())) + " "

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import head_lines, shared_file, write_csv, write_jsonl
from relkit import InputError, LabelScale, RelkitError, Workspace, import_file
from relkit.data.importer import item_id_for, query_id_for


def counts(ws):
    return {t: ws.count(t) for t in ("items", "queries", "judgments", "pairs", "engagement", "splits")}


def catalog(tmp_path, ws):
    path = write_csv(tmp_path / "items.csv", ["item_id", "title", "description", "board_titles", "color"], [
        ["i1", "Red chair", "A wooden chair", "Garden|Patio", "red"],
        ["i2", "Blue hose", "", "", "blue"],
        ["i3", "Paint roller", "9 in. roller", '["Tools"]', ""],
    ])
    return import_file(ws, "items", path)


# --- reading the three formats ---------------------------------------------------------------

def test_items_csv_keeps_fields_and_extras(tmp_path, ws):
    result = catalog(tmp_path, ws)
    assert (result.added, result.rows) == (3, 3)
    rows = ws.fetchall("SELECT item_id, title, description, board_titles, extra FROM items ORDER BY item_id")
    assert rows[0] == ("i1", "Red chair", "A wooden chair", ["Garden", "Patio"], json.dumps({"color": "red"}))
    assert rows[1][2] is None and rows[1][3] is None  # empty CSV cell: absent
    assert rows[2][3] == ["Tools"]


def test_items_jsonl_and_parquet(tmp_path, ws):
    write_jsonl(tmp_path / "a.jsonl", [{"item_id": "j1", "title": "Lamp", "board_titles": ["Home"], "stock": 3}])
    pq.write_table(pa.table({"item_id": ["p1", "p2"], "title": ["Desk", "Rug"],
                             "language": ["en", "de"]}), tmp_path / "b.parquet")
    assert import_file(ws, "items", tmp_path / "a.jsonl").added == 1
    assert import_file(ws, "items", tmp_path / "b.parquet").added == 2
    assert ws.fetchone("SELECT board_titles, extra FROM items WHERE item_id = 'j1'") == (["Home"], '{"stock": 3}')
    assert ws.fetchone("SELECT language FROM items WHERE item_id = 'p2'") == ("de",)


def test_gzipped_jsonl(tmp_path, ws):
    with gzip.open(tmp_path / "q.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"query_id": "q1", "query": "grüne Lampe", "language": "de"}) + "\n")
    assert import_file(ws, "queries", tmp_path / "q.jsonl.gz").added == 1
    assert ws.fetchone("SELECT query FROM queries") == ("grüne Lampe",)


def test_judgments_with_inline_text_create_queries_and_items(tmp_path, ws):
    path = write_csv(tmp_path / "j.csv", ["query", "title", "description", "label", "rater"], [
        ["red chair", "Red chair", "A wooden chair", "5", "ann"],
        ["red chair", "Blue hose", None, "1", "bob"],
        ["garden hose", "Blue hose", None, "relevant", "ann"],
    ])
    result = import_file(ws, "judgments", path)
    assert (result.added, result.new_queries, result.new_items) == (3, 2, 2)
    hose = item_id_for("Blue hose", None)
    assert ws.fetchone("SELECT label, extra FROM judgments WHERE query_id = ? AND item_id = ?",
                       [query_id_for("garden hose"), hose]) == (4, '{"rater": "ann"}')


def test_map_renames_columns(tmp_path, ws):
    catalog(tmp_path, ws)
    path = write_csv(tmp_path / "j.csv", ["qid", "q", "doc", "grade"], [["A", "red chair", "i1", "4"]])
    import_file(ws, "judgments", path, mapping={"qid": "query_id", "q": "query", "doc": "item_id", "grade": "label"})
    assert ws.fetchall("SELECT query_id, item_id, label FROM judgments") == [("A", "i1", 4)]
    assert ws.fetchone("SELECT query FROM queries WHERE query_id = 'A'") == ("red chair",)
    with pytest.raises(InputError, match="--map reads column 'nope', which the file does not have"):
        import_file(ws, "judgments", path, mapping={"nope": "query_id"})


def test_pairs_and_engagement(tmp_path, ws):
    catalog(tmp_path, ws)
    pairs = write_csv(tmp_path / "p.csv", ["query", "item_id", "source"], [["chair", "i1", "bm25"], ["chair", "i2", "bm25"]])
    assert import_file(ws, "pairs", pairs).added == 2
    log = write_csv(tmp_path / "e.csv", ["query", "item_id", "impressions", "clicks", "saves", "long_clicks", "timestamp"], [
        ["chair", "i1", "10", "3", "1", "1", "2025-01-02T03:04:05Z"],
        ["chair", "i1", "4", "", "", "", "1735873445"],  # Unix seconds: a day later
    ])
    assert import_file(ws, "engagement", log).added == 2
    rows = ws.fetchall("SELECT impressions, clicks, saves, long_clicks, strftime(timestamp, '%Y-%m-%d %H:%M:%S') "
                       "FROM engagement ORDER BY impressions")
    assert rows == [(4, 0, 0, 0, "2025-01-03 03:04:05"), (10, 3, 1, 1, "2025-01-02 03:04:05")]
    assert import_file(ws, "engagement", log).added == 0
    same_key = write_csv(tmp_path / "e2.csv", ["query", "item_id", "impressions", "timestamp"],
                         [["chair", "i1", "11", "2025-01-02 03:04:05"]])
    with pytest.raises(InputError, match=r"e2.csv, line 2, field 'timestamp': the workspace already has other counts"):
        import_file(ws, "engagement", same_key)


# --- bad input: each names the file, the line and the field ---------------------------------

def test_missing_required_column(tmp_path, ws):
    path = write_csv(tmp_path / "j.csv", ["query", "title", "grade"], [["q", "t", "1"]])
    with pytest.raises(InputError) as e:
        import_file(ws, "judgments", path)
    assert str(e.value).startswith(str(path))
    assert "missing required column 'label'" in str(e.value) and "query, title, grade" in str(e.value)


def test_unknown_item_id(tmp_path, ws):
    catalog(tmp_path, ws)
    path = write_csv(tmp_path / "j.csv", ["query", "item_id", "label"], [["chair", "i1", "5"], ["chair", "i9", "1"]])
    with pytest.raises(InputError) as e:
        import_file(ws, "judgments", path)
    assert str(e.value) == (f"{path}, line 3, field 'item_id': unknown item 'i9': not in the workspace and not "
                            "described in this file (import the item first, or add its text to this file)")


def test_unknown_query_id(tmp_path, ws):
    catalog(tmp_path, ws)
    path = write_csv(tmp_path / "j.csv", ["query_id", "item_id", "label"], [["q7", "i1", "5"]])
    with pytest.raises(InputError, match=r"line 2, field 'query_id': unknown query 'q7'"):
        import_file(ws, "judgments", path)


def test_unknown_item_in_engagement(tmp_path, ws):
    catalog(tmp_path, ws)
    path = write_csv(tmp_path / "e.csv", ["query", "item_id", "impressions", "timestamp"],
                     [["chair", "i1", "3", "2025-01-01"], ["chair", "zz", "3", "2025-01-01"]])
    with pytest.raises(InputError, match=r"line 3, field 'item_id': unknown item 'zz'"):
        import_file(ws, "engagement", path)


def test_label_outside_scale(tmp_path, ws):
    path = write_csv(tmp_path / "j.csv", ["query", "title", "label"], [["a", "b", "3"], ["a", "c", "7"]])
    with pytest.raises(InputError) as e:
        import_file(ws, "judgments", path)
    assert str(e.value).startswith(f"{path}, line 3, field 'label': label '7' is not on the scale (1 = not relevant")


def test_label_outside_scale_names_the_source_column(tmp_path, ws):
    path = write_csv(tmp_path / "j.csv", ["query", "title", "grade"], [["a", "b", "0"]])
    with pytest.raises(InputError, match=r"line 2, field 'label' \(column 'grade'\): label '0'"):
        import_file(ws, "judgments", path, mapping={"grade": "label"})


def test_conflicting_duplicate_judgments_in_file(tmp_path, ws):
    path = write_csv(tmp_path / "j.csv", ["query", "title", "label"],
                     [["red chair", "Red chair", "5"], ["lamp", "Lamp", "2"], ["red  chair", "Red chair", "2"]])
    with pytest.raises(InputError, match=r"line 4, field 'label': conflicting judgments .* label 2 here, 5 on line 2"):
        import_file(ws, "judgments", path)


def test_same_duplicate_judgment_is_fine(tmp_path, ws):
    path = write_csv(tmp_path / "j.csv", ["query", "title", "label"], [["a", "b", "5"], ["a", "b", "5"]])
    assert import_file(ws, "judgments", path).added == 1


def test_conflicting_judgment_with_workspace(tmp_path, ws):
    write_csv(tmp_path / "a.csv", ["query", "title", "label"], [["a", "b", "5"]])
    write_csv(tmp_path / "b.csv", ["query", "title", "label"], [["x", "y", "1"], ["a", "b", "2"]])
    import_file(ws, "judgments", tmp_path / "a.csv")
    before = counts(ws)
    with pytest.raises(InputError, match=r"b.csv, line 3, field 'label': .*already has label 5"):
        import_file(ws, "judgments", tmp_path / "b.csv")
    assert counts(ws) == before  # the new query 'x' was not created either


def test_invalid_bytes_in_declared_encoding(tmp_path, ws):
    path = tmp_path / "j.csv"
    path.write_bytes("query,title,label\nchair,Red chair,5\ncaf\xe9,Latte cup,3\n".encode("latin-1"))
    with pytest.raises(InputError) as e:
        import_file(ws, "judgments", path)
    assert str(e.value).startswith(f"{path}, line 3: byte 0xe9 is not valid utf-8 (at column 4)")
    assert counts(ws)["judgments"] == 0
    result = import_file(ws, "judgments", path, encoding="latin-1")
    assert result.added == 2 and ws.fetchone("SELECT count(*) FROM queries WHERE query = 'café'") == (1,)


@pytest.mark.parametrize("content, message", [(b"", "the file is empty"),
                                              (b"query,title,label\n", "a header but no rows"),
                                              (b"query,title,label\r\n\r\n", "a header but no rows")])
def test_empty_csv(tmp_path, ws, content, message):
    path = tmp_path / "j.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as e:
        import_file(ws, "judgments", path)
    assert str(e.value).startswith(str(path))


def test_empty_jsonl_and_parquet(tmp_path, ws):
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(InputError, match="e.jsonl: the file is empty"):
        import_file(ws, "items", tmp_path / "e.jsonl")
    pq.write_table(pa.table({"item_id": pa.array([], pa.string())}), tmp_path / "e.parquet")
    with pytest.raises(InputError, match="e.parquet: the file has no rows"):
        import_file(ws, "items", tmp_path / "e.parquet")


def test_bad_json_line(tmp_path, ws):
    path = tmp_path / "i.jsonl"
    path.write_text('{"item_id": "a"}\n{"item_id": "b",\n')
    with pytest.raises(InputError, match=r"i.jsonl, line 2: not valid JSON"):
        import_file(ws, "items", path)


def test_parquet_errors_name_the_row(tmp_path, ws):
    pq.write_table(pa.table({"query": ["a", "b"], "title": ["x", "y"], "label": [2, 9]}), tmp_path / "j.parquet")
    with pytest.raises(InputError, match=r"j.parquet, row 2, field 'label'"):
        import_file(ws, "judgments", tmp_path / "j.parquet")


def test_ragged_csv_row(tmp_path, ws):
    path = tmp_path / "i.csv"
    path.write_text("item_id,title\ni1,Chair\ni2,Lamp,extra\n")
    with pytest.raises(InputError, match=r"i.csv, line 3: expected 2 fields as in the header, found 3"):
        import_file(ws, "items", path)


def test_conflicting_items_in_one_file(tmp_path, ws):
    path = write_csv(tmp_path / "i.csv", ["item_id", "title"], [["i1", "Chair"], ["i1", "Stool"]])
    with pytest.raises(InputError, match=r"line 3, field 'item_id': item 'i1' is described differently on line 2"):
        import_file(ws, "items", path)


def test_conflicting_queries_in_one_file(tmp_path, ws):
    path = write_csv(tmp_path / "q.csv", ["query_id", "query", "split"], [["q1", "chair", "x"], ["q1", "lamp", "x"]])
    with pytest.raises(InputError, match=r"q.csv, line 3, field 'query_id': query 'q1' is given differently on line 2"):
        import_file(ws, "queries", path)


def test_conflicting_engagement_in_one_file(tmp_path, ws):
    catalog(tmp_path, ws)
    path = write_csv(tmp_path / "e.csv", ["query", "item_id", "impressions", "timestamp"],
                     [["chair", "i1", "5", "2025-03-01"], ["chair", "i1", "5", "2025-03-02"],
                      ["chair", "i1", "6", "2025-03-01T00:00:00"]])
    with pytest.raises(InputError, match=r"line 4, field 'timestamp': the same query, item and timestamp are "
                                         r"counted differently on line 2"):
        import_file(ws, "engagement", path)


def test_bad_counts_and_timestamps(tmp_path, ws):
    catalog(tmp_path, ws)
    header = ["query", "item_id", "impressions", "clicks", "timestamp"]
    bad_count = write_csv(tmp_path / "a.csv", header, [["chair", "i1", "ten", "1", "2025-01-01"]])
    with pytest.raises(InputError, match=r"line 2, field 'impressions': expected a whole number"):
        import_file(ws, "engagement", bad_count)
    bad_time = write_csv(tmp_path / "b.csv", header, [["chair", "i1", "10", "1", "yesterday"]])
    with pytest.raises(InputError, match=r"line 2, field 'timestamp': expected an ISO 8601 time"):
        import_file(ws, "engagement", bad_time)


def test_missing_value_in_required_field(tmp_path, ws):
    path = write_csv(tmp_path / "j.csv", ["query", "title", "label"], [["a", "b", "2"], ["", "c", "2"]])
    with pytest.raises(InputError, match=r"line 3, field 'query': a value is required"):
        import_file(ws, "judgments", path)


# --- all or nothing, and idempotent ------------------------------------------------------------

def test_import_is_all_or_nothing(tmp_path, ws):
    rows = [[f"query {i}", f"item {i}", "3"] for i in range(50)] + [["query x", "item x", "9"]]
    path = write_csv(tmp_path / "j.csv", ["query", "title", "label"], rows)
    with pytest.raises(InputError, match="line 52"):
        import_file(ws, "judgments", path)
    assert counts(ws) == {t: 0 for t in counts(ws)}


def test_importing_twice_changes_nothing(tmp_path, ws):
    result = catalog(tmp_path, ws)
    path = write_csv(tmp_path / "j.csv", ["query", "item_id", "label"], [["chair", "i1", "5"], ["chair", "i2", "1"]])
    import_file(ws, "judgments", path, split="test")
    before = counts(ws)
    snapshot = ws.fetchall("SELECT * FROM items ORDER BY item_id"), ws.fetchall("SELECT * FROM judgments ORDER BY ALL")
    again = catalog(tmp_path, ws)
    assert (again.added, again.updated, again.unchanged) == (0, 0, result.added)
    assert import_file(ws, "judgments", path, split="test").added == 0
    assert counts(ws) == before
    assert (ws.fetchall("SELECT * FROM items ORDER BY item_id"),
            ws.fetchall("SELECT * FROM judgments ORDER BY ALL")) == snapshot


def test_newer_catalog_updates_items(tmp_path, ws):
    catalog(tmp_path, ws)
    path = write_csv(tmp_path / "i2.csv", ["item_id", "title"], [["i1", "Red oak chair"], ["i4", "Rug"]])
    result = import_file(ws, "items", path)
    assert (result.added, result.updated) == (1, 1)
    assert ws.fetchone("SELECT title FROM items WHERE item_id = 'i1'") == ("Red oak chair",)
    # the fields the file has no column for are kept: the description, the boards, the extra columns
    assert ws.fetchone("SELECT description, board_titles, extra->>'color' FROM items WHERE item_id = 'i1'") == (
        "A wooden chair", ["Garden", "Patio"], "red")


def test_a_file_of_some_fields_adds_them_and_keeps_the_rest(tmp_path, ws):
    catalog(tmp_path, ws)
    before = ws.fetchall("SELECT * FROM items ORDER BY item_id")
    images = write_csv(tmp_path / "images.csv", ["item_id", "image"], [["i1", "img/1.png"], ["i3", "img/3.png"]])
    result = import_file(ws, "items", images)
    assert (result.added, result.updated) == (0, 2)
    after = ws.fetchall("SELECT * FROM items ORDER BY item_id")
    assert [r[3] for r in after] == ["img/1.png", None, "img/3.png"]                    # the image column
    assert [r[:3] + r[4:] for r in after] == [r[:3] + r[4:] for r in before]          # everything else as it was
    assert import_file(ws, "items", images).unchanged == 2
    # a column that is there, empty, clears the field
    cleared = write_csv(tmp_path / "clear.csv", ["item_id", "image", "description"], [["i1", "", ""]])
    assert import_file(ws, "items", cleared).updated == 1
    assert ws.fetchone("SELECT title, description, image FROM items WHERE item_id = 'i1'") == ("Red chair", None, None)


def test_data_survives_reopening(tmp_path):
    path = write_csv(tmp_path / "j.csv", ["query", "title", "label"], [["a", "b", "2"]])
    with Workspace.create(tmp_path / "w") as ws:
        import_file(ws, "judgments", path)
    with Workspace.open(tmp_path / "w") as ws:
        assert ws.count("judgments") == 1


def test_split_option_pins_queries(tmp_path, ws):
    path = write_csv(tmp_path / "j.csv", ["query", "title", "label"], [["a", "b", "2"], ["c", "d", "3"]])
    assert import_file(ws, "judgments", path, split="test").pinned == 2
    assert ws.fetchall("SELECT split, pinned FROM splits") == [("test", True), ("test", True)]
    with pytest.raises(RelkitError, match="unknown split 'final'"):
        import_file(ws, "judgments", path, split="final")


# --- adapters for the real datasets ----------------------------------------------------------

def test_homedepot_adapter_on_real_rows(tmp_path, ws):
    path = head_lines(shared_file("homedepot/pairs.csv"), tmp_path / "hd.csv", 300)
    result = import_file(ws, "judgments", path, format="homedepot")
    assert result.rows == 300 and result.added == 300
    # first data line of the file: id 9, product 100002, 'deck over', relevance 3
    assert ws.fetchone("""SELECT q.query, j.label, i.title, j.extra FROM judgments j JOIN queries q USING (query_id)
                          JOIN items i USING (item_id) WHERE j.item_id = '100002' AND q.query = 'deck over'""") == (
        "deck over", 5, "BEHR Premium Textured DeckOver 1-gal. #SC-141 Tugboat Wood and Concrete Coating", '{"id": "9"}')


@pytest.mark.parametrize("relevance, level", [("1", 1), ("1.25", 2), ("1.33", 2), ("1.67", 2), ("1.75", 3),
                                              ("2", 3), ("2.33", 4), ("2.5", 4), ("2.67", 4), ("2.75", 5), ("3", 5)])
def test_homedepot_label_mapping(tmp_path, ws, relevance, level):
    path = write_csv(tmp_path / "hd.csv", ["id", "product_uid", "product_title", "search_term", "relevance"],
                     [["1", "100", "Drill", "drill", relevance]])
    import_file(ws, "judgments", path, format="homedepot")
    assert ws.fetchone("SELECT label FROM judgments") == (level,)


def test_homedepot_bad_relevance(tmp_path, ws):
    path = write_csv(tmp_path / "hd.csv", ["id", "product_uid", "product_title", "search_term", "relevance"],
                     [["1", "100", "Drill", "drill", "3.5"]])
    with pytest.raises(InputError, match=r"line 2, field 'label' \(column 'relevance'\): .*from 1 to 3"):
        import_file(ws, "judgments", path, format="homedepot")


def test_crowdflower_adapter_on_real_rows(tmp_path):
    path = head_lines(shared_file("crowdflower/pairs.csv"), tmp_path / "cf.csv", 400)
    with Workspace.create(tmp_path / "w4", LabelScale.default(4)) as ws:
        result = import_file(ws, "judgments", path, format="crowdflower")
        assert result.rows == 400 and result.added + result.merged == 400
        assert {r[0] for r in ws.fetchall("SELECT DISTINCT label FROM judgments")} <= {1, 2, 3, 4}
        # line 2 of the file: 'bridal shower decorations' / Accent Pillow..., median_relevance 1
        row = ws.fetchone("""SELECT j.label, i.description FROM judgments j JOIN queries q USING (query_id)
                             JOIN items i USING (item_id)
                             WHERE q.query = 'bridal shower decorations' AND i.title LIKE 'Accent Pillow with Heart%'""")
        assert row[0] == 1 and row[1].startswith("Red satin accent pillow")


def test_crowdflower_merges_repeated_pairs(tmp_path):
    header = ["id", "query", "product_title", "product_description", "median_relevance", "relevance_variance"]
    path = write_csv(tmp_path / "cf.csv", header, [["1", "dress shirts", "Shirt", "Nice", "3", "0.4"],
                                                   ["2", "dress shirts", "Shirt", "Nice", "4", "0"]])
    with Workspace.create(tmp_path / "w4", LabelScale.default(4)) as ws:
        result = import_file(ws, "judgments", path, format="crowdflower")
        assert (result.added, result.merged) == (1, 1)
        assert ws.fetchone("SELECT label FROM judgments") == (4,)  # mean 3.5, halves up


def gz_slice(src, dst, n_lines: int):
    """The first n lines of a real gzipped JSONL file, gzipped again."""
    with gzip.open(src, "rt", encoding="utf-8") as f, gzip.open(dst, "wt", encoding="utf-8") as out:
        for line, _ in zip(f, range(n_lines)):
            out.write(line)
    return dst


def test_xquad_r_adapter_on_real_rows(tmp_path):
    """XQuAD-R, German, as published (gzipped JSONL): 3 questions, each with 5 paragraphs of its article."""
    path = gz_slice(shared_file("multilingual/xquad_r_paragraph_de.jsonl.gz"), tmp_path / "de.jsonl.gz", 15)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    with Workspace.create(tmp_path / "w2", LabelScale.default(2)) as ws:
        result = import_file(ws, "judgments", path, format="xquad-r")
        assert (result.rows, result.added, result.new_queries) == (15, 15, 3)
        assert result.new_items == len({r["doc_id"] for r in rows})
        assert result.detected == {}                    # every language is the file's
        for r in rows:
            assert ws.fetchone("""SELECT q.query, q.language, i.title, i.description, i.language, j.label, j.extra
                                  FROM judgments j JOIN queries q USING (query_id) JOIN items i USING (item_id)
                                  WHERE j.query_id = ? AND j.item_id = ?""", [r["qid"], r["doc_id"]]) == (
                r["query"], "de", None, r["doc"], "de", r["label"] + 1,
                json.dumps({"article": r["title"], "label_kind": r["label_kind"], "neg_type": r["neg_type"],
                            "source": r["source"]}, sort_keys=True))
        assert import_file(ws, "judgments", path, format="xquad-r").added == 0
    with Workspace.create(tmp_path / "w5") as ws, \
            pytest.raises(RelkitError, match=r"--format xquad-r gives 2 levels.*relkit init DIR --levels 2"):
        import_file(ws, "judgments", path, format="xquad-r")


def test_multicpr_adapter_on_real_rows(tmp_path):
    path = gz_slice(shared_file("multilingual/multicpr_ecom_zh.jsonl.gz"), tmp_path / "zh.jsonl.gz", 9)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        first = json.loads(f.readline())
    with Workspace.create(tmp_path / "w2", LabelScale.default(2)) as ws:
        assert import_file(ws, "judgments", path, format="multicpr").added == 9
        assert ws.fetchone("""SELECT i.title, i.description, i.language, q.language, j.label, j.extra->>'neg_type'
                              FROM judgments j JOIN queries q USING (query_id) JOIN items i USING (item_id)
                              WHERE j.item_id = ?""", [first["doc_id"]]) == (
            first["doc"], None, "zh", "zh", first["label"] + 1, first["neg_type"])


@pytest.mark.parametrize("label", ["2", "0.5", "-1"])
def test_xquad_r_labels_are_zero_or_one(tmp_path, label):
    path = write_jsonl(tmp_path / "x.jsonl", [{"qid": "q", "query": "Wer?", "doc_id": "d", "doc": "Er.",
                                               "label": label, "lang": "de"}])
    with Workspace.create(tmp_path / "w2", LabelScale.default(2)) as ws, \
            pytest.raises(InputError, match=r"line 1, field 'label'.*xquad-r label is 1 .* or 0"):
        import_file(ws, "judgments", path, format="xquad-r")


def test_adapter_names_a_missing_column(tmp_path, ws):
    path = write_csv(tmp_path / "hd.csv", ["id", "product_uid", "product_title", "search_term"], [["1", "2", "t", "q"]])
    with pytest.raises(InputError, match="--format homedepot reads column 'relevance', which the file does not have"):
        import_file(ws, "judgments", path, format="homedepot")


def test_pairs_found_by_two_sources(tmp_path, ws):
    catalog(tmp_path, ws)
    path = write_csv(tmp_path / "p.csv", ["query", "item_id", "source"], [["chair", "i1", "bm25"], ["chair", "i1", "knn"]])
    assert import_file(ws, "pairs", path).added == 1
    assert ws.fetchall("SELECT source FROM pairs") == [("bm25",)]


def test_adapter_needs_matching_scale(tmp_path, ws):
    path = write_csv(tmp_path / "cf.csv", ["query"], [["x"]])
    with pytest.raises(RelkitError, match=r"--format crowdflower gives 4 levels.*relkit init DIR --levels 4"):
        import_file(ws, "judgments", path, format="crowdflower")


def test_an_item_described_again_with_other_spacing_is_one_item(ws, tmp_path):
    """A text-only item's id is a hash of its whitespace-normalised text, so rows whose title differs
    only in spacing (as in the public CrowdFlower file: "Keurig  Coffee" / "Keurig Coffee") are one
    item: the first description is kept and the summary counts the merge; other differences are
    still an error."""
    rows = [["coffee maker", "Keurig  Coffee", "a brewer", "4"], ["k cups", "Keurig Coffee", "a  brewer", "3"],
            ["tea", "Kettle", "", "2"]]
    result = import_file(ws, "judgments", write_csv(tmp_path / "j.csv", ["query", "title", "description", "label"],
                                                    rows))
    assert (result.added, result.new_items, result.respaced) == (3, 2, 1)
    assert "1 item descriptions that differ only in spacing merged (the first kept)" in result.summary()
    assert ws.fetchall("SELECT title, description FROM items ORDER BY title") == [("Kettle", None),
                                                                                ("Keurig  Coffee", "a brewer")]
    clash = write_csv(tmp_path / "k.csv", ["item_id", "title", "label", "query"],
                      [["x", "Red chair", "1", "a"], ["x", "Red  chairs", "2", "b"]])
    with pytest.raises(InputError, match="item 'x' is described differently"):
        import_file(ws, "judgments", clash)

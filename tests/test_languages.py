"""Languages on import (relkit.languages, data/importer.py), BM25 in the text's language, and the
tokenization a student records."""
import gzip
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import feature_snapshot
from conftest import ROOT, head_lines, shared_file, write_csv, write_jsonl
from relkit import InputError, Workspace, import_file
from relkit.errors import RelkitError
from relkit.features.bm25 import BM25Index
from relkit.languages import detect, detect_languages, language_among
from relkit.student import FeatureBuilder, FeatureConfig, Student


def stored(ws, table):
    key = "query_id" if table == "queries" else "item_id"
    return dict(ws.fetchall(f"SELECT {key}, language FROM {table}"))


def first_questions(relative: str, n: int) -> list[tuple[str, str]]:
    """(qid, query) of the first n distinct questions of a shared JSONL file."""
    seen: dict[str, str] = {}
    with gzip.open(shared_file(relative), "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            seen.setdefault(row["qid"], row["query"])
            if len(seen) == n:
                break
    return list(seen.items())


# --- detection on import ------------------------------------------------------------------------

def test_the_files_language_wins_over_detection(tmp_path, ws):
    path = write_csv(tmp_path / "q.csv", ["query_id", "query", "language"], [
        ["q1", "Wie viele Punkte gab die Verteidigung ab?", "en"],   # German text, the file says English
        ["q2", "screen door", "EN-us"],
        ["q3", "¿Cuántos puntos dejaron escapar?", None],           # no value: detected
    ])
    result = import_file(ws, "queries", path)
    assert stored(ws, "queries") == {"q1": "en", "q2": "en", "q3": "es"}
    assert result.detected == {"es": 1}
    assert "language detected for 1 queries and items (es 1)" in result.summary()
    # `lang` is read as `language`
    items = write_jsonl(tmp_path / "i.jsonl", [{"item_id": "i1", "title": "Haus am See", "lang": "fr"}])
    import_file(ws, "items", items)
    assert stored(ws, "items") == {"i1": "fr"}


def test_a_language_that_is_not_a_code_is_an_error_naming_its_line(tmp_path, ws):
    path = write_csv(tmp_path / "q.csv", ["query_id", "query", "language"], [["q1", "lamp", "en"],
                                                                             ["q2", "Lampe", "German"]])
    with pytest.raises(InputError, match=r"line 3.*language.*expected an ISO 639-1 language code.*'German'"):
        import_file(ws, "queries", path)
    assert ws.count("queries") == 0


def test_short_questions_in_four_languages_are_detected_together(tmp_path, ws):
    """Real questions of XQuAD-R (English, Spanish, German) and Chinese product queries of Multi-CPR,
    one file without a language column."""
    sets = {lang: first_questions(f"multilingual/xquad_r_paragraph_{lang}.jsonl.gz", 20) for lang in ("en", "es", "de")}
    sets["zh"] = first_questions("multilingual/multicpr_ecom_zh.jsonl.gz", 20)
    rows = [[qid, query] for questions in sets.values() for qid, query in questions]
    result = import_file(ws, "queries", write_csv(tmp_path / "q.csv", ["query_id", "query"], rows))
    want = {qid: lang for lang, questions in sets.items() for qid, _ in questions}
    assert stored(ws, "queries") == want
    assert result.detected == {"en": 20, "es": 20, "de": 20, "zh": 20}


def test_an_english_catalogs_short_queries_are_english(tmp_path, ws):
    """Home Depot's product queries alone often read as another language ('door' looks Dutch);
    among an English catalog they are English."""
    path = head_lines(shared_file("homedepot/pairs.csv"), tmp_path / "hd.csv", 400)
    import_file(ws, "judgments", path, format="homedepot")
    queries = dict(ws.fetchall("SELECT query_id, query FROM queries"))
    alone = {qid: detect(text)[0] for qid, text in queries.items()}
    assert sum(code not in ("en", None) for code in alone.values()) >= 5    # what detection alone would store
    # a query without a letter ('36') has no language
    assert stored(ws, "queries") == {qid: "en" if any(c.isalpha() for c in text) else None
                                     for qid, text in queries.items()}
    assert set(stored(ws, "items").values()) == {"en"}


def test_chinese_items_and_queries_of_a_judgments_file(tmp_path):
    """Multi-CPR's rows without their `lang`: product titles and queries are detected as Chinese."""
    with gzip.open(shared_file("multilingual/multicpr_ecom_zh.jsonl.gz"), "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line, _ in zip(f, range(60))]
    path = write_jsonl(tmp_path / "zh.jsonl", [{"qid": r["qid"], "query": r["query"], "doc_id": r["doc_id"],
                                                "doc": r["doc"], "label": r["label"] + 1} for r in rows])
    from relkit import LabelScale

    with Workspace.create(tmp_path / "ws", LabelScale.default(2)) as ws:
        result = import_file(ws, "judgments", path, mapping={"qid": "query_id", "doc_id": "item_id", "doc": "title"})
        assert set(stored(ws, "items").values()) == {"zh"} and set(stored(ws, "queries").values()) == {"zh"}
        assert result.detected == {"zh": ws.count("items") + ws.count("queries")}


def test_an_older_workspace_gets_its_languages_on_the_next_import(tmp_path, ws):
    path = write_csv(tmp_path / "i.csv", ["item_id", "title", "description"], [
        ["a", "Roter Stuhl", "Ein Stuhl aus Eiche, rot lackiert, für die Küche"],
        ["b", "Blaue Lampe", "Eine Lampe aus Glas für das Wohnzimmer"],
    ])
    import_file(ws, "items", path)
    ws.run("UPDATE items SET language = NULL")          # as imported before relkit read languages
    result = import_file(ws, "queries", write_csv(tmp_path / "q.csv", ["query_id", "query"], [["q", "Stuhl"]]))
    assert stored(ws, "items") == {"a": "de", "b": "de"} and stored(ws, "queries") == {"q": "de"}
    assert result.detected == {"de": 3}


def test_a_query_is_weighed_by_the_catalogs_languages():
    assert detect("bronze door hinge")[0] == "nl"
    assert language_among("bronze door hinge", {"en": 100}) == "en"
    assert language_among("bronze door hinge", {"en": 90, "de": 10}) == "en"
    assert language_among("Türscharnier aus Bronze", {"en": 50, "de": 50}) == "de"
    assert language_among("3/4", {"en": 1, "de": 1}) is None
    assert detect_languages(["", None, "12"]) == [None, None, None]


# --- BM25 in the text's language ----------------------------------------------------------------

def test_a_chinese_query_finds_its_product_by_bm25():
    """Multi-CPR: each of the first 30 queries against every product title of the first 30 queries'
    pairs: 29 rank their product first (not '预适应训练仪', whose product shares one character with it).
    Split at spaces (the English tokenization), none does."""
    with gzip.open(shared_file("multilingual/multicpr_ecom_zh.jsonl.gz"), "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    queries = list(dict.fromkeys(r["qid"] for r in rows))[:30]
    rows = [r for r in rows if r["qid"] in queries]
    titles = {r["doc_id"]: r["doc"] for r in rows}
    ids = list(titles)
    by_language = BM25Index(ids, [titles[i] for i in ids], ["zh"] * len(ids))
    english = BM25Index(ids, [titles[i] for i in ids], tokenization="english")
    found, found_english = 0, 0
    for qid in queries:
        text = next(r["query"] for r in rows if r["qid"] == qid)
        match = next(r["doc_id"] for r in rows if r["qid"] == qid and r["label"] == 1)
        found += [ids[i] for i in by_language.top_k([text], 1)[0]] == [match]
        found_english += [ids[i] for i in english.top_k([text], 1)[0]] == [match]
    assert (found, found_english) == (29, 0)


def test_a_thai_query_finds_its_item_by_bm25():
    titles = {"shoes": "รองเท้าวิ่งผู้ชาย ไนกี้ สีดำ",          # men's running shoes, Nike, black
              "rice": "หม้อหุงข้าวไฟฟ้า 1.8 ลิตร",                # electric rice cooker, 1.8 litres
              "phone": "โทรศัพท์มือถือ หน้าจอ 6.5 นิ้ว"}          # mobile phone, 6.5-inch screen
    index = BM25Index(list(titles), list(titles.values()))
    assert index.languages == {"th": 3}
    for query, item in (("รองเท้าวิ่ง", "shoes"), ("หม้อหุงข้าว", "rice"), ("มือถือ", "phone")):
        assert [list(titles)[i] for i in index.top_k([query], 1)[0]] == [item]


def test_spanish_and_german_queries_find_other_forms_of_their_words():
    titles = {"shoes": "Zapatillas para correr", "chair": "Stuhl aus Eiche für die Küche",
              "saw": "Sierra circular"}
    ids, texts = list(titles), list(titles.values())
    index = BM25Index(ids, texts, ["es", "de", "es"])
    english = BM25Index(ids, texts, tokenization="english")
    assert index.score("corriendo", ids, "es")[0] > 0 and english.score("corriendo", ids)[0] == 0
    assert index.score("Stühle", ids, "de")[1] > 0 and english.score("Stühle", ids)[1] == 0
    assert index.score("Küchen", ids, "de")[1] > 0 and index.score("Küchen", ids, "de")[0] == 0


# --- the tokenization a student records ---------------------------------------------------------

def test_a_student_records_its_tokenization_and_refuses_features_made_another_way(shop, tmp_path):
    builder = FeatureBuilder.from_workspace(shop, FeatureConfig(groups=("bm25", "text_match")))
    assert builder.config.tokenization == "by-language"
    feature_snapshot.random_student(builder, shop.scale).save(tmp_path / "student")
    saved = json.loads((tmp_path / "student" / "relkit.json").read_text())
    assert saved["features"]["tokenization"] == "by-language"
    student = Student.load(tmp_path / "student")
    student.check_builder(builder)
    english = FeatureBuilder.from_workspace(shop, FeatureConfig(groups=("bm25", "text_match"), tokenization="english"))
    # the same English shop gives the same features either way, and still they are refused
    ids = list(builder.items.item_ids)
    np.testing.assert_array_equal(english.pairs(["red chairs"] * len(ids), ids).pair,
                                  builder.pairs(["red chairs"] * len(ids), ids).pair)
    with pytest.raises(RelkitError, match="the features do not match the student's"):
        student.check_builder(english)
    with pytest.raises(RelkitError, match="unknown tokenization 'jieba'"):
        FeatureConfig(tokenization="jieba")


def test_a_student_saved_before_tokenizations_had_names_reads_english_features(tmp_path):
    """The student kept in tests/data/features/ predates named tokenizations: it loads with the English
    tokenization, and refuses features made each text in its language."""
    path = shutil.copytree(feature_snapshot.DATA / "student", tmp_path / "student")
    meta = json.loads((path / "relkit.json").read_text())
    assert "tokenization" not in meta["features"]
    student = Student.load(path)
    assert student.feature_config().tokenization == "english"
    assert FeatureConfig.from_dict({**meta["features"], "tokenization": "by-language"}).tokenization == "by-language"


# --- the benchmark ------------------------------------------------------------------------------

def test_the_detection_benchmark_runs_on_a_slice():
    shared_file("multilingual/xquad_r_paragraph_en.jsonl.gz")
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "language_detection.py"), "--limit", "8",
                          "--detectors", "py3langid", "relkit, one query alone", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    rows = {row["detector"]: row["sets"] for row in json.loads(run.stdout)}
    assert list(rows) == ["py3langid", "relkit, one query alone", "relkit, each set as one import",
                          "relkit, all sets as one import"]
    assert all(list(sets) == ["xquad-r en", "xquad-r es", "xquad-r de", "multi-cpr zh", "home depot en"]
               and all(s["queries"] == 8 for s in sets.values()) for sets in rows.values())
    assert rows["relkit, each set as one import"]["xquad-r de"]["accuracy"] == 1.0


def test_the_tokenization_benchmark_runs_on_a_slice():
    shared_file("multilingual/multicpr_ecom_zh.jsonl.gz")
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tokenization.py"), "--limit", "6", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    figures = json.loads(run.stdout[run.stdout.index("{"):])
    assert list(figures) == ["multi-cpr zh", "xquad-r en", "xquad-r es", "xquad-r de"]
    assert {"english", "characters", "character pairs", "by-language"} <= set(figures["multi-cpr zh"])
    assert all(f["queries"] == 6 for options in figures.values() for f in options.values())
    # on English text the two tokenizations are one
    assert figures["xquad-r en"]["english"]["ndcg@10"] == figures["xquad-r en"]["by-language"]["ndcg@10"]

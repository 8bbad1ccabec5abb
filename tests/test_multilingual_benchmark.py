"""benchmarks/multilingual.py on a slice of XQuAD-R (6 articles of 4 questions) with tiny models, as a
process of its own: the article split is disjoint, recorded before training and is the workspace's;
its figures are the ones `relkit eval --by language` gives, and every ratio is the language's printed
figure over English's."""
from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys

import duckdb
import numpy as np
import pytest
from conftest import ROOT, SHARED_DATA, relkit_command

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "200"}
SYSTEMS = ["bm25", "english-bi-encoder", "multilingual-bi-encoder", "teacher-minilm", "teacher-e5", "student-e5",
           "student-human"]
LANGUAGES = ["en", "es", "de"]
METRICS = ["auroc@2", "ndcg@10", "mrr"]
HALF = 5e-5          # half a unit of the 4th decimal: the rounding of a printed figure
XQUAD = SHARED_DATA / "multilingual"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if not (XQUAD / "xquad_r_paragraph_en.jsonl.gz").exists():
        pytest.skip("XQuAD-R is not in ../shared/data")
    workdir = tmp_path_factory.mktemp("multilingual")
    out = workdir / "figures.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "multilingual.py"), "--tiny", "--workdir",
                           str(workdir / "run"), "--json", str(out)], capture_output=True, text=True, env=ENV,
                          timeout=600, check=False)
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return workdir / "run", json.loads(out.read_text()), done.stdout


def sql(ws, query: str) -> list[tuple]:
    with duckdb.connect(str(ws / "relkit.duckdb"), read_only=True) as con:
        return con.execute(query).fetchall()


def test_articles_split_disjoint_recorded_and_used(run):
    workdir, figures, stdout = run
    split = figures["split"]
    assert split == json.loads((workdir / "split.json").read_text())
    parts = split["articles"]
    assert set(parts) == {"train", "dev", "test"}
    names = [a for part in parts.values() for a in part]
    assert len(names) == len(set(names)) == 6
    with gzip.open(XQUAD / "xquad_r_paragraph_en.jsonl.gz", "rt", encoding="utf-8") as f:
        first = list(dict.fromkeys(json.loads(line)["doc_id"].split("-")[2] for line in f))[:6]
    assert sorted(names) == sorted(first)
    # recorded before any training: printed first, and the file is older than every teacher
    lines = stdout.splitlines()
    assert next(i for i, x in enumerate(lines) if "written to" in x) < next(i for i, x in enumerate(lines)
                                                                            if "training the" in x)
    for teacher in ("minilm", "e5"):
        assert (workdir / "split.json").stat().st_mtime <= (workdir / "workspace" / "artifacts"
                                                             / f"teacher-{teacher}").stat().st_mtime
    # the workspace's splits are the articles': English only in train, every language in dev and test
    ws = workdir / "workspace"
    rows = sql(ws, "SELECT DISTINCT s.split, q.language, split_part(j.item_id, '-', 3) FROM judgments j "
                   "JOIN splits s USING (query_id) JOIN queries q USING (query_id)")
    assert {(p, lang, a) for p, lang, a in rows} == (
        {("train", "en", a) for a in parts["train"]}
        | {(p, lang, a) for p in ("dev", "test") for lang in LANGUAGES for a in parts[p]})
    # the Spanish and German dev questions arrive once both teachers are trained: they pick on English alone
    trained = max(i for i, x in enumerate(lines) if "teacher e5:" in x or "teacher minilm:" in x)
    assert trained < min(i for i, x in enumerate(lines) if re.search(r"imported (es|de)-dev", x))
    assert figures["student_dev_languages"] == LANGUAGES
    # the teacher labeled only train-article pairs
    labeled = sql(ws, "SELECT DISTINCT split_part(item_id, '-', 3), split_part(item_id, '-', 2) FROM pairs")
    assert set(labeled) == {(a, "en") for a in parts["train"]}
    assert split["english_questions"] == {
        p: sql(ws, f"SELECT count(*) FROM splits s JOIN queries q USING (query_id) WHERE split = '{p}' AND "
                   "language = 'en'")[0][0] for p in ("train", "dev", "test")}
    assert split["english_questions"]["test"] == 12   # 3 test articles of 4 questions


def test_figures_per_language_and_system_and_ratios(run):
    _, figures, stdout = run
    assert list(figures["languages"]) == LANGUAGES
    printed = {}
    for line in stdout.splitlines():
        cells = line.split()
        if len(cells) == 8 and cells[0] in SYSTEMS and cells[1] in LANGUAGES:
            printed[cells[0], cells[1]] = [None if c == "-" else float(c) for c in cells[2:]]
    assert set(printed) == {(s, lang) for s in SYSTEMS for lang in LANGUAGES}
    for lang in LANGUAGES:
        assert list(figures["languages"][lang]) == SYSTEMS
        for system in SYSTEMS:
            m = figures["languages"][lang][system]
            assert set(m) == {*METRICS, "ratio"} and set(m["ratio"]) == set(METRICS)
            values = printed[system, lang]
            for i, metric in enumerate(METRICS):
                assert values[i] == pytest.approx(m[metric], abs=5e-5)
                english = figures["languages"]["en"][system][metric]
                assert m["ratio"][metric] == pytest.approx(m[metric] / english, rel=1e-12)
                # the printed ratio is the printed figure over the printed English one, to the rounding
                # of the three (each to half a unit of the 4th decimal)
                a, b = values[i], printed[system, "en"][i]
                assert values[3 + i] == pytest.approx(a / b, abs=HALF / b * (1 + a / b) + 2 * HALF)
                assert values[3 + i] == pytest.approx(m["ratio"][metric], abs=HALF)


def test_figures_match_relkit_eval_by_language(run):
    workdir, figures, _ = run
    done = subprocess.run(relkit_command("eval", "-s", "bm25", "-s", "student:human", "-s", "teacher:e5", "--by",
                                         "language", "--json", "-w", str(workdir / "workspace")),
                          capture_output=True, text=True, env=ENV, timeout=300, check=True)
    report = json.loads(done.stdout)["by"]["language"]
    for lang in LANGUAGES:
        for system in report[lang]["systems"]:
            name = {"bm25": "bm25", "student:human": "student-human", "teacher:e5": "teacher-e5"}[system["name"]]
            for metric in ("auroc@2", "ndcg@10"):
                assert figures["languages"][lang][name][metric] == pytest.approx(system["metrics"][metric], abs=1e-9)


def test_mrr_of_bm25_by_hand(run):
    """bm25's MRR recomputed from relkit's own bm25 scores, ranking each query's items here."""
    workdir, figures, _ = run
    from relkit import Workspace, make_system
    from relkit.labels import load_judged_pairs

    with Workspace.open(workdir / "workspace") as ws:
        pairs = load_judged_pairs(ws, "test")
        scores = make_system("bm25", ws).predict(pairs).scores
        language = dict(ws.fetchall("SELECT query_id, language FROM queries"))
    for lang in LANGUAGES:
        reciprocal = []
        for q in dict.fromkeys(pairs.query_ids):
            if language[q] != lang:
                continue
            mine = [(scores[i], pairs.labels[i]) for i, x in enumerate(pairs.query_ids) if x == q]
            # the first relevant item: the items scored above it, and those tied with it that come
            # before it in item order, rank first
            at = next(j for j, (_, level) in enumerate(mine) if level == 2)
            above = sum(s > mine[at][0] or (s == mine[at][0] and j < at) for j, (s, _) in enumerate(mine))
            reciprocal.append(1 / (1 + above))
        assert figures["languages"][lang]["bm25"]["mrr"] == pytest.approx(sum(reciprocal) / len(reciprocal))


def test_checks_printed_and_recorded(run):
    _, figures, stdout = run
    checks = figures["checks"]
    # 2 (teacher keeps English AUROC@2) + 3 (teacher beats the better baseline) + 2 x 2 (student)
    assert len(checks) == 9
    printed = re.findall(r"^  \[(pass|FAIL)\] (.+?): ", stdout, flags=re.MULTILINE)
    assert printed == [("pass" if c["pass"] else "FAIL", c["check"]) for c in checks]
    en = figures["languages"]["en"]["teacher-e5"]["auroc@2"]
    for c in checks[:2]:
        assert c["value"] == pytest.approx(figures["languages"][c["language"]]["teacher-e5"]["auroc@2"] / en)
        assert c["pass"] == (c["value"] >= 0.97)
    for c in checks[2:5]:
        ndcg = {s: figures["languages"][c["language"]][s]["ndcg@10"] for s in ("bm25", "multilingual-bi-encoder")}
        assert ndcg[c["baseline"]] == max(ndcg.values())
        assert c["interval"]["mean"] == pytest.approx(
            figures["languages"][c["language"]]["teacher-e5"]["ndcg@10"] - ndcg[c["baseline"]], abs=1e-9)
        assert c["pass"] == (c["interval"]["low"] > 0)


def test_teachers_reused_and_the_student_labels_in_every_language(run, tmp_path):
    """--teachers-from copies a run's teachers (refused for another split), and --student-languages
    has the e5 teacher label the train articles' questions in Spanish and German too: pairs of train
    articles only, and still no judgment outside English."""
    workdir, _, _ = run
    base = [sys.executable, str(ROOT / "benchmarks" / "multilingual.py"), "--tiny", "--teachers-from", str(workdir)]
    refused = subprocess.run(base + ["--seed", "1", "--workdir", str(tmp_path / "other")], capture_output=True,
                             text=True, env=ENV, timeout=300, check=False)
    assert refused.returncode != 0 and "its article split is not this run's" in refused.stderr
    assert not (tmp_path / "other" / "workspace").exists()

    again = tmp_path / "again"
    done = subprocess.run(base + ["--student-languages", "en,es,de", "--other-articles", "2", "--student-set",
                                  "batch_size=32", "--test-pool", "2", "--workdir", str(again), "--json", str(tmp_path / "again.json")],
                          capture_output=True, text=True, env=ENV, timeout=600, check=False)
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert "training the" not in done.stdout and done.stdout.count("copied from") == 2
    for teacher in ("minilm", "e5"):
        for name in ("model.safetensors", "relkit.json"):
            old = workdir / "workspace" / "artifacts" / f"teacher-{teacher}" / name
            assert (again / "workspace" / "artifacts" / f"teacher-{teacher}" / name).read_bytes() == old.read_bytes()
    parts = json.loads((again / "split.json").read_text())["articles"]
    ws = again / "workspace"
    labeled = sql(ws, "SELECT DISTINCT split_part(item_id, '-', 3), split_part(item_id, '-', 2) FROM pairs")
    assert set(labeled) == {(a, lang) for a in parts["train"] for lang in LANGUAGES}
    # the Spanish and German questions are train queries without a judgment
    assert sql(ws, "SELECT DISTINCT q.language FROM judgments j JOIN splits s USING (query_id) JOIN queries q "
                   "USING (query_id) WHERE s.split = 'train'") == [("en",)]
    # --other-articles 2: each student question also has 2 paragraphs of other train articles, in its language
    other = sql(ws, "SELECT p.query_id, p.item_id FROM pairs p LEFT JOIN judgments j USING (query_id, item_id) "
                    "WHERE j.query_id IS NULL")
    judged_article = dict(sql(ws, "SELECT DISTINCT query_id, split_part(item_id, '-', 3) FROM judgments"))
    crossing = [(q, i) for q, i in other if q in judged_article and i.split("-")[2] != judged_article[q]]
    english = sql(ws, "SELECT count(DISTINCT query_id) FROM judgments JOIN splits USING (query_id) "
                      "WHERE split = 'train'")[0][0]
    assert len(crossing) == 2 * english and all(q.split("-")[1] == i.split("-")[1] for q, i in crossing)
    per_question = sql(ws, "SELECT query_id, count(*) FROM pairs GROUP BY query_id")
    assert {n for _, n in per_question} == {5 + 2}      # an article's 5 paragraphs and 2 of other articles
    settings = json.loads((tmp_path / "again.json").read_text())
    assert settings["other_articles"] == 2 and settings["student_settings"] == {"batch_size": 32}
    student = json.loads((ws / "artifacts" / "student-e5" / "relkit.json").read_text())
    assert student["config"]["batch_size"] == 32
    assert {lang for (lang,) in sql(ws, "SELECT DISTINCT q.language FROM pairs p JOIN splits s USING (query_id) "
                                        "JOIN queries q USING (query_id) WHERE s.split = 'train'")} == set(LANGUAGES)

    # --test-pool 2: every system is also scored on each test question's judged paragraphs and the 2 best
    # of the other test articles' paragraphs in its language by bm25 and by the multilingual bi-encoder
    pool = settings["pool"]
    assert pool["k"] == 2 and list(pool["languages"]) == LANGUAGES
    assert all(list(pool["languages"][lang]) == SYSTEMS for lang in LANGUAGES)
    from relkit import Workspace, make_system
    from relkit.labels import JudgedPairs, load_judged_pairs

    with Workspace.open(ws) as opened:
        test = load_judged_pairs(opened, "test")
        language = dict(opened.fetchall("SELECT query_id, language FROM queries"))
        items = {i["item_id"]: i for i in test.items}
        text = dict(zip(test.query_ids, test.queries))
        expected = set()
        for lang in LANGUAGES:
            questions = sorted({q for q in test.query_ids if language[q] == lang})
            paragraphs = sorted({i for q, i in zip(test.query_ids, test.item_ids) if language[q] == lang})
            assert len(paragraphs) == 5 * len(parts["test"])
            cross = JudgedPairs(split="test", query_ids=[q for q in questions for _ in paragraphs],
                                queries=[text[q] for q in questions for _ in paragraphs],
                                items=[items[i] for _ in questions for i in paragraphs], labels=np.ones(
                                    len(questions) * len(paragraphs), dtype=np.int64))
            for system in ("bm25", "embedding"):
                scores = make_system(system, opened).predict(cross).scores.reshape(len(questions), len(paragraphs))
                for q, row in zip(questions, scores):
                    others = [(-s, i) for s, i in zip(row, paragraphs) if i.split("-")[2] != judged_article[q]]
                    expected |= {(q, i) for _, i in sorted(others)[:2]}
    assert pool["added"] == len(expected) and pool["pairs"] == len(test) + len(expected)
    assert 2 * len(test) // 5 <= len(expected) <= 4 * len(test) // 5
    printed = re.findall(r"^  \[(pass|FAIL)\] (.+?): ", done.stdout, flags=re.MULTILINE)
    assert printed[-3:] == [("pass" if c["pass"] else "FAIL", c["check"]) for c in pool["checks"]]
    assert all("over the retrieval pool" in c["check"] for c in pool["checks"])


def test_teacher_set_trains_only_the_e5_teacher_again(run, tmp_path):
    """--teacher-set reaches the e5 teacher's training; with --teachers-from the MiniLM teacher, trained
    as this run would, is copied and the e5 one, trained otherwise, is trained again. Settings the run
    owns are refused before anything is written."""
    workdir, _, _ = run
    base = [sys.executable, str(ROOT / "benchmarks" / "multilingual.py"), "--tiny", "--teachers-from", str(workdir)]
    refused = subprocess.run(base + ["--teacher-set", "max_length=32", "--workdir", str(tmp_path / "refused")],
                             capture_output=True, text=True, env=ENV, timeout=300, check=False)
    assert refused.returncode == 2 and "--teacher-set max_length: set by --max-length" in refused.stderr
    assert not (tmp_path / "refused").exists()
    bad = subprocess.run(base + ["--teacher-set", "listwise_weight=-1", "--workdir", str(tmp_path / "refused")],
                         capture_output=True, text=True, env=ENV, timeout=300, check=False)
    assert bad.returncode == 2 and "loss weights must be >= 0" in bad.stderr and not (tmp_path / "refused").exists()

    again = tmp_path / "again"
    done = subprocess.run(base + ["--teacher-set", "listwise_weight=1.0", "--teacher-set", "epochs=2",
                                  "--workdir", str(again), "--json",
                                  str(tmp_path / "again.json")], capture_output=True, text=True, env=ENV, timeout=600,
                          check=False)
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert done.stdout.count("copied from") == 1 and "teacher minilm: copied from" in done.stdout
    assert "teacher e5: " in done.stdout and "was trained with another epochs, listwise_weight: trained here" \
        in done.stdout
    assert "training the e5 teacher" in done.stdout and "training the minilm teacher" not in done.stdout
    old, new = (w / "workspace" / "artifacts" for w in (workdir, again))
    assert (new / "teacher-minilm" / "model.safetensors").read_bytes() == (
        old / "teacher-minilm" / "model.safetensors").read_bytes()
    e5 = json.loads((new / "teacher-e5" / "relkit.json").read_text())
    assert e5["loss"]["listwise_weight"] == 1.0 and e5["config"]["listwise_weight"] == 1.0
    assert e5["config"]["epochs"] == 2.0 and json.loads((new / "teacher-minilm" / "relkit.json").read_text())[
        "config"]["epochs"] == 1.0   # --teacher-set epochs is the e5 teacher's alone
    assert json.loads((old / "teacher-e5" / "relkit.json").read_text())["loss"]["listwise_weight"] == 0.0
    recorded = json.loads((again / "settings.json").read_text())
    assert recorded["teacher_settings"] == {"listwise_weight": 1.0, "epochs": 2.0}
    assert json.loads((tmp_path / "again.json").read_text())["teacher_settings"] == {"listwise_weight": 1.0,
                                                                                      "epochs": 2.0}


def test_a_teacher_otherwise_only_in_its_prior_is_copied_and_its_prior_fit_again(tmp_path):
    """With --teachers-from, an e5 teacher trained with prior_fit=after in a run that differs only in
    its prior's settings is copied and its prior fit again on its cross-encoder (`refit_prior`), not
    trained again; the MiniLM teacher, whose prior learned beside it, is copied as it is."""
    from safetensors.numpy import load_file

    if not (XQUAD / "xquad_r_paragraph_en.jsonl.gz").exists():
        pytest.skip("XQuAD-R is not in ../shared/data")
    script = [sys.executable, str(ROOT / "benchmarks" / "multilingual.py"), "--tiny",
              "--teacher-set", "prior_fit=after"]
    first = subprocess.run(script + ["--workdir", str(tmp_path / "first")], capture_output=True, text=True,
                           env=ENV, timeout=600, check=False)
    assert first.returncode == 0, f"{first.stdout[-4000:]}\n{first.stderr[-4000:]}"
    again = subprocess.run(script + ["--teachers-from", str(tmp_path / "first"), "--teacher-set",
                                     "prior_features=cosine+match+idf", "--workdir", str(tmp_path / "again")],
                           capture_output=True, text=True, env=ENV, timeout=600, check=False)
    assert again.returncode == 0, f"{again.stdout[-4000:]}\n{again.stderr[-4000:]}"
    assert "teacher e5: its prior fit again (prior_features differ)" in again.stdout
    assert again.stdout.count("copied from") == 2 and "training the" not in again.stdout
    old, new = (tmp_path / w / "workspace" / "artifacts" / "teacher-e5" for w in ("first", "again"))
    meta = json.loads((new / "relkit.json").read_text())
    assert meta["config"]["prior_features"] == "cosine+match+idf" and meta["prior"]["features"][-1] == "idf_coverage"
    assert json.loads((old / "relkit.json").read_text())["prior"]["features"][-1] == "exact_phrase"
    before, after = load_file(old / "model.safetensors"), load_file(new / "model.safetensors")
    body = [name for name in before if "classifier" not in name]
    assert body and all(np.array_equal(before[name], after[name]) for name in body)   # the cross-encoder kept
    assert any(not np.array_equal(before[name], after[name]) for name in before if "classifier" in name)

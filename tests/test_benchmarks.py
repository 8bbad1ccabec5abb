"""Every benchmark script the README and docs show runs: each on a tiny slice of the real data
(../shared/data) or of the bundled sample, with tiny models (tests/tiny_models.py), as a process of
its own; the figures it prints are checked against counts and values computed here.

One Home Depot workspace of 40 queries with a tiny teacher (made by teacher_quality.py) and its
students (made by student_quality.py) is shared by the scripts that need a trained workspace. The
LLM judge is a rule behind a real OpenAI-compatible loopback server: the judge's agreement figures
can then be recomputed here from the rule.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
from itertools import product
from pathlib import Path

import duckdb
import numpy as np
import pytest
from conftest import ROOT, RuleChat, head_lines, loopback_server, shared_file

from relkit.audit import MDE_FACTOR

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "200"}
HALF = 5e-5          # half a unit of the 4th decimal: the rounding of a printed figure


def bench(script: str, *args, cwd: Path | None = None, timeout: float = 600) -> str:
    """Run benchmarks/SCRIPT with ARGS; it must succeed. Its stdout."""
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *map(str, args)], capture_output=True,
                         text=True, env=ENV, cwd=cwd, timeout=timeout, check=False)
    assert run.returncode == 0, f"{script} failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    return run.stdout


def sql(ws: Path, query: str) -> list[tuple]:
    with duckdb.connect(str(ws / "relkit.duckdb"), read_only=True) as con:
        return con.execute(query).fetchall()


def split_counts(ws: Path, split: str) -> tuple[int, int]:
    """(queries, judged pairs) of a split, straight from the workspace's tables."""
    return sql(ws, f"SELECT count(DISTINCT query_id), count(*) FROM judgments JOIN splits USING (query_id) "
                   f"WHERE split = '{split}'")[0]


def rich_table(text: str, first: str) -> tuple[list[str], dict[str, list[str]]]:
    """The header and the rows (by their first cell) of the rich table whose header starts with `first`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("┃") and line.split("┃")[1].strip() == first)
    header = [c.strip() for c in lines[start].strip("┃").split("┃")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("│"):
            break
        cells = [c.strip() for c in line.strip("│").split("│")]
        rows[cells[0]] = cells[1:]
    return header[1:], rows


def flat(text: str) -> str:
    """The text with every run of whitespace one space (rich wraps long lines)."""
    return " ".join(text.split())


def number(cell: str) -> float | None:
    return None if cell in ("-", "") else float(cell.replace(",", "").rstrip("%"))


def ratio_bounds(num: tuple[float, ...], den: tuple[float, ...], half: float = HALF) -> tuple[float, float]:
    """The range of (num[0] - num[1]) / (den[0] - den[1]) (num[1], den[1] may be 0) over every value
    within `half` of each printed one: what a ratio of rounded figures can be."""
    values = [(a - b) / (c - d) for a, b, c, d in product(*[(x - half, x + half) for x in (*num, *den)])]
    return min(values), max(values)


def near(printed: float, low: float, high: float, half: float) -> bool:
    return low - half - 1e-12 <= printed <= high + half + 1e-12


def first_queries(src: Path, dst: Path, column: str, n: int, per_query: int | None = None) -> Path:
    """The rows of the first `n` distinct queries of a CSV (at most `per_query` rows each)."""
    with open(src, newline="", encoding="utf-8") as f, open(dst, "w", newline="", encoding="utf-8") as out:
        reader = csv.DictReader(f)
        writer = csv.DictWriter(out, fieldnames=reader.fieldnames)
        writer.writeheader()
        kept: dict[str, int] = {}
        for row in reader:
            q = row[column]
            if q not in kept and len(kept) >= n or per_query is not None and kept.get(q, 0) >= per_query:
                continue
            kept[q] = kept.get(q, 0) + 1
            writer.writerow(row)
    return dst


# --- shared: the tiny models, the Home Depot workspace, its teacher and students ---------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from tiny_models import build

    return build("bert", tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, models):
    """benchmarks/teacher_quality.py on the first 40 queries of Home Depot: the workspace, split
    with seed 0, and a tiny BERT teacher named `tiny` (no prior: labeling_throughput.py needs none)."""
    data = shared_file("homedepot/pairs.csv")
    workdir = tmp_path_factory.mktemp("bench")
    out = bench("teacher_quality.py", "--dataset", "homedepot", "--queries", 40, "--workdir", workdir,
                "--set", "name=tiny", "--set", f"model={models}", "--set", "prior=none", "--set", "epochs=1",
                "--set", "max_length=32", "--set", "batch_size=16", "--set", "device=cpu")
    return {"ws": workdir / "homedepot-first-40", "out": out, "data": data}


@pytest.fixture(scope="module")
def distilled(trained):
    """benchmarks/student_quality.py on that workspace: candidates (k 5), the teacher's labels, and
    students on human labels only, on 50 teacher-labeled pairs and on all (two seeds each)."""
    out = bench("student_quality.py", "--workspace", trained["ws"], "--teacher", "tiny", "--sizes", "50,all",
                "--k", 5, "--set", "epochs=3", "--prefix", "s", "--seeds", 2)
    return {**trained, "student_out": out}


def teacher_labels(ws: Path) -> int:
    return sql(ws, f"SELECT count(*) FROM read_parquet('{ws}/labels/tiny/*.parquet')")[0][0]


def test_teacher_quality(trained):
    ws, out = trained["ws"], trained["out"]
    # the slice: every row of the first 40 queries of the real file, all imported, split by query
    with open(trained["data"], newline="", encoding="utf-8") as f:
        first, rows = [], 0
        for row in csv.DictReader(f):
            if row["search_term"] not in first:
                if len(first) == 40:
                    continue
                first.append(row["search_term"])
            rows += 1
    assert sql(ws, "SELECT count(*), count(DISTINCT query_id) FROM judgments") == [(rows, 40)]
    train = split_counts(ws, "train")[1]
    steps, best = map(int, re.search(r"trained (\d+) steps in [\d.]+ min; best dev step (\d+)", out).groups())
    assert steps == math.ceil(train / 16) and 0 <= best <= steps       # one epoch of batches of 16
    queries, pairs = split_counts(ws, "test")
    assert f"test split: {queries} queries, {pairs} judged pairs" in flat(out) and queries > 2
    header, table = rich_table(out, "metric")
    assert header == ["teacher:tiny", "bm25", "embedding"]
    teacher = {m: number(cells[0]) for m, cells in table.items()}
    assert 0 <= teacher["accuracy"] <= teacher["within_one"] <= 1 and teacher["rmse"] > 0
    for m in ("auroc@3", "auroc@4", "auroc@5", "ndcg@5", "ndcg@10", "ndcg@20"):
        assert all(0 <= number(c) <= 1 for c in table[m][:3])
    assert table["accuracy"][1:] == ["-", "-"]    # the baselines only rank
    # the paired difference of per-query nDCG@10 over the same queries is the difference of the means
    for column, name in ((1, "bm25"), (2, "embedding")):
        diff = number(table["ndcg@10 - teacher:tiny"][column].split()[0])
        assert abs(diff - (number(table["ndcg@10"][column]) - teacher["ndcg@10"])) <= 3 * HALF, name
    assert (ws / "artifacts" / "teacher-tiny" / "relkit.json").exists()


def test_student_quality(distilled):
    ws, out = distilled["ws"], distilled["student_out"]
    available, human, dev = map(int, re.search(r"features of ([\d,]+) teacher-labeled and ([\d,]+) human train "
                                               r"pairs, ([\d,]+) dev pairs", out).groups())
    assert available == teacher_labels(ws) == sql(ws, "SELECT count(*) FROM pairs")[0][0]
    assert human == split_counts(ws, "train")[1] and dev == split_counts(ws, "dev")[1]
    assert f"test split, {split_counts(ws, 'test')[1]} pairs)" in out
    curve = {m.group(1): m.groups()[1:] for m in re.finditer(
        r"^(human labels only|teacher [\d,]+ \+ human)\s+([\d,]+)\s+([\d,]+)\s+([\d.-]+)\s+([\d.-]+)\s+([\d.]+)", out,
        re.MULTILINE)}
    assert list(curve) == ["human labels only", "teacher 50 + human", f"teacher {available:,} + human"]
    assert [(number(c[0]), number(c[1])) for c in curve.values()] == [(0, human), (50, human), (available, human)]
    assert all((ws / "artifacts" / f"student-s-{n}").is_dir() for n in ("human", "50", available))
    # the side-by-side table: the largest student is the curve's last row, scored on the same split
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("metric "))
    assert lines[head].split() == ["metric", "teacher:tiny", f"student:s-{available}", "bm25", "embedding"]
    table = {line.split()[0]: line.split()[1:] for line in lines[head + 1:head + 17]}
    student_ndcg, teacher_ndcg = number(table["ndcg@10"][1]), number(table["ndcg@10"][0])
    assert student_ndcg == float(curve[f"teacher {available:,} + human"][4])
    diff = re.search(rf"student:s-{available}\s+([+-][\d.]+)", out).group(1)
    assert abs(float(diff) - (student_ndcg - teacher_ndcg)) <= 3 * HALF
    # the share of the teacher's gain over random order, from the printed figures
    rand, kept, acc_kept = map(float, re.search(r"random order nDCG@10 ([\d.]+); student keeps ([\d.-]+)% of the "
                                                r"teacher's gain over random .* and ([\d.-]+)% of its accuracy",
                                                out).groups())
    low, high = ratio_bounds((student_ndcg, rand), (teacher_ndcg, rand))
    assert near(kept / 100, low, high, 5e-4)
    low, high = ratio_bounds((number(table["accuracy"][1]), 0.0), (number(table["accuracy"][0]), 0.0))
    assert near(acc_kept / 100, low, high, 5e-4)
    # --seeds 2: each seed's figure, their mean and how many are above bm25
    bm25 = number(table["ndcg@10"][2])
    for name in ("teacher + human", "human labels only"):
        seeds = [float(x) for x in re.findall(rf"^  {re.escape(name)}\s+seed \d: ([\d.]+)", out, re.MULTILINE)]
        mean, above = re.search(rf"^  {re.escape(name)}\s+mean ([\d.]+), .*above bm25 in (\d) of 2", out,
                                re.MULTILINE).groups()
        assert len(seeds) == 2 and abs(float(mean) - np.mean(seeds)) <= 2 * HALF
        assert int(above) == sum(s > bm25 for s in seeds)


def test_student_speed(distilled):
    ws = distilled["ws"]
    available = teacher_labels(ws)
    out = bench("student_speed.py", "--workspace", ws, "--student", f"s-{available}", "--teacher", "tiny",
                "--candidates", 50, "--queries", 5, "--teacher-queries", 2)
    items = sql(ws, "SELECT count(*) FROM items")[0][0]
    queries = min(5, split_counts(ws, "test")[0])
    assert f"{queries} test queries x {min(50, items)} random candidates from a catalog of {items:,} items" in out
    rows = {m.group(1): [float(x.replace(",", "")) for x in m.groups()[1:]] for m in re.finditer(
        r"^(fast scorer \(numpy\)|torch student|teacher)\s+([\d.]+)\s+([\d.]+)\s+([\d,]+)\s+([\d,]+)$", out,
        re.MULTILINE)}
    assert list(rows) == ["fast scorer (numpy)", "torch student", "teacher"]
    n = min(50, items)
    for name, (p50, p99, rate, times) in rows.items():
        assert p50 <= p99 + 0.01
        # candidates/s is the candidates over the median time; p50 is printed to 0.01 ms
        assert n / ((p50 + 0.005) / 1e3) - 1 <= rate <= n / (max(p50 - 0.005, 1e-9) / 1e3) + 1, name
        assert abs(times - rate / rows["teacher"][2]) <= 0.5 + 1e-6 * rate, name
    assert rows["teacher"][3] == 1
    # the fast numpy path and the torch student are one model
    assert float(re.search(r"max \|difference\| of probabilities ([\d.e+-]+)", out).group(1)) < 1e-5


def test_labeling_throughput(trained):
    ws = trained["ws"]
    out = bench("labeling_throughput.py", "--teacher", ws / "artifacts" / "teacher-tiny", "--workspace", ws,
                "--pairs", 40, "--repeats", 1)
    n = min(40, split_counts(ws, "test")[1])
    distinct = int(re.search(rf"^{n} pairs \((\d+) distinct\) from the test split, max length 32", out,
                             re.MULTILINE).group(1))
    assert 1 <= distinct <= n
    rows = {m.group(1): [float(x) for x in m.groups()[1:]] for m in re.finditer(
        r"^(CrossEncoder\.predict|relkit torch|relkit onnx fp32|relkit onnx int8)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)"
        r"\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)%$", out, re.MULTILINE)}
    assert list(rows) == ["CrossEncoder.predict", "relkit torch", "relkit onnx fp32", "relkit onnx int8"]
    base = rows["CrossEncoder.predict"][1]
    assert rows["CrossEncoder.predict"][2] == 1.0
    for name, (seconds, rate, times, agree, gflops, share) in rows.items():
        assert abs(times - rate / base) <= 0.005 + 1e-3 * rate / base, name      # x base: the ratio of rates
        assert 0 <= agree <= 1 and share >= 0
    # sentence-transformers' CrossEncoder and relkit's ONNX fp32 path compute the same model: same levels
    assert rows["relkit torch"][3] == rows["CrossEncoder.predict"][3] == rows["relkit onnx fp32"][3] == 1.0


# --- an LLM judge that is a rule, behind a real OpenAI-compatible server ----------------------------

def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def rule_level(query: str, item_text: str, k: int) -> int:
    """The judge's answer: 1 + the query's words found in the item's text, at most k."""
    return 1 + min(k - 1, len(words(query) & words(item_text)))


class RuleJudge(RuleChat):
    models = ("rule",)

    def answer(self, body: dict) -> str:
        prompt = body["messages"][0]["content"]
        query = re.search(r"\nQuery: (.*)\nItem:\n", prompt).group(1)
        item = re.search(r"\nItem:\n(.*?)\n\nAnswer with", prompt, re.DOTALL).group(1)
        item = re.sub(r"^\w+: ", "", item)     # a field's label, when the item text names its fields
        k = int(re.search(r"one of 1 to (\d+)", prompt).group(1))
        return str(rule_level(query, item, k))


@pytest.fixture(scope="module")
def rule_endpoint():
    with loopback_server(RuleJudge) as url:
        yield url


def test_judge_agreement(trained, rule_endpoint):
    ws = trained["ws"]
    out = bench("judge_agreement.py", "--workspace", ws, "--teacher", "tiny", "--endpoint", rule_endpoint,
                "--model", "rule", "--fields", "title", "--name", "rule", "--concurrency", 4)
    queries, pairs = split_counts(ws, "test")
    assert f"{ws.name}: {pairs} judged pairs of all {queries} test queries; 5 levels" in flat(out)
    assert re.search(rf"judge: {pairs} pairs judged now \([\d.]+ pairs/s while judging\), 0 from the cache; 0 "
                     r"answers named no level", out)
    header, table = rich_table(out, "metric")
    assert header == ["judge:rule", "teacher:tiny", "embedding"]
    # the judge's agreement with people, recomputed from the rule and the test split's labels
    rows = sql(ws, "SELECT q.query, i.title, j.label FROM judgments j JOIN splits s USING (query_id) "
                   "JOIN queries q USING (query_id) JOIN items i USING (item_id) WHERE s.split = 'test'")
    judged = np.array([rule_level(q, t, 5) for q, t, _ in rows])
    human = np.array([int(label) for _, _, label in rows])
    assert abs(number(table["accuracy"][0]) - np.mean(judged == human)) <= HALF
    assert abs(number(table["within_one"][0]) - np.mean(abs(judged - human) <= 1)) <= HALF
    # the teacher on the same pairs: the figures teacher_quality.py printed for it
    _, teacher_table = rich_table(trained["out"], "metric")
    for m in ("accuracy", "qwk", "auroc@3", "ndcg@10"):
        assert table[m][1] == teacher_table[m][0], m


def test_audit(distilled, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(distilled["ws"], ws)        # the audit promotes a student and stores its results
    student = f"s-{teacher_labels(ws)}"
    out = bench("audit.py", "--workspace", ws, "--teacher", "tiny", "--student", student, "--sample", 4,
                "--split", "test")
    queries, items = sql(ws, "SELECT (SELECT count(*) FROM queries), (SELECT count(*) FROM items)")[0]
    assert f"bm25 run file: {queries} queries, top 10 of {items} items" in out
    run = [line.split() for line in (ws / "bm25.trec").read_text().splitlines()]
    by_query: dict[str, list[int]] = {}
    for qid, _, _, rank, _, _ in run:
        by_query.setdefault(qid, []).append(int(rank))
    # each query's matches, ranked 1, 2, ... (at most 10; a query may match fewer items, or none)
    assert len(by_query) <= queries and all(ranks == list(range(1, len(ranks) + 1)) and len(ranks) <= 10
                                            for ranks in by_query.values())
    assert re.search(rf"serving student-{student}@\d+ over {items:,} items", out)
    for name, people in (("bench-test-0", True), ("bench-test-0-judge-only", False)):
        summary = re.search(rf"audit {name}: 4 queries [^;]*; (\d+) distinct results: (\d+) judged by people, (\d+) by "
                            r"teacher:tiny", flat(out))
        distinct, by_people, by_teacher = map(int, summary.groups())
        assert by_people + by_teacher == distinct and (by_people > 0) == people
        assert json.loads((ws / "results" / f"audit-{name}.json").read_text())
    for section in out.split("the teacher judges every result (people's judgments ignored)"):
        ndcg = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(bm25|student): nDCG@10 ([\d.]+) \[", section,
                                                                   re.MULTILINE)}
        diff, n, mde, rel, se = re.search(r"student - bm25: ([+-][\d.]+) \[[^]]*\] over (\d+) queries; MDE ([\d.]+) "
                                          r"\(([\d.]+)% of bm25's nDCG\) = 2.80 x SE ([\d.]+)", section).groups()
        assert int(n) == 4 and abs(float(diff) - (ndcg["student"] - ndcg["bm25"])) <= 3 * HALF
        assert abs(float(mde) - MDE_FACTOR * float(se)) <= (1 + MDE_FACTOR) * HALF
        assert abs(float(rel) / 100 - float(mde) / ndcg["bm25"]) <= 1e-3


def test_distill_gain(distilled, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(distilled["ws"], ws)
    out = bench("distill_gain.py", "--workspace", ws, "--teacher", "tiny", "--k", 3, "--min-queries", 0,
                "--backend", "onnx", "--temperature", "1,0.5", "--set", "epochs=3",
                "--variant", "small:hidden=16;select=ndcg@10")
    labeled, human = teacher_labels(ws), split_counts(ws, "train")[1]
    assert re.search(rf"{labeled:,} teacher-labeled train pairs of \d+ queries, {human} human ones of \d+", out)
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("system "))
    aurocs = [f"auroc@{t}" for t in range(2, 6)]
    assert lines[head].split() == ["system", "teacher", "human", *aurocs, "kept@2", "kept@all", "qwk", "qwk/T",
                                   "argmax", "ndcg@10"]
    names = ["teacher:tiny", "embedding", "bm25", "human labels only", "T=1 human weight 0.3",
             "T=0.5 human weight 0.3", "small"]
    rows = {}
    for name, line in zip(names, lines[head + 1:head + 8]):
        assert line.startswith(name)
        cells = re.sub(r"%(?=-)", "% ", line[30:]).split()   # a share like 100.0%-666.3% runs into the next
        counts = cells[:2] if name not in names[:3] else []
        rows[name] = {"counts": counts, **dict(zip(aurocs + ["kept@2", "kept@all"], cells[len(counts):]))}
    assert [r["counts"] for r in rows.values()][3:] == [["0", str(human)]] + [[f"{labeled:,}", str(human)]] * 3
    # no test pair is below level 2 in this slice: AUROC@2 has no answer, and says so
    assert sql(ws, "SELECT min(label) FROM judgments JOIN splits USING (query_id) WHERE split = 'test'")[0][0] >= 2
    assert all(r["auroc@2"] == "-" for r in rows.values())
    # the teacher's AUROCs are the ones teacher_quality.py printed on the same test split
    _, teacher_table = rich_table(distilled["out"], "metric")
    assert [rows["teacher:tiny"][a] for a in aurocs[1:]] == [teacher_table[a][0] for a in aurocs[1:]]
    # kept@all: the mean share of the teacher's AUROC gain over the bi-encoder, recomputed from the table
    teacher, embedding = ([number(rows[s][a]) for a in aurocs[1:]] for s in ("teacher:tiny", "embedding"))
    assert rows["teacher:tiny"]["kept@all"] == "100.0%" and rows["embedding"]["kept@all"] == "0.0%"
    for name in names[2:]:
        shares = [ratio_bounds((number(rows[name][a]), e), (t, e)) for a, t, e in zip(aurocs[1:], teacher, embedding)]
        low, high = np.mean([s[0] for s in shares]), np.mean([s[1] for s in shares])
        assert near(number(rows[name]["kept@all"]) / 100, low, high, 5e-4), name


def test_import_homedepot(tmp_path):
    data = head_lines(shared_file("homedepot/pairs.csv"), tmp_path / "hd.csv", 200)
    out = bench("import_homedepot.py", "--data", data)
    with open(data, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    queries, items = len({r["search_term"] for r in rows}), len({r["product_uid"] for r in rows})
    assert f"200 rows read, 200 judgments added, {queries} new queries, {items} new items" in flat(out)
    seconds, rate = map(number, re.search(r"import: ([\d.]+) s, ([\d,]+) rows/s", out).groups())
    assert 200 / (seconds + 0.005) - 1 <= rate <= 200 / max(seconds - 0.005, 1e-9) + 1
    assert re.search(r"second import: [\d.]+ s, 0 added", out)
    counts = json.loads(re.search(r"split \(seed 0\): (\{.*\})", out).group(1).replace("'", '"'))
    assert sum(counts.values()) == queries and counts["test"] > 0
    assert f"test split: {counts['test']} queries," in flat(out)
    header, table = rich_table(out, "metric")
    assert header == ["bm25", "embedding"]
    for m in ("auroc@5", "ndcg@10"):
        assert all(0 <= number(c) <= 1 for c in table[m])


def test_zero_labels(tmp_path, models, rule_endpoint):
    data = head_lines(ROOT / "data" / "sample" / "homedepot-sample.csv", tmp_path / "sample.csv", 300)
    out = bench("zero_labels.py", "--workdir", tmp_path / "zero", "--endpoint", rule_endpoint, "--model", "rule",
                "--data", data, "--limit", 16, "--teacher-model", models, "--k", 5, "--min-queries", 0)
    ws = tmp_path / "zero" / "ws"
    removed, left, train, dev = map(int, re.search(r"removed ([\d,]+) human labels of train and dev queries; ([\d,]+) "
                                                   r"test labels remain for scoring; judging (\d+) train and (\d+) "
                                                   r"dev pairs", out).groups())
    assert removed + left == 300 and (train, dev) == (16, 4)
    # no person's label of a train or dev query is left: only the test split's, which score the result
    assert sql(ws, "SELECT count(*), count(*) FILTER (WHERE split = 'test') FROM judgments JOIN splits "
                   "USING (query_id)") == [(left, left)]
    assert re.search(r"judge:llm: 20 pairs, 0 already labeled", out)
    student = json.loads((ws / "artifacts" / "student-zero" / "relkit.json").read_text())
    assert student["data"]["human_pairs"] == 0 and student["data"]["teacher_pairs"] > 0
    assert re.search(r"serving student-zero@\d+: 'cordless drill' -> \{", out)
    header, table = rich_table(out, "metric")
    assert header[:4] == ["teacher:zero", "student:zero", "bm25", "embedding"]
    assert all(0 <= number(c) <= 1 for c in table["ndcg@10"])
    assert "no human label of a train or dev query was used" in out


# --- the CrowdFlower scripts: a slice of 40 queries, 4 rows each --------------------------------

@pytest.fixture(scope="module")
def crowdflower(tmp_path_factory):
    src = shared_file("crowdflower/pairs.csv")
    return first_queries(src, tmp_path_factory.mktemp("cf") / "cf.csv", "query", 40, per_query=4)


def test_active_learning(crowdflower, tmp_path):
    out = bench("active_learning.py", "--workdir", tmp_path / "al", "--data", crowdflower, "--seeds", 1,
                "--seed-size", 20, "--batch", 20, "--rounds", 1, "--arms", "uncertain;random")
    hidden, kept = map(int, re.search(r"CrowdFlower: ([\d,]+) train pairs hidden, ([\d,]+) dev/test judgments kept",
                                      out).groups())
    assert hidden + kept == 160
    ws = tmp_path / "al" / "ws"
    assert sql(ws, "SELECT count(*) FROM pairs")[0][0] == hidden
    rows = json.loads((tmp_path / "al" / "active_learning.json").read_text())["rows"]
    assert [(r["arm"], r["round"], r["labels"]) for r in rows] == [
        ("uncertain", 0, 20), ("uncertain", 1, 40), ("random", 0, 20), ("random", 1, 40)]
    metrics = ("dev_qwk", "dev_ndcg@10", "test_qwk", "test_ndcg@10")
    # both arms start from the same seed set and seed: the same first student
    assert [rows[0][m] for m in metrics] == [rows[2][m] for m in metrics]
    assert all(-1 <= r[m] <= 1 for r in rows for m in metrics) and all(0 <= r["test_ndcg@10"] <= 1 for r in rows)
    # the table: one seed, so each cell is that seed's figure, sd 0
    for r in rows:
        cells = re.search(rf"^\s+{r['labels']}  {r['arm']}\s+(.*)$", out, re.MULTILINE).group(1)
        assert [float(x) for x in re.findall(r"(-?[\d.]+) \(0\.000\)", cells)] == [round(r[m], 4) for m in metrics]
    diff = float(re.search(r"uncertain\s+40 labels: dev_qwk ([+-][\d.]+) \[", out).group(1))
    assert abs(diff - (rows[1]["dev_qwk"] - rows[3]["dev_qwk"])) <= HALF


def test_annotate_load(crowdflower, tmp_path):
    out = bench("annotate_load.py", "--annotators", 2, "--judgments", 10, "--data", crowdflower,
                "--workdir", tmp_path / "load", "--teach-epochs", 0.2)
    assert re.search(r"2 annotators x 10 judgments over HTTP in \d+ s, the app killed after \d+ and restarted", out)
    made, stored, lost, dup, live, pairs, twice, resolved = map(int, re.search(
        r"judgments made (\d+), stored in annotations (\d+), lost (\d+), duplicated (\d+); journal live (\d+); "
        r"(\d+) pairs \((\d+) judged by two annotators, overlap 0.2\), (\d+) resolved into judgments", out).groups())
    assert (made, stored, lost, dup, live) == (20, 20, 0, 0, 20) and pairs + twice == made
    ws = tmp_path / "load" / "ws"
    assert sql(ws, "SELECT count(*), count(DISTINCT (annotator, query_id, item_id)) FROM annotations") == [(20, 20)]
    assert resolved == sql(ws, "SELECT count(*) FROM judgments WHERE extra->>'source' = 'annotation'")[0][0]
    requests, waited = map(int, re.search(r"over (\d+) requests \((\d+) waited for the restart\)", out).groups())
    assert requests + waited == made
    assert "relkit teach meanwhile: exit 0" in out
    ok, runs = map(int, re.search(r"relkit eval meanwhile: (\d+) of (\d+) runs succeeded", out).groups())
    assert ok == runs >= 1

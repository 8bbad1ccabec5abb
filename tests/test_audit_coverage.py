"""benchmarks/audit_coverage.py end to end on a slice of CrowdFlower, with a tiny teacher: the
figures it writes, its cache of the teacher's labels, and its error on a bad data path."""
import json
import os
import re
import subprocess
import sys

from conftest import ROOT, shared_file
from tiny_models import build

SCRIPT = ROOT / "benchmarks" / "audit_coverage.py"
JUDGES = ("bi-encoder", "teacher", "lenient on bm25")


def run(*args, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "TQDM_DISABLE": "1"})


def test_the_coverage_benchmark_runs_on_a_slice(tmp_path):
    data = shared_file("crowdflower/pairs.csv")
    bert = build("bert", tmp_path / "models")
    args = ["--data", data, "--workdir", tmp_path / "work", "--limit", 12, "--audits", 30,
            "--set", f"model={bert}", "--set", "prior=none", "--set", "batch_size=16"]
    first = run(*args, "--json", tmp_path / "first.json")
    assert first.returncode == 0, first.stderr[-3000:]
    out = json.loads((tmp_path / "first.json").read_text())
    assert out["queries"] == 12 and out["audits"] == 30 and out["failed"] == 0
    assert out["difference"] == "bi-encoder - bm25"
    assert out["slice_results_share_max"] <= 0.5 and out["slice_queries_min"] >= 2
    assert out["interval"] == "t" and "95% Student t intervals" in first.stdout
    assert set(out["judges"]) == set(JUDGES)
    for judge in JUDGES:
        for measure in ("ndcg", "share"):
            figures = out["judges"][judge][measure]
            for estimator in ("judge", "people", "ppi"):
                f = figures[estimator]
                assert f["audits"] == out["completed"] == 30
                assert 0 <= f["covered"] <= 30 and f["coverage"] == f["covered"] / 30
                assert f["width"] > 0
            assert 0 <= figures["ppi"]["lambda"] <= 1
            assert figures["ppi_width_over_people"] == figures["ppi"]["width"] / figures["people"]["width"]
    # the lenient judge is people's own level but on results only bm25 returned: off those, it is people
    assert 0.5 < out["qwk"]["lenient on bm25"] < 1
    assert re.search(r"30 audits of 12 queries drawn with replacement", first.stdout)
    assert "teacher fold0: trained" in first.stdout and "teacher fold1: trained" in first.stdout
    # a second run reads the teacher's labels and the systems' scores from the workdir: same figures
    second = run(*args, "--json", tmp_path / "second.json")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "trained" not in second.stdout
    again = json.loads((tmp_path / "second.json").read_text())
    assert again["judges"] == out["judges"] and again["truth"] == out["truth"]


def test_the_slice_takes_queries_in_random_order_while_they_fit_the_share():
    """The slice: the audit's queries in a random order, taken while their pooled results add up to
    at most the share of all the audit's results (two at least)."""
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("audit_coverage", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    pool = np.array([12, 20, 7, 15, 20, 9, 18, 11, 20, 14, 16, 10, 20, 8, 13, 17, 19, 20, 6, 15])     # 290 results
    for seed in range(5):
        on = bench.slice_of(pool, 0.15, np.random.default_rng(seed))
        order = np.random.default_rng(seed).permutation(len(pool))        # the same draw, by hand
        taken, total = [], 0
        for i in order:
            if total + pool[i] > 0.15 * 290:                               # 43.5 results at most
                break
            taken.append(i)
            total += pool[i]
        assert sorted(np.flatnonzero(on)) == sorted(taken) and pool[on].sum() <= 43
    # a share too small for two queries still takes two
    assert bench.slice_of(pool, 0.01, np.random.default_rng(0)).sum() == 2


def test_the_coverage_benchmark_names_a_missing_data_file(tmp_path):
    missing = tmp_path / "nowhere" / "pairs.csv"
    result = run("--data", missing, "--workdir", tmp_path / "work", "--tiny", timeout=120)
    assert result.returncode != 0
    assert f"no CrowdFlower pairs file at {missing}" in result.stderr
    assert not (tmp_path / "work").exists()

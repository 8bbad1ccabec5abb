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
    assert out["queries"] == 12 and out["audits"] == 30 and out["designs"] == ["simple", "stratified"]
    assert out["difference"] == "bi-encoder - bm25"
    assert out["interval"] == "robust"
    assert re.search(r"95% Student t \(df lowered for kurtosis; PPI\+\+'s\s+standard\s+error\s+by\s+the\s+jackknife\)"
                     r"\s+intervals", re.sub(r"\s+", " ", first.stdout))
    assert set(out["results"]) == set(out["slices"]) == set(out["targets"]) == {"simple", "stratified"}
    for design in ("simple", "stratified"):
        setup = out["slices"][design]
        assert setup["failed"] == 0 and setup["completed"] == 30
        if design == "simple":
            assert setup["slice_results_share_max"] <= 0.5 and setup["slice_queries_min"] >= 2
        else:
            # 15% of 12 queries' results holds fewer than two queries a stratum: the slice is the floor,
            # two in each of the three strata of four queries
            assert setup["slice_queries_min"] == setup["slice_queries_mean"] == 6
        assert set(out["results"][design]) == set(JUDGES)
        for judge in JUDGES:
            for measure in ("ndcg", "share"):
                figures = out["results"][design][judge][measure]
                for estimator in ("judge", "people", "ppi"):
                    f = figures[estimator]
                    assert f["audits"] == 30
                    assert 0 <= f["covered"] <= 30 and f["coverage"] == f["covered"] / 30
                    assert f["width"] > 0
                assert 0 <= figures["ppi"]["lambda"] <= 1
                assert figures["ppi_width_over_people"] == figures["ppi"]["width"] / figures["people"]["width"]
                # the judge-only estimate is on every audited query: the same audits, the same figures
                assert figures["judge"] == out["results"]["simple"][judge][measure]["judge"]
    assert re.search(r"\│ bi-encoder\s+│ ndcg@10\s+│ stratified", first.stdout)
    # the lenient judge is people's own level but on results only bm25 returned: off those, it is people
    assert 0.5 < out["qwk"]["lenient on bm25"] < 1
    assert re.search(r"simple: 30 audits of 12 queries drawn with replacement", first.stdout)
    assert re.search(r"stratified: 30 audits of 12 queries drawn with replacement", first.stdout)
    assert "teacher fold0: trained" in first.stdout and "teacher fold1: trained" in first.stdout
    # a second run reads the teacher's labels and the systems' scores from the workdir: same figures
    second = run(*args, "--json", tmp_path / "second.json")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "trained" not in second.stdout
    again = json.loads((tmp_path / "second.json").read_text())
    assert again["results"] == out["results"] and again["truth"] == out["truth"]
    # one design alone: the same figures as that design in both
    alone = run(*args, "--design", "stratified", "--audits", 30, "--json", tmp_path / "alone.json")
    assert alone.returncode == 0, alone.stderr[-3000:]
    alone_out = json.loads((tmp_path / "alone.json").read_text())
    assert alone_out["designs"] == ["stratified"]
    assert alone_out["results"] == {"stratified": out["results"]["stratified"]}


def test_the_slice_takes_queries_in_random_order_while_they_fit_the_share():
    """The slice: the audit's queries in a random order, taken while their pooled results add up to
    at most the share of all the audit's results (two at least)."""
    import numpy as np

    bench = load_bench()
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


def load_bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("audit_coverage", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_the_judge_strata_are_the_thirds_of_its_difference():
    import numpy as np

    bench = load_bench()
    # sorted: -0.4 (q3), -0.2 (q0), 0 (q1) | 0 (q4), 0 (q6), 0.1 (q8) | 0.3 (q2), 0.5 (q5), 0.6 (q7):
    # three of nine each; the tied zeros are taken in the order they come, so q1 is low, q4 and q6 middle
    difference = np.array([-0.2, 0.0, 0.3, -0.4, 0.0, 0.5, 0.0, 0.6, 0.1])
    assert bench.judge_strata(difference).tolist() == [0, 0, 2, 0, 1, 2, 1, 2, 1]


def test_the_stratified_slice_keeps_every_stratum_and_the_cap():
    """Each stratum's queries in a random order; the slice grows in proportion to the strata's sizes
    while its results fit the share, two a stratum at least."""
    import numpy as np

    bench = load_bench()
    stratum = np.array([0] * 12 + [1] * 6 + [2] * 6)
    pool = np.full(24, 10)                                                 # 240 results
    for seed in range(4):
        on = bench.stratified_slice_of(pool, stratum, 0.5, np.random.default_rng(seed))
        # 120 results at most: 12 queries, in proportion to 12, 6 and 6: 6, 3 and 3
        assert np.bincount(stratum[on], minlength=3).tolist() == [6, 3, 3] and pool[on].sum() == 120
        rng = np.random.default_rng(seed)                                  # the same draw, by hand
        firsts = [np.flatnonzero(stratum == h)[rng.permutation(n)][:k]
                  for h, n, k in ((0, 12, 6), (1, 6, 3), (2, 6, 3))]
        assert sorted(np.flatnonzero(on)) == sorted(np.concatenate(firsts).tolist())
    # 15% of 240 is 36 results, three queries: still two from every stratum
    on = bench.stratified_slice_of(pool, stratum, 0.15, np.random.default_rng(0))
    assert np.bincount(stratum[on], minlength=3).tolist() == [2, 2, 2]
    # results of unequal size, 250 in all, 92.5 at most: two a stratum are 2 * 10 + 2 * 10 + 2 * 20 = 80;
    # a seventh query goes to the largest stratum (0): 90; an eighth to it again: 100, over the cap
    stratum = np.array([0] * 10 + [1] * 5 + [2] * 5)
    pool = np.array([10] * 10 + [10] * 5 + [20] * 5)
    on = bench.stratified_slice_of(pool, stratum, 0.37, np.random.default_rng(0))
    assert np.bincount(stratum[on], minlength=3).tolist() == [3, 2, 2] and pool[on].sum() == 90


def test_the_coverage_benchmark_names_a_missing_data_file(tmp_path):
    missing = tmp_path / "nowhere" / "pairs.csv"
    result = run("--data", missing, "--workdir", tmp_path / "work", "--tiny", timeout=120)
    assert result.returncode != 0
    assert f"no CrowdFlower pairs file at {missing}" in result.stderr
    assert not (tmp_path / "work").exists()

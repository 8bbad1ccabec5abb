"""benchmarks/serve_load.py: open-loop load on `relkit serve`, on a tiny run."""
import functools
import importlib.util
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, write_csv
from test_serve import serving_workspace

SCRIPT = ROOT / "benchmarks" / "serve_load.py"


@functools.cache
def benchmark():
    spec = importlib.util.spec_from_file_location("serve_load", SCRIPT)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)   # where its dataclasses look
    spec.loader.exec_module(module)
    return module


def test_unseen_queries_are_distinct_and_new_to_the_workspace(tmp_path):
    file = write_csv(tmp_path / "q.csv", ["id", "search_term"],
                     [[1, "red chair"], [2, " oak table "], [3, "oak table"], [4, "steel shelf"], [5, "blue lamp"]])
    unseen = benchmark().unseen_queries(file, {"red chair", "blue lamp"}, 2)
    assert sorted(unseen) == ["oak table", "steel shelf"]    # trimmed as the service trims, each once
    with pytest.raises(SystemExit, match="2 distinct queries the workspace does not know, and the run needs 3"):
        benchmark().unseen_queries(file, {"red chair", "blue lamp"}, 3)


def test_the_process_tree_holds_the_children():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        tree = benchmark().ProcessTree(os.getpid())
        assert tree.pids()[0] == os.getpid() and child.pid in tree.pids()
    finally:
        child.kill()
        child.wait()


def test_unseen_queries_then_the_same_with_a_warm_cache(shop, tmp_path):
    """Every query of the first run is new to the service: each is encoded once (the service's own
    count), none found in the cache; the second run sends the same requests, all from the cache."""
    path = serving_workspace(shop)
    known = [f"{c} {t}" for c in ("red", "blue") for t in ("chair", "lamp")]     # the workspace's: left out
    new = [f"query {n}" for n in range(12)]
    queries = write_csv(tmp_path / "queries.csv", ["query"], [[q] for q in known + new])
    out = tmp_path / "load.json"
    result = subprocess.run([sys.executable, str(SCRIPT), "--workspace", str(path), "--unseen", "--seconds", "1",
                             "--rate", "10", "--candidates", "5", "--queries", str(queries), "--starts", "1",
                             "--json", str(out)], capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    unseen, warm = report["runs"]
    assert (unseen["name"], warm["name"]) == ("unseen", "warm cache")
    for run in (unseen, warm):
        assert (run["requests"], run["candidates"], run["errors"]) == (10, 5, {})
    assert (unseen["hit_rate"], unseen["encoded"]) == (0.0, 10) and (warm["hit_rate"], warm["encoded"]) == (1.0, 0)
    assert len(report["healthy_seconds"]) == 2 and report["items"] == 32
    assert "10 distinct queries" in result.stdout and "unseen: rerank 5 candidates at 10 req/s" in result.stdout

"""Audit two engines over the same queries of a real dataset: BM25 over the whole catalog (as a TREC
run file) and the student served by `relkit serve` (its /v1/search, in its own process on
loopback), judged by a trained teacher, people's judgments standing in where the workspace has them.

    python benchmarks/audit.py --workspace /tmp/bench-ws/crowdflower --teacher cf --student cf \
        [--sample 120] [--split test]

Prints each engine's nDCG@10 with its 95% interval, the share of results at level >= t, the paired
difference (student - bm25) with its interval and the minimum detectable effect at this many
queries; then the same with the teacher judging every result, people's judgments ignored (how far
the judge alone moves the figures). The workspace gets the student promoted, the teacher's
judgments cached and the audits stored (results/audit-NAME.json): run it on a copy.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from rich.console import Console

from relkit import Workspace
from relkit.audit import Engine, audit
from relkit.baselines import catalog_index
from relkit.promotion import promote


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bm25_run(ws: Workspace, path: Path, k: int) -> int:
    """BM25's top k of the whole catalog for every query of the workspace, as a TREC run file."""
    index = catalog_index(ws)
    queries = ws.fetchall("SELECT query_id, query FROM queries ORDER BY query_id")
    ids = list(index.position)
    with open(path, "w") as f:
        for (qid, _), top in zip(queries, index.top_k([q for _, q in queries], k)):
            for rank, row in enumerate(top, start=1):
                f.write(f"{qid} Q0 {ids[row]} {rank} {k - rank + 1} bm25\n")
    return len(queries)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--teacher", required=True, help="the judge: a teacher of the workspace")
    ap.add_argument("--student", required=True, help="the student the service serves")
    ap.add_argument("--sample", type=int, default=None, help="queries to audit (default: all)")
    ap.add_argument("--split", default=None, help="only this split's queries (default: all)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    console = Console(width=160)
    ws_path = Path(args.workspace)
    run = ws_path / "bm25.trec"
    with Workspace.open(ws_path) as ws:
        promote(ws, args.student)
        t0 = time.perf_counter()
        n = bm25_run(ws, run, args.k)
        console.print(f"bm25 run file: {n} queries, top {args.k} of {ws.count('items'):,} items "
                      f"({time.perf_counter() - t0:.1f} s)")
    port = free_port()
    relkit = [sys.executable, "-m", "relkit"]
    server = subprocess.Popen([*relkit, "serve", "-w", str(ws_path), "--port", str(port), "--warm-queries", "0"],
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            try:
                health = json.loads(urllib.request.urlopen(f"{url}/healthz", timeout=2).read())
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise SystemExit("relkit serve did not start")
                time.sleep(0.5)
        console.print(f"serving {health['model']} over {health['items']:,} items at {url}")
        results = []
        for human in (True, False):
            with Workspace.open(ws_path) as ws:
                results.append(audit(
                    ws, f"teacher:{args.teacher}", runs=[f"bm25={run}"],
                    engines=[Engine("student", f"{url}/v1/search")],
                    sample=args.sample, split=args.split, k=args.k, seed=args.seed, human=human,
                    name=f"bench-{args.split or 'all'}-{args.seed}{'' if human else '-judge-only'}"))
    finally:
        server.terminate()
        server.wait(timeout=30)
    for result in results:
        console.rule("people's judgments where the workspace has them, the teacher elsewhere" if result.human
                     else "the teacher judges every result (people's judgments ignored)")
        report(console, result)


def report(console: Console, result) -> None:
    console.print(result.summary(), highlight=False)
    console.print(result.table())
    for s in result.systems:
        share = f", share at level >= {result.threshold}: {s.share}" if s.share else ""
        console.print(f"{s.name}: nDCG@{result.k} {s.ndcg}{share}", highlight=False)
    c = result.comparison
    console.print(f"{c.a} - {c.b}: {c.difference:+.4f} "
                  f"over {c.difference.n} queries; MDE {c.mde:.4f} ({c.mde_relative:.1%} of {c.b}'s nDCG) = "
                  f"2.80 x SE {c.standard_error:.4f}", highlight=False)
    console.print(f"audit took {result.seconds:.1f} s (judging included)", highlight=False)


if __name__ == "__main__":
    main()

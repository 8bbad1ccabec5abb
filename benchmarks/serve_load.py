"""Load on the relevance service: `relkit serve` in its own process on loopback, and an open-loop
generator (asyncio + httpx) that sends requests at a fixed rate whatever the answers' pace.

    python benchmarks/serve_load.py --workspace /tmp/bench-ws/homedepot [--seconds 60] \
        [--rate 200 --candidates 100] [--rate-1000 20]

Two runs, one after the other: rerank of `--candidates` (100) catalog ids at `--rate` requests/s,
then rerank of 1,000 ids at `--rate-1000` requests/s. Queries are the workspace's test-split
queries in a shuffled cycle (so the service sees each query several times, as a search service
does; the query-embedding cache's hit rate is printed from /metrics); candidates are random
catalog items. Latency is measured from each request's scheduled send time, so a service that
falls behind is charged for the queueing it causes. Prints throughput, p50/p99/max latency and
the error count of each run. The workspace needs an active student (`relkit promote`).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def catalog_and_queries(workspace: str) -> tuple[list[str], list[str]]:
    from relkit import Workspace

    with Workspace.open(workspace, read_only=True) as ws:
        items = [r[0] for r in ws.fetchall("SELECT item_id FROM items ORDER BY item_id")]
        queries = [r[0] for r in ws.fetchall("SELECT DISTINCT q.query FROM queries q JOIN splits s USING (query_id) "
                                             "WHERE s.split = 'test' ORDER BY 1")]
    return items, queries


async def run_load(url: str, bodies: list[bytes], rate: float, seconds: float) -> dict:
    import httpx

    n = int(rate * seconds)
    latencies = np.full(n, np.nan)
    errors: dict[str, int] = {}
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        start = time.perf_counter() + 0.5

        async def one(i: int) -> None:
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                r = await client.post("/v1/rerank", content=bodies[i % len(bodies)],
                                      headers={"content-type": "application/json"})
                if r.status_code != 200:
                    errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
            except httpx.HTTPError as e:
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            latencies[i] = time.perf_counter() - scheduled

        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - start
    ms = latencies[~np.isnan(latencies)] * 1000
    return {"requests": n, "seconds": elapsed, "throughput": n / elapsed, "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99)), "max": float(ms.max()), "errors": errors}


def metric(text: str, name: str, labels: str) -> float:
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--rate-1000", type=float, default=20, help="requests/s for the 1,000-candidate run (0: skip)")
    args = parser.parse_args()

    import httpx

    items, queries = catalog_and_queries(args.workspace)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(queries))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    relkit = str(Path(sys.executable).with_name("relkit"))
    server = subprocess.Popen([relkit, "serve", "-w", args.workspace, "--port", str(port)], env=env)
    try:
        deadline = time.time() + 600
        while True:
            try:
                health = httpx.get(f"{url}/healthz", timeout=2).json()
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.time() > deadline:
                    raise SystemExit("the service did not start")
                time.sleep(0.5)
        print(f"serving {health['model']} over {health['items']:,} items; {len(queries):,} test queries; "
              f"{os.cpu_count()} cores shared by the service and this generator")
        runs = [(args.candidates, args.rate)] + ([(1000, args.rate_1000)] if args.rate_1000 > 0 else [])
        for candidates, rate in runs:
            n = int(rate * args.seconds)
            bodies = [json.dumps({"query": queries[order[i % len(order)]],
                                  "items": [items[j] for j in rng.choice(len(items), candidates, replace=False)]}
                                 ).encode() for i in range(min(n, 4000))]
            before = httpx.get(f"{url}/metrics").text
            result = asyncio.run(run_load(url, bodies, rate, args.seconds))
            after = httpx.get(f"{url}/metrics").text
            hits = metric(after, "relkit_query_vectors_total", 'result="hit"') - metric(
                before, "relkit_query_vectors_total", 'result="hit"')
            misses = metric(after, "relkit_query_vectors_total", 'result="miss"') - metric(
                before, "relkit_query_vectors_total", 'result="miss"')
            print(f"rerank {candidates:>5,} candidates at {rate:g} req/s for {args.seconds:g} s: "
                  f"{result['requests']:,} requests, {result['throughput']:.1f} req/s, p50 {result['p50']:.1f} ms, "
                  f"p99 {result['p99']:.1f} ms, max {result['max']:.1f} ms, errors {sum(result['errors'].values())}"
                  f"{' ' + str(result['errors']) if result['errors'] else ''}; query cache hit rate "
                  f"{hits / max(hits + misses, 1):.1%}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()

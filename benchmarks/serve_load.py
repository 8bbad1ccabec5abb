"""Load on the relevance service: `relkit serve` in its own process on loopback, and an open-loop
generator (keep-alive connections on plain asyncio streams) that sends requests at a fixed rate
whatever the answers' pace.

    python benchmarks/serve_load.py --workspace /tmp/bench-ws/homedepot [--seconds 60] \
        [--rate 200 --candidates 100] [--rate-1000 20] [--warm-queries 0]

Three runs, one after the other, on the same service: rerank of `--candidates` (100) catalog
ids at `--rate` requests/s twice (first with the query-embedding cache as the service starts:
empty with `--warm-queries 0`, the default here, as after a restart of a service that warms
nothing; then again, as a service that has seen its queries), then rerank of 1,000 ids at
`--rate-1000` requests/s. `--warm-queries N` is passed to `relkit serve`, which then encodes N of
the workspace's known queries before answering; the start-up time is printed. Queries are the
workspace's test-split queries in a shuffled cycle (uniform, with no head: the hardest case for
the cache; the hit rate of each run is printed from /metrics); candidates are random catalog items. Latency is measured from each request's scheduled send
time, so a service that falls behind is charged for the queueing it causes. Prints throughput,
p50/p99/max latency, the error count of each run and when its requests slower than 50 ms were
sent. The workspace needs an active student (`relkit promote`).
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


async def run_load(host: str, port: int, bodies: list[bytes], rate: float, seconds: float,
                   connections: int = 64) -> dict:
    """Send request i at start + i/rate over a pool of keep-alive HTTP/1.1 connections (a request
    waits for a free connection when all are busy, and that wait counts in its latency). The
    client is plain asyncio streams: a general-purpose client spends more CPU per request than the
    service does, on the same two cores."""
    n = int(rate * seconds)
    latencies = np.full(n, np.nan)
    errors: dict[str, int] = {}
    queue: asyncio.Queue = asyncio.Queue()
    start = time.perf_counter() + 0.5

    async def schedule() -> None:
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait(i)
        for _ in range(connections):
            queue.put_nowait(None)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while (i := await queue.get()) is not None:
                body = bodies[i % len(bodies)]
                writer.write(b"POST /v1/rerank HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (host.encode(), len(body), body))
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = head.split(b" ", 2)[1].decode()
                    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                    await reader.readexactly(length)
                    if status != "200":
                        errors[status] = errors.get(status, 0) + 1
                except (asyncio.IncompleteReadError, ConnectionError, AttributeError) as e:
                    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                latencies[i] = time.perf_counter() - (start + i / rate)
        finally:
            writer.close()

    await asyncio.gather(schedule(), *(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - start
    ms = latencies[~np.isnan(latencies)] * 1000
    slow = np.flatnonzero(latencies * 1000 > 50)          # when the slow ones were sent (s from start)
    return {"requests": n, "seconds": elapsed, "throughput": n / elapsed, "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99)), "max": float(ms.max()), "errors": errors,
            "slow": len(slow), "slow_seconds": sorted({int(i / rate) for i in slow})}


def compact(seconds: list[int]) -> str:
    """[0, 1, 2, 7] -> '0-2, 7'."""
    spans: list[list[int]] = []
    for s in seconds:
        if spans and s == spans[-1][1] + 1:
            spans[-1][1] = s
        else:
            spans.append([s, s])
    return ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in spans)


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
    parser.add_argument("--warm-queries", type=int, default=0, help="relkit serve --warm-queries")
    args = parser.parse_args()

    import httpx

    items, queries = catalog_and_queries(args.workspace)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(queries))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    relkit = str(Path(sys.executable).with_name("relkit"))
    started = time.perf_counter()
    server = subprocess.Popen([relkit, "serve", "-w", args.workspace, "--port", str(port),
                               "--warm-queries", str(args.warm_queries)], env=env)
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
              f"{os.cpu_count()} cores shared by the service and this generator; answering "
              f"{time.perf_counter() - started:.1f} s after start (--warm-queries {args.warm_queries})")
        first = "cold query cache" if args.warm_queries == 0 else f"after --warm-queries {args.warm_queries}"
        runs = [(args.candidates, args.rate, first), (args.candidates, args.rate, "again")]
        runs += [(1000, args.rate_1000, "")] if args.rate_1000 > 0 else []
        for candidates, rate, label in runs:
            n = int(rate * args.seconds)
            bodies = [json.dumps({"query": queries[order[i % len(order)]],
                                  "items": [items[j] for j in rng.choice(len(items), candidates, replace=False)]}
                                 ).encode() for i in range(min(n, 4000))]
            before = httpx.get(f"{url}/metrics").text
            result = asyncio.run(run_load("127.0.0.1", port, bodies, rate, args.seconds))
            after = httpx.get(f"{url}/metrics").text
            hits = metric(after, "relkit_query_vectors_total", 'result="hit"') - metric(
                before, "relkit_query_vectors_total", 'result="hit"')
            misses = metric(after, "relkit_query_vectors_total", 'result="miss"') - metric(
                before, "relkit_query_vectors_total", 'result="miss"')
            print(f"rerank {candidates:>5,} candidates at {rate:g} req/s for {args.seconds:g} s"
                  f"{' (' + label + ')' if label else ''}: "
                  f"{result['requests']:,} requests, {result['throughput']:.1f} req/s, p50 {result['p50']:.1f} ms, "
                  f"p99 {result['p99']:.1f} ms, max {result['max']:.1f} ms, errors {sum(result['errors'].values())}"
                  f"{' ' + str(result['errors']) if result['errors'] else ''}; query cache hit rate "
                  f"{hits / max(hits + misses, 1):.1%}; over 50 ms: {result['slow']:,}"
                  + (f" (sent in seconds {compact(result['slow_seconds'])})" if result["slow"] else ""), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()

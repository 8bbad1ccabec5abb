"""Load on the relevance service: `relkit serve` in its own process on loopback, and an open-loop
generator (keep-alive connections on plain asyncio streams) that sends requests at a fixed rate
whatever the answers' pace.

    python benchmarks/serve_load.py --workspace demo-ws --unseen [--seconds 40 --rate 200] [--json OUT]
    python benchmarks/serve_load.py --workspace /tmp/bench-ws/homedepot [--seconds 60] \
        [--rate 200 --candidates 100] [--rate-1000 20] [--warm-queries 0] [--starts 5]

With `--unseen`, every request's query is new to the service: `--rate` x `--seconds` distinct real
queries from `--queries` (the Home Depot file of ../shared/data by default; its `search_term` or
`query` column), none of which the workspace knows (its queries and engagement log), each asked
once, with `--candidates` (100) random catalog ids. The same requests are then sent again, every
query's vector now in the cache: the two runs side by side show what encoding unseen queries costs.

Without it, three runs on the workspace's test-split queries in a shuffled cycle (uniform, with no
head: the hardest case for the cache): rerank of `--candidates` ids at `--rate` requests/s twice
(first with the query cache as the service starts: empty with `--warm-queries 0`, the default here,
as after a restart of a service that warms nothing; then again, as a service that has seen its
queries), then rerank of 1,000 ids at `--rate-1000` requests/s.

Latency is measured from each request's scheduled send time, so a service that falls behind is
charged for the queueing it causes (no coordinated omission). Each run prints throughput,
p50/p99/max latency, errors, the query cache's hit rate, the queries the service encoded per second
and their mean batch and wait (from its /metrics), the service's peak RSS during the run (the
kernel's high-water mark of its process tree, reset before each run), the CPU the service and this
generator used (in cores) and the load average, and when the requests slower than 50 ms were sent.
`--starts N` then starts the service N more times and prints each time to its first /healthz 200.
`--json OUT` writes it all. The workspace needs an active student (`relkit promote`).
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HOMEDEPOT = ROOT.parent / "shared" / "data" / "homedepot" / "pairs.csv"
BLANK = " \t\n\r\f\v"        # what the service trims from a query (relkit.serve.schemas.BLANK)
SLOW_MS = 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def catalog_and_queries(workspace: str) -> tuple[list[str], list[str], set[str]]:
    """The catalog's ids, the test split's queries, and every query the workspace knows (trimmed)."""
    from relkit import Workspace

    with Workspace.open(workspace, read_only=True) as ws:
        items = [r[0] for r in ws.fetchall("SELECT item_id FROM items ORDER BY item_id")]
        queries = [r[0] for r in ws.fetchall("SELECT DISTINCT q.query FROM queries q JOIN splits s USING (query_id) "
                                             "WHERE s.split = 'test' ORDER BY 1")]
        known = {r[0] for r in ws.fetchall("SELECT query FROM queries")}
        if ws.has_table("engagement"):
            known |= {r[0] for r in ws.fetchall("SELECT DISTINCT query FROM engagement")}
    return items, queries, {q.strip(BLANK) for q in known}


def unseen_queries(file: Path, known: set[str], n: int, seed: int = 0) -> list[str]:
    """`n` distinct queries of `file` (CSV with a `search_term` or `query` column) that are not in
    `known`, in a random order; an error when the file has fewer."""
    with open(file, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        column = next((c for c in ("search_term", "query") if c in (reader.fieldnames or ())), None)
        if column is None:
            raise SystemExit(f"{file}: no search_term or query column (columns: {reader.fieldnames})")
        distinct = dict.fromkeys(row[column].strip(BLANK) for row in reader)
    pool = [q for q in distinct if q and q not in known]
    if len(pool) < n:
        raise SystemExit(f"{file} has {len(pool):,} distinct queries the workspace does not know, and the run "
                         f"needs {n:,} (--rate x --seconds): lower one of them")
    rng = np.random.default_rng(seed)
    return [pool[i] for i in rng.permutation(len(pool))[:n]]


class ProcessTree:
    """The memory and CPU of a process and its descendants, from /proc (Linux)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.ticks = os.sysconf("SC_CLK_TCK")

    def pids(self) -> list[int]:
        found, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    todo += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
            except OSError:
                pass
        return found

    def _status(self, key: str) -> float:
        total = 0
        for pid in self.pids():
            try:
                text = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            m = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
            total += int(m.group(1)) if m else 0
        return total / 1024

    def rss_mb(self) -> float:
        return self._status("VmRSS")

    def peak_mb(self) -> float:
        """The sum of each process's resident high-water mark since start or `reset_peak`."""
        return self._status("VmHWM")

    def reset_peak(self) -> bool:
        """Start the high-water marks again from the current RSS (Linux 4.0+; False where refused)."""
        try:
            for pid in self.pids():
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / self.ticks   # utime, stime
        return total


@dataclass
class Run:
    """One run at a fixed rate: what the generator saw and what the service reported."""

    name: str
    candidates: int
    rate: float
    seconds: float
    requests: int
    throughput: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    slow: int                          # requests slower than SLOW_MS
    slow_seconds: list[int]            # when they were sent (s from the start)
    hit_rate: float = 0.0              # query cache hits / lookups
    encoded: int = 0                   # queries the service encoded
    encoded_per_s: float = 0.0
    mean_batch: float = 0.0            # queries per encoder call
    mean_wait_ms: float = 0.0          # a miss's wait for its encoder call
    rss_peak_mb: float = 0.0           # the service's, during the run
    service_cores: float = 0.0         # CPU seconds per second
    generator_cores: float = 0.0
    load: list[float] = field(default_factory=list)   # 1-minute load average before and after

    def line(self) -> str:
        errors = sum(self.errors.values())
        return (f"{self.name}: rerank {self.candidates:,} candidates at {self.rate:g} req/s for {self.seconds:g} s: "
                f"{self.requests:,} requests, {self.throughput:.1f} req/s, p50 {self.p50_ms:.1f} ms, "
                f"p99 {self.p99_ms:.1f} ms, max {self.max_ms:.1f} ms, errors {errors}"
                f"{' ' + str(self.errors) if errors else ''}; query cache hit rate {self.hit_rate:.1%}; "
                f"encoded {self.encoded_per_s:.1f} queries/s (mean batch {self.mean_batch:.1f}, wait "
                f"{self.mean_wait_ms:.1f} ms); service RSS peak {self.rss_peak_mb:.0f} MB; CPU: service "
                f"{self.service_cores:.2f} cores, generator {self.generator_cores:.2f}; load "
                f"{self.load[0]:.1f} -> {self.load[1]:.1f}; over {SLOW_MS} ms: {self.slow:,}"
                + (f" (sent in seconds {compact(self.slow_seconds)})" if self.slow else ""))


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
    slow = np.flatnonzero(latencies * 1000 > SLOW_MS)
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


def metric(text: str, name: str, labels: str = "") -> float:
    """A sample's value in a Prometheus exposition (0 when absent)."""
    selector = re.escape(name) + (rf"\{{{re.escape(labels)}\}}" if labels else "")
    m = re.search(rf"^{selector} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


class Service:
    """`relkit serve` on a free loopback port, in a process of its own."""

    def __init__(self, workspace: str, warm_queries: int):
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        relkit = str(Path(sys.executable).with_name("relkit"))
        started = time.perf_counter()
        self.process = subprocess.Popen([relkit, "serve", "-w", workspace, "--port", str(self.port),
                                         "--warm-queries", str(warm_queries)], env=env)
        self.tree = ProcessTree(self.process.pid)
        deadline = time.time() + 600
        while True:
            try:
                r = httpx.get(f"{self.url}/healthz", timeout=2)
                if r.status_code == 200:
                    self.health = r.json()
                    break
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.time() > deadline:
                self.stop()            # not healthy in time: nothing left running
                raise SystemExit(f"the service on {workspace} did not start (exit status {self.process.returncode})")
            time.sleep(0.02)
        self.healthy_seconds = time.perf_counter() - started
        self.healthy_rss_mb = self.tree.rss_mb()

    def metrics(self) -> str:
        import httpx

        return httpx.get(f"{self.url}/metrics").text

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def measure(service: Service, name: str, bodies: list[bytes], rate: float, seconds: float, candidates: int) -> Run:
    """One run of `bodies` at `rate` for `seconds`, with what the service says of it."""
    before = service.metrics()
    service.tree.reset_peak()
    load = os.getloadavg()[0]
    cpu_service, cpu_self = service.tree.cpu_seconds(), time.process_time()
    result = asyncio.run(run_load("127.0.0.1", service.port, bodies, rate, seconds))
    cpu_service, cpu_self = service.tree.cpu_seconds() - cpu_service, time.process_time() - cpu_self
    after = service.metrics()

    def delta(name: str, labels: str = "") -> float:
        return metric(after, name, labels) - metric(before, name, labels)

    hits, misses = delta("relkit_query_vectors_total", 'result="hit"'), delta("relkit_query_vectors_total",
                                                                             'result="miss"')
    encoded, calls = delta("relkit_query_encode_batch_sum"), delta("relkit_query_encode_batch_count")
    waited = delta("relkit_query_encode_wait_seconds_sum")
    wall = result["seconds"]
    return Run(name=name, candidates=candidates, rate=rate, seconds=seconds, requests=result["requests"],
               throughput=result["throughput"], p50_ms=result["p50"], p99_ms=result["p99"], max_ms=result["max"],
               errors=result["errors"], slow=result["slow"], slow_seconds=result["slow_seconds"],
               hit_rate=hits / max(hits + misses, 1), encoded=int(encoded), encoded_per_s=encoded / wall,
               mean_batch=encoded / max(calls, 1), mean_wait_ms=1000 * waited / max(encoded, 1),
               rss_peak_mb=service.tree.peak_mb(), service_cores=cpu_service / wall, generator_cores=cpu_self / wall,
               load=[load, os.getloadavg()[0]])


def rerank_bodies(queries: list[str], items: list[str], candidates: int, rng) -> list[bytes]:
    return [json.dumps({"query": q, "items": [items[j] for j in rng.choice(len(items), candidates, replace=False)]}
                       ).encode() for q in queries]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--rate-1000", type=float, default=20, help="requests/s for the 1,000-candidate run (0: skip; "
                                                                    "not with --unseen)")
    parser.add_argument("--warm-queries", type=int, default=0, help="relkit serve --warm-queries")
    parser.add_argument("--unseen", action="store_true", help="every query new to the service, then the same again")
    parser.add_argument("--queries", type=Path, default=HOMEDEPOT, help="--unseen's queries (CSV)")
    parser.add_argument("--starts", type=int, default=0, help="start the service this many more times, timing each")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)

    items, test_queries, known = catalog_and_queries(args.workspace)
    n = int(args.rate * args.seconds)
    unseen = unseen_queries(args.queries, known, n) if args.unseen else []
    rng = np.random.default_rng(0)
    service = Service(args.workspace, args.warm_queries)
    report = {"workspace": str(args.workspace), "cores": os.cpu_count(), "model": service.health["model"],
              "items": service.health["items"], "healthy_seconds": [service.healthy_seconds],
              "healthy_rss_mb": service.healthy_rss_mb, "warm_queries": args.warm_queries, "runs": []}
    try:
        print(f"serving {service.health['model']} over {service.health['items']:,} items; {os.cpu_count()} cores "
              f"shared by the service and this generator; healthy {service.healthy_seconds:.2f} s after start "
              f"(--warm-queries {args.warm_queries}), RSS then {service.healthy_rss_mb:.0f} MB; load "
              f"{os.getloadavg()[0]:.1f}", flush=True)
        if args.unseen:
            bodies = rerank_bodies(unseen, items, args.candidates, rng)
            print(f"{len(unseen):,} distinct queries from {args.queries} that the workspace does not know", flush=True)
            runs = [("unseen", bodies, args.rate, args.candidates), ("warm cache", bodies, args.rate, args.candidates)]
        else:
            order = rng.permutation(len(test_queries))
            first = "cold query cache" if args.warm_queries == 0 else f"after --warm-queries {args.warm_queries}"
            cycle = [test_queries[order[i % len(order)]] for i in range(min(n, 4000))]
            runs = [(first, rerank_bodies(cycle, items, args.candidates, rng), args.rate, args.candidates)]
            runs.append(("again", rerank_bodies(cycle, items, args.candidates, rng), args.rate, args.candidates))
            if args.rate_1000 > 0:
                n1000 = min(int(args.rate_1000 * args.seconds), 4000)
                runs.append(("1,000 candidates", rerank_bodies(cycle[:n1000], items, 1000, rng), args.rate_1000, 1000))
        for name, bodies, rate, candidates in runs:
            run = measure(service, name, bodies, rate, args.seconds, candidates)
            report["runs"].append(asdict(run))
            print(run.line(), flush=True)
    finally:
        service.stop()
    for _ in range(args.starts):
        again = Service(args.workspace, args.warm_queries)
        again.stop()
        report["healthy_seconds"].append(again.healthy_seconds)
    if args.starts:
        print("healthy after " + ", ".join(f"{s:.2f}" for s in report["healthy_seconds"]) + " s (each start; load "
              f"{os.getloadavg()[0]:.1f})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()

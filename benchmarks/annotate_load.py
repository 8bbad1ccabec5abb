"""Load on the annotation app: simulated annotators over HTTP while other relkit commands use the
same workspace, and the app killed (SIGKILL) and restarted once mid-run.

    python benchmarks/annotate_load.py [--annotators 5] [--judgments 200] [--overlap 0.2] \
        [--data ../shared/data/crowdflower/pairs.csv] [--workdir /tmp/annotate-load]

The workspace is CrowdFlower (4 levels): the judgments of half the queries are imported, the
other half's pairs are the candidates to annotate. Each annotator signs in, then judges the pair on
screen and asks for the next one, as the page does, `--judgments` times (a random level; the point
is the plumbing). Meanwhile `relkit teach` (MiniLM, `--teach-epochs`, short texts) and `relkit eval
--system bm25` in a loop run on the workspace. When half the judgments are in, the app is killed
and started again; a request that fails is sent again with the same action id, as the page does.

Prints the judgments stored in `annotations` against those the annotators made, how many were lost
and how many duplicated, the live judgments in the journal, the time to the next pair (each
request's round trip, the next pair coming with the answer: p50, p99, max, without the requests
that waited for the restart), the restart's downtime, and whether teach and eval succeeded.
"""
from __future__ import annotations

import argparse
import csv
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def relkit(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "relkit", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def build(data: Path, ws: Path) -> None:
    rows = list(csv.DictReader(data.open(encoding="utf-8")))
    queries = sorted({r["query"] for r in rows})
    judged = set(queries[::2])
    header = ["query", "product_title", "product_description", "median_relevance", "relevance_variance", "id"]
    folder = ws.parent
    with (folder / "judged.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows([r[h] for h in header] for r in rows if r["query"] in judged)
    with (folder / "candidates.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["query", "title", "description"])
        w.writerows([r["query"], r["product_title"], r["product_description"]] for r in rows if r["query"] not in judged)
    for args in (["init", str(ws), "--levels", "4"],
                 ["import", "judgments", str(folder / "judged.csv"), "--format", "crowdflower", "-w", str(ws)],
                 ["import", "pairs", str(folder / "candidates.csv"), "-w", str(ws)],
                 ["split", "--seed", "0", "--dev", "0.2", "--test", "0.2", "-w", str(ws)]):
        p = relkit(*args)
        out = p.communicate()[0]
        if p.returncode:
            raise SystemExit(f"relkit {' '.join(args)} failed:\n{out}")


class App:
    def __init__(self, ws: Path, overlap: float):
        self.ws, self.overlap, self.port = ws, overlap, free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> float:
        began = time.monotonic()
        self.proc = relkit("annotate", "-w", str(self.ws), "--port", str(self.port), "--overlap", str(self.overlap),
                           "--goal", "200")
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"the app exited:\n{self.proc.stdout.read()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return time.monotonic() - began
            except httpx.HTTPError:
                time.sleep(0.1)


def annotator(name: str, url: str, n: int, seed: int, out: dict, lock: threading.Lock, done: list) -> None:
    rng = random.Random(seed)
    client = httpx.Client(base_url=url, timeout=60)
    while True:
        try:
            form = client.get("/signin").text
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    client.post("/signin", data={"csrf": csrf, "name": name})
    csrf = re.search(r'name="csrf" content="([^"]+)"', client.get("/").text).group(1)
    cards = client.get("/api/pairs").json()["cards"]
    made, latencies, retried = [], [], 0
    while len(made) < n and cards:
        body = {"event_id": uuid.uuid4().hex, "query_id": cards[0]["query_id"], "item_id": cards[0]["item_id"],
                "label": rng.randint(1, 4), "seconds": 1.0}
        failed = False
        while True:
            start = time.monotonic()
            try:
                r = client.post("/api/judge", headers={"X-CSRF-Token": csrf}, json=body)
                r.raise_for_status()
                break
            except httpx.HTTPError:
                failed = True
                time.sleep(0.1)
        if failed:
            retried += 1
        else:
            latencies.append(time.monotonic() - start)
        made.append(body)
        with lock:
            done[0] += 1
        cards = r.json()["cards"]
    out[name] = {"made": made, "latencies": latencies, "retried": retried}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--annotators", type=int, default=5)
    ap.add_argument("--judgments", type=int, default=200)
    ap.add_argument("--overlap", type=float, default=0.2)
    ap.add_argument("--teach-epochs", default="0.2", help="Passes of the concurrent relkit teach (MiniLM).")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "crowdflower" / "pairs.csv")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/annotate-load"))
    args = ap.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    ws = args.workdir / "ws"
    build(args.data, ws)

    app = App(ws, args.overlap)
    print(f"app started in {app.start():.1f} s")
    teach_log = (args.workdir / "teach.log").open("w")      # a file, not a pipe nobody reads until the end
    teach = subprocess.Popen([sys.executable, "-m", "relkit", "teach", "--name", "load", "--epochs", args.teach_epochs, "--max-length",
                              "32", "--batch-size", "16", "-w", str(ws)], stdout=teach_log, stderr=subprocess.STDOUT)
    evals, stop_eval = [], threading.Event()

    def eval_loop():
        while not stop_eval.is_set():
            p = relkit("eval", "--system", "bm25", "--split", "dev", "-w", str(ws))
            evals.append((p.wait(), p.stdout.read()))
            stop_eval.wait(2.0)      # a person's next eval, not a loop that never lets go of the workspace

    eval_thread = threading.Thread(target=eval_loop, daemon=True)   # a failed run must not leave it looping
    eval_thread.start()
    results, lock, done = {}, threading.Lock(), [0]
    total = args.annotators * args.judgments
    threads = [threading.Thread(target=annotator, args=(f"a{n}", app.url, args.judgments, n, results, lock, done))
               for n in range(args.annotators)]
    began = time.monotonic()
    for t in threads:
        t.start()
    while done[0] < total // 2 and any(t.is_alive() for t in threads):
        time.sleep(0.01)
    app.proc.send_signal(signal.SIGKILL)
    app.proc.wait()
    killed_at = done[0]
    downtime = app.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    # counted while teach and eval still run: `relkit status` merges what the journal holds
    relkit("status", "-w", str(ws)).communicate()
    sys.path.insert(0, str(ROOT / "src"))
    from relkit import Workspace
    from relkit.annotation.store import JOURNAL_NAME, Journal

    made = [(name, b["query_id"], b["item_id"], b["label"]) for name, r in results.items() for b in r["made"]]
    os.environ["RELKIT_LOCK_WAIT"] = "600"                  # teach and eval may be holding it
    with Workspace.open(ws, read_only=True) as w:
        stored = w.fetchall("SELECT annotator, query_id, item_id, label FROM annotations")
        resolved = w.fetchone("SELECT count(*) FROM judgments WHERE extra->>'source' = 'annotation'")[0]
    live = [e for e in Journal(ws / JOURNAL_NAME).live() if e.action == "judge"]
    lost = len(set(made) - set(stored))
    duplicated = len(stored) - len(set(stored)) + len(set(stored) - set(made))
    latencies = np.array([x for r in results.values() for x in r["latencies"]]) * 1000
    distinct = len({(q, i) for _, q, i, _ in made})
    print(f"{args.annotators} annotators x {args.judgments} judgments over HTTP in {elapsed:.0f} s, "
          f"the app killed after {killed_at} and restarted ({downtime:.1f} s to answer again)")
    print(f"judgments made {len(made)}, stored in annotations {len(stored)}, lost {lost}, duplicated {duplicated}; "
          f"journal live {len(live)}; {distinct} pairs ({len(made) - distinct} judged by two annotators, overlap "
          f"{args.overlap}), {resolved} resolved into judgments")
    print(f"time to the next pair: p50 {np.percentile(latencies, 50):.1f} ms, p99 {np.percentile(latencies, 99):.1f} ms, "
          f"max {latencies.max():.1f} ms over {len(latencies)} requests "
          f"({sum(r['retried'] for r in results.values())} waited for the restart)", flush=True)
    teach.wait()
    teach_log.close()
    teach_out = (args.workdir / "teach.log").read_text()
    stop_eval.set()
    eval_thread.join()
    app.proc.send_signal(signal.SIGTERM)
    app.proc.wait(timeout=60)
    print(f"relkit teach meanwhile: exit {teach.returncode}" + ("" if teach.returncode == 0 else f"\n{teach_out[-2000:]}"))
    print(f"relkit eval meanwhile: {sum(rc == 0 for rc, _ in evals)} of {len(evals)} runs succeeded"
          + "".join(f"\n{out[-500:]}" for rc, out in evals if rc))


if __name__ == "__main__":
    main()

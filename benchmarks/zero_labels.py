"""relkit with no human label behind its models: an LLM judge labels, a teacher learns from the
judge, a student from the teacher, the service serves it; people's labels only score the result.

    python benchmarks/zero_labels.py --workdir /tmp/zero --endpoint http://127.0.0.1:8080/v1 --model smollm2
        [--data data/sample/homedepot-sample.csv] [--format homedepot] [--limit 600] [--teacher-model M]
        [--k 15] [--min-queries N]

The judgments file is imported and split by query as `make demo` does; then every human label of
the train and dev queries is deleted from the workspace (kept aside only as the list of pairs to
judge), so nothing the models learn from, or are chosen on, comes from people. The judge labels
those pairs (`--limit` keeps the first N train pairs and N/4 dev pairs, for a slow judge), `relkit
teach --labels judge:NAME` trains a teacher on its labels (weights kept on its dev labels), `relkit
pairs` and `relkit label` give the teacher more pairs, `relkit distill --human-weight 0` trains
the student (early stopping on the judge's dev labels), `relkit promote` and `relkit serve` serve
it, and `relkit eval` scores teacher, student and the baselines (and the judge, with
`--eval-judge`) on the test queries' human labels. Every step is the CLI a user runs; the
commands are printed as they go. `--teacher-model` is the teacher's base (`relkit teach --model`;
default MiniLM); `--k` and `--min-queries` go to `relkit pairs` (default: 15 and relkit's default).
With a small local model, a small `--data` file, a small judge, `--limit` and `--min-queries 0`,
the chain runs in seconds (a check of the script).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def relkit(*args: str, capture: bool = False) -> str:
    command = [sys.executable, "-m", "relkit", *args]
    print("$ relkit " + " ".join(shlex.quote(a) for a in args), flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, check=True, text=True, stdout=subprocess.PIPE if capture else None)
    print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)
    return done.stdout if capture else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--endpoint", help="OpenAI-compatible base URL; omit for the local transformers backend")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--data", default=str(ROOT / "data/sample/homedepot-sample.csv"))
    parser.add_argument("--format", default="homedepot")
    parser.add_argument("--limit", type=int, default=0, help="judge at most N train pairs and N/4 dev pairs")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--teacher-model", default="default", help="the teacher's base (relkit teach --model)")
    parser.add_argument("--k", type=int, default=15, help="candidates per train query and source (relkit pairs --k)")
    parser.add_argument("--min-queries", type=int, default=None,
                        help="relkit pairs --min-queries (default: relkit's)")
    parser.add_argument("--eval-judge", action="store_true",
                        help="also score the judge on the test queries (it judges their pairs: slow for a slow judge)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import duckdb

    ws = str(args.workdir / "ws")
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    relkit("init", ws)
    relkit("import", "judgments", args.data, "--format", args.format, "-w", ws)
    relkit("split", "--seed", "13", "--test", "0.2", "-w", ws)

    # people's labels of the train and dev queries leave the workspace: only their pairs are judged
    with duckdb.connect(f"{ws}/relkit.duckdb") as con:
        rows = con.execute("SELECT s.split, j.query_id, j.item_id FROM judgments j JOIN splits s USING (query_id) "
                           "WHERE s.split IN ('train', 'dev') ORDER BY s.split DESC, 2, 3").fetchall()
        removed = con.execute("DELETE FROM judgments WHERE query_id IN "
                              "(SELECT query_id FROM splits WHERE split IN ('train', 'dev'))").fetchone()[0]
        left = con.execute("SELECT count(*) FROM judgments").fetchone()[0]
    train = [r for r in rows if r[0] == "train"]
    dev = [r for r in rows if r[0] == "dev"]
    if args.limit:
        train, dev = train[:args.limit], dev[:max(1, args.limit // 4)]
    print(f"removed {removed:,} human labels of train and dev queries; {left:,} test labels remain for scoring; "
          f"judging {len(train):,} train and {len(dev):,} dev pairs", flush=True)
    pairs_file = args.workdir / "to_judge.csv"
    with pairs_file.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["query_id", "item_id"])
        writer.writerows((q, i) for _, q, i in train + dev)

    judge = ["judge", "--name", "llm", "--model", args.model, "--file", str(pairs_file), "--fields", "title", "-w", ws]
    if args.endpoint:
        judge += ["--endpoint", args.endpoint, "--concurrency", str(args.concurrency), "--timeout", "300"]
    relkit(*judge)
    relkit("teach", "--name", "zero", "--labels", "judge:llm", "--model", args.teacher_model, "--epochs", "1",
           "--max-length", "48", "--batch-size", "16", "-w", ws)
    relkit("pairs", "--k", str(args.k), *([] if args.min_queries is None else ["--min-queries", str(args.min_queries)]),
           "-w", ws)
    relkit("label", "--teacher", "zero", "-w", ws)
    relkit("distill", "--teacher", "zero", "--human-weight", "0", "--name", "zero", "-w", ws)
    relkit("promote", "zero", "-w", ws)

    # the service answers with the student that learned from no person
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "relkit", "serve", "-w", ws, "--port", str(port)],
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while True:
            try:
                health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read())
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise SystemExit("relkit serve did not start")
                time.sleep(0.5)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/search", method="POST",
                                         data=json.dumps({"query": "cordless drill", "k": 3}).encode(),
                                         headers={"content-type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
        print(f"serving {health['model']}: 'cordless drill' -> {answer}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    systems = (["judge:llm"] if args.eval_judge else []) + ["teacher:zero", "student:zero", "bm25", "embedding"]
    relkit("eval", *[a for s in systems for a in ("--system", s)], "-w", ws)
    print(f"\n{time.perf_counter() - started:.0f} s in all; no human label of a train or dev query was used")


if __name__ == "__main__":
    main()

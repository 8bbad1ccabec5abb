"""Time importing the Home Depot judgments (59,010 pairs) into a new workspace, then split it and
evaluate the baselines on its test split.

    python benchmarks/import_homedepot.py [--data ../shared/data/homedepot/pairs.csv] [--no-eval]

Prints the import time and rows/s (target: under 30 s on a 2-core machine), a second import of
the same file (which must add nothing), and the evaluation table.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rich.console import Console  # noqa: E402

from relkit import SplitConfig, Workspace, evaluate, import_file, make_system, split_queries  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "homedepot" / "pairs.csv")
    parser.add_argument("--no-eval", action="store_true", help="only time the import")
    args = parser.parse_args()
    console = Console(width=120)
    with tempfile.TemporaryDirectory() as tmp, Workspace.create(Path(tmp) / "ws") as ws:
        start = time.perf_counter()
        result = import_file(ws, "judgments", args.data, format="homedepot")
        seconds = time.perf_counter() - start
        console.print(result.summary(), highlight=False)
        console.print(f"import: {seconds:.2f} s, {result.rows / seconds:,.0f} rows/s (target < 30 s)")
        start = time.perf_counter()
        again = import_file(ws, "judgments", args.data, format="homedepot")
        console.print(f"second import: {time.perf_counter() - start:.2f} s, {again.added} added")
        summary = split_queries(ws, SplitConfig(seed=0))
        console.print(f"split (seed 0): {summary.counts}")
        if not args.no_eval:
            report = evaluate(ws, [make_system("bm25", ws), make_system("embedding", ws)], "test")
            console.print(report.headline(), highlight=False)
            console.print(report.table())


if __name__ == "__main__":
    main()

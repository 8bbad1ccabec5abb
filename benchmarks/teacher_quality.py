"""Train a teacher on a real dataset's train split and compare it with the baselines on its test
split, in one run.

    python benchmarks/teacher_quality.py --dataset crowdflower [--workdir DIR] [--set KEY=VALUE ...]
    python benchmarks/teacher_quality.py --dataset homedepot --set epochs=2
    python benchmarks/teacher_quality.py --dataset homedepot --queries 40 --set epochs=0.5  # a quick check, in WORKDIR/homedepot-first-40

The dataset is read from ../shared/data (with --queries N, only the judgments of its first N
distinct queries: a slice by query, to check the script in seconds), imported into a workspace
under --workdir (kept, so a second run with another config reuses the import and split), split
by query with seed 0 (dev 0.15, test 0.2), and the teacher is trained with relkit's defaults overridden by --set.
Prints the training time and the evaluation table (teacher, bm25, embedding).
"""
from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rich.console import Console  # noqa: E402

from relkit import LabelScale, SplitConfig, Workspace, evaluate, import_file, make_system, split_queries  # noqa: E402
from relkit.config import from_dict, parse_sets  # noqa: E402
from relkit.teacher import TrainConfig, train_teacher  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
# file, levels, the column that names the query
DATASETS = {"homedepot": ("homedepot/pairs.csv", 5, "search_term"),
            "crowdflower": ("crowdflower/pairs.csv", 4, "query")}


def first_queries(src: Path, dst: Path, column: str, n: int) -> Path:
    """The rows of the first `n` distinct queries of a dataset's CSV (a slice by query, never by row)."""
    with open(src, newline="", encoding="utf-8") as f, open(dst, "w", newline="", encoding="utf-8") as out:
        reader = csv.DictReader(f)
        writer = csv.DictWriter(out, fieldnames=reader.fieldnames)
        writer.writeheader()
        seen: set[str] = set()
        for row in reader:
            if row[column] not in seen and len(seen) >= n:
                continue
            seen.add(row[column])
            writer.writerow(row)
    return dst


def workspace(workdir: Path, dataset: str, queries: int | None = None) -> Workspace:
    # a slice has a workspace of its own: a later full run must not reopen it (nor the reverse)
    path = workdir / (f"{dataset}-first-{queries}" if queries else dataset)
    if (path / "relkit.duckdb").exists():
        return Workspace.open(path)
    relative, levels, column = DATASETS[dataset]
    source = DATA / relative
    if queries:
        workdir.mkdir(parents=True, exist_ok=True)
        source = first_queries(source, workdir / f"{dataset}-first-{queries}.csv", column, queries)
    ws = Workspace.create(path, LabelScale.default(levels))
    import_file(ws, "judgments", source, format=dataset)
    split_queries(ws, SplitConfig(seed=0, dev=0.15, test=0.2))
    return ws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--workdir", type=Path, default=Path("bench-ws"))
    parser.add_argument("--set", dest="sets", action="append", default=[], help="a training option KEY=VALUE")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--queries", type=int, default=None,
                        help="only the first N queries of the dataset (a quick check; default: all)")
    args = parser.parse_args()
    console = Console(width=120)
    logging.basicConfig(format="%(message)s")   # relkit's messages (the dev evaluations) and bars
    logging.getLogger("relkit").setLevel(logging.INFO)
    with workspace(args.workdir, args.dataset, args.queries) as ws:
        options = {"name": f"{args.dataset}-{time.strftime('%Y%m%d-%H%M%S')}", **parse_sets(args.sets, TrainConfig)}
        config = from_dict(TrainConfig, options, "training option")
        console.print(f"training {config}", highlight=False)
        result = train_teacher(ws, config)
        console.print(f"trained {result.steps} steps in {result.seconds / 60:.1f} min; best dev step "
                      f"{result.best_step}", highlight=False)
        systems = [make_system(f"teacher:{config.name}", ws)]
        if not args.no_baselines:
            systems += [make_system("bm25", ws), make_system("embedding", ws)]
        report = evaluate(ws, systems, "test")
        console.print(" ".join(sys.argv), highlight=False)
        console.print(report.headline(), highlight=False)
        console.print(report.table())


if __name__ == "__main__":
    main()

"""relkit at scale: candidate pairs, teacher labels and a student distilled from them, at growing
numbers of pairs, with the seconds and the peak memory of every stage.

    python benchmarks/scale.py --sizes 100000,300000,1000000 --json scale.json \
        [--teacher PATH_OR_NAME --teacher-max 300000] [--seeds 3 --seeds-max 300000] [--epochs 10] [--workdir DIR]

On the Home Depot judgments (--data, by default ../shared/data/homedepot/pairs.csv beside the
project), in a new workspace (--workdir; a temporary folder, removed at the end, by default):
import and split (seed 0) once, then for every size N:

- pairs: `relkit pairs --k K --min-queries Q` with Q raised until the train split has N candidate
  pairs (train queries from item titles: Home Depot has no engagement log), and once the titles
  have no more queries to give (about 29,000 on Home Depot: about 1.7M pairs at k 30), K raised;
- label: the labeler labels the pairs no shard holds yet;
- distill: a student on N of the labeled pairs (a random subset, as `relkit distill --sizes` takes
  it) plus the human train labels, `--epochs` epochs exactly (no early stop), once per seed; its
  test metrics. Size 0 is the student on the human train labels alone (no pairs, no labels): the
  point a curve of the teacher's labels starts from.

The labeler is the teacher (--teacher, a trained teacher's folder or name in the workspace) for
sizes up to --teacher-max pairs. Past that, or without a teacher, a stand-in labels the pairs to
measure the data path only: a student trained on the human train labels (`student:human`, scored
with the fast scorer). A row names its labeler; the rows of a stand-in carry no quality figure
(null metrics), so they never mix into a quality curve.

Every stage runs in a process of its own; its peak RSS is that of its whole process tree (polled
from /proc every 0.1 s, and the peak of its largest process as the kernel counted it). Printed as
each stage ends, and written with --json OUT as a list of rows with the keys pairs, stage,
seconds, peak_rss_mb, labeler, the test metrics (METRICS) and a few counts.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("auroc@2", "qwk", "ndcg@10", "accuracy", "argmax_qwk")
CURVE_METRICS = METRICS[:3]     # what the curve at the end shows of each size
STAND_IN = "standin-human"          # the stand-in's labels: labels/standin-human
STAND_IN_LABELER = "student:human"


# --- the stages (each in a process of its own) -------------------------------------------------------

def features(args):
    from relkit.student.features import DEFAULT_GROUPS, FeatureConfig

    return FeatureConfig(groups=tuple(args.features.split(",")) if args.features else DEFAULT_GROUPS)


def stage_setup(args) -> dict:
    """A workspace with the judgments, split by query; the stand-in student on the human train labels."""
    from relkit import SplitConfig, Workspace, import_file, split_queries
    from relkit.student.distill import Distiller
    from relkit.student.model import StudentConfig

    path = Path(args.workdir) / "ws"
    if not path.exists():
        with Workspace.create(path) as ws:
            import_file(ws, "judgments", args.data, format="homedepot")
            split_queries(ws, SplitConfig(seed=0))
    with Workspace.open(path) as ws:
        standin = ws.artifacts / "student-standin"
        if not standin.exists():
            student = Distiller(ws, None, features(args)).train(0, StudentConfig(human_weight=1.0, epochs=args.epochs))
            student.save(standin)
        return {"train_queries": train_queries(ws), "judgments": ws.count("judgments")}


def train_queries(ws) -> int:
    return ws.fetchone("SELECT count(*) FROM splits WHERE split = 'train'")[0]


def train_pairs(ws) -> tuple[int, int]:
    return ws.fetchone("SELECT count(*), count(DISTINCT query_id) FROM pairs JOIN splits USING (query_id) "
                       "WHERE split = 'train'")


def stage_pairs(args) -> dict:
    """At least `size` candidate pairs of train queries: `--min-queries` raised first; once the query
    sources run dry (Home Depot's item titles give about 29,000 train queries), `--k` raised."""
    from relkit import Workspace
    from relkit.candidates import make_pairs

    sources = tuple(args.sources.split(","))
    k = args.k
    with Workspace.open(Path(args.workdir) / "ws") as ws:
        pairs, queries = train_pairs(ws)
        have = train_queries(ws)
        per_query = pairs / queries if pairs else k * len(sources) * 0.8   # the sources overlap a little
        dry = False
        for _ in range(8):
            if pairs >= args.size:
                break
            if dry:     # no more queries: more candidates for each (pairs grow a little slower than k)
                k = math.ceil(k * args.size / pairs * 1.1)
            wanted = have if dry else max(have + 1, math.ceil(args.size / per_query * 1.05))
            make_pairs(ws, k=k, sources=sources, min_queries=wanted)
            before, (pairs, queries) = pairs, train_pairs(ws)
            if dry and pairs == before:
                break   # every train query has all the candidates there are
            have = train_queries(ws)
            dry = dry or have < wanted      # the query sources had fewer new queries than asked for
            per_query = pairs / max(queries, 1)
        return {"train_pairs": pairs, "train_queries": have, "k": k}


def stage_label(args) -> dict:
    """The labeler labels every pair no shard of it holds yet."""
    from relkit import Workspace
    from relkit.labels import labels_dir, refresh_view, shards

    with Workspace.open(Path(args.workdir) / "ws") as ws:
        if args.labeler == STAND_IN_LABELER:
            stand_in_label(ws, args.chunk)
            name = STAND_IN
        else:
            from relkit.labeling import label_pairs

            name = label_pairs(ws, args.labeler.removeprefix("teacher:"), backend=args.backend).teacher
        import pyarrow.parquet as pq

        refresh_view(ws)
        return {"labeled": sum(pq.ParquetFile(p).metadata.num_rows for p in shards(labels_dir(ws, name)))}


def stand_in_label(ws, chunk: int) -> None:
    """Label the pairs of the `pairs` table that labels/standin-human does not hold yet with the
    stand-in student, `chunk` pairs at a time (a DuckDB record batch reader), written as `relkit
    label` writes shards."""
    from relkit.labeling import PENDING_MEMORY
    from relkit.labels import clear_strays, labels_dir, next_shard_number, shards, write_shard
    from relkit.student import FastScorer, FeatureBuilder, Student

    student = Student.load(ws.artifacts / "student-standin")
    builder = FeatureBuilder.from_workspace(ws, student.feature_config())
    scorer = FastScorer(student, builder)
    out = labels_dir(ws, STAND_IN)
    out.mkdir(parents=True, exist_ok=True)
    clear_strays(out)
    done = [str(p) for p in shards(out)]
    anti = "ANTI JOIN read_parquet(?) l USING (query_id, item_id)" if done else ""
    number = next_shard_number(out)
    k = ws.scale.k
    with ws.memory_limit(PENDING_MEMORY):     # the sort of every pending pair goes to disk past it
        pending = ws.con.sql(f"SELECT p.query_id, q.query, p.item_id FROM pairs p JOIN queries q USING (query_id) "
                             f"{anti} ORDER BY p.query_id, p.item_id", params=[done] if done else None)
        for batch in pending.to_arrow_reader(chunk):
            write_shard(out, number, stand_in_shard(batch, builder, scorer, k))
            number += 1


def stand_in_shard(batch, builder, scorer, k: int):
    """One shard of the stand-in's labels: the pairs of `batch` (query_id, query, item_id) scored."""
    import numpy as np
    import pyarrow as pa

    from relkit.student.features import grouped

    queries = batch.column("query").to_pylist()
    distinct = list(dict.fromkeys(queries))
    index = {q: n for n, q in enumerate(distinct)}
    query_index = np.fromiter((index[q] for q in queries), dtype=np.int64, count=len(queries))
    rows = builder.items.rows(batch.column("item_id").to_pylist())
    vectors = builder.query_vectors(distinct)
    proba = np.zeros((len(queries), k), dtype=np.float32)
    for n, at in grouped(query_index):
        proba[at] = scorer.score_rows(distinct[n], rows[at], vectors[n] if builder.dim else None)
    table = {"teacher": [STAND_IN] * len(queries), "query_id": batch.column("query_id"),
             "item_id": batch.column("item_id"),
             **{f"p{i + 1}": proba[:, i] for i in range(k)},
             "expected_level": proba @ np.arange(1, k + 1, dtype=np.float32)}
    return pa.table(table)


def stage_distill(args) -> dict:
    """A student on `size` labeled pairs and the human ones, `epochs` epochs, seed `seed`; its test metrics."""
    from relkit import Workspace
    from relkit.student.distill import Distiller
    from relkit.student.model import StudentConfig

    with Workspace.open(Path(args.workdir) / "ws") as ws:
        name = (None if not args.labeler else STAND_IN if args.labeler == STAND_IN_LABELER
                else args.labeler.removeprefix("teacher:"))
        distiller = Distiller(ws, name, features(args), **({"shuffle_rows": args.shuffle_rows}
                                                           if args.shuffle_rows else {}))
        n = min(args.size, distiller.available) if name else 0
        config = StudentConfig(epochs=args.epochs, patience=args.epochs, seed=args.seed)
        student = distiller.train(n, config)
        return {"teacher_pairs": student.meta.data["teacher_pairs"], "human_pairs": student.meta.data["human_pairs"],
                "epochs": len(student.meta.metrics["history"]), "train_seconds": round(student.meta.data["seconds"], 2),
                "shuffle_rows": distiller.shuffle_rows,
                "test": student.meta.metrics["test"]}


STAGES = {"setup": stage_setup, "pairs": stage_pairs, "label": stage_label, "distill": stage_distill}


# --- measuring a stage ----------------------------------------------------------------------------

def tree_rss(root: int) -> int:
    """Bytes resident in `root` and all its descendants now (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    page = os.sysconf("SC_PAGE_SIZE")
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
        todo.extend(children.get(pid, []))
    return total


def run_stage(stage: str, args, **options) -> tuple[dict, float, float]:
    """Run `stage` in a process of its own: (its result, seconds, peak RSS of its process tree in MB)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--stage", stage, "--workdir", str(args.workdir),
               "--data", str(args.data), "--k", str(args.k), "--sources", args.sources, "--epochs", str(args.epochs),
               "--backend", args.backend, "--chunk", str(args.chunk), "--features", args.features or "",
               "--shuffle-rows", str(args.shuffle_rows)]
    for key, value in options.items():
        command += [f"--{key}", str(value)]
    result_file = Path(args.workdir) / f"result-{stage}.json"
    result_file.unlink(missing_ok=True)
    command += ["--result", str(result_file)]
    started = time.perf_counter()
    child = subprocess.Popen(command)
    peak = [0]
    finished = threading.Event()

    def poll():
        while not finished.is_set():
            peak[0] = max(peak[0], tree_rss(child.pid))
            finished.wait(0.1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    _, status, usage = os.wait4(child.pid, 0)
    finished.set()
    poller.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if child.returncode:
        raise SystemExit(f"stage {stage} failed (exit status {child.returncode}): {' '.join(command)}")
    largest = usage.ru_maxrss * 1024            # kilobytes on Linux
    return json.loads(result_file.read_text()), seconds, max(peak[0], largest) / 2**20


def row(size: int, stage: str, seconds: float, rss: float, labeler: str | None, metrics: dict | None = None,
        **counts) -> dict:
    out = {"pairs": size, "stage": stage, "seconds": round(seconds, 2), "peak_rss_mb": round(rss, 1),
           "labeler": labeler}
    out.update({m: (None if metrics is None else metrics.get(m)) for m in METRICS})
    out.update(counts)
    return out


def show(r: dict) -> None:
    figures = "  ".join(f"{m} {r[m]:.4f}" for m in METRICS if r.get(m) is not None)
    extra = "  ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in r.items()
                      if k not in ("pairs", "stage", "seconds", "peak_rss_mb", "labeler", *METRICS))
    print(f"{r['pairs']:>11,} {r['stage']:<8} {r['seconds']:>9.1f} s {r['peak_rss_mb']:>9.1f} MB  "
          f"{r['labeler'] or '-':<24} {figures}  {extra}", flush=True)


def curve(rows: list[dict]) -> list[dict]:
    """The quality curve: for every size with quality figures, their mean (and, over several seeds,
    their standard deviation) over the seeds."""
    import numpy as np

    out = []
    quality = [r for r in rows if r["stage"] == "distill" and any(r[m] is not None for m in METRICS)]
    for size in sorted({r["pairs"] for r in quality}):
        runs = [r for r in quality if r["pairs"] == size]
        point = {"pairs": size, "labeler": runs[0]["labeler"], "seeds": len(runs)}
        for m in CURVE_METRICS:
            values = [r[m] for r in runs if r[m] is not None]
            point[m] = float(np.mean(values)) if values else None
            point[m + "_sd"] = float(np.std(values)) if len(values) > 1 else None
        out.append(point)
    return out


def show_curve(points: list[dict]) -> None:
    if not points:
        return
    print(f"\n{'pairs':>11}  {'labeler':<24} {'seeds':>5}  " + "  ".join(f"{m:>15}" for m in CURVE_METRICS))
    for p in points:
        cells = [f"{p[m]:.4f}" + (f" ± {p[m + '_sd']:.4f}" if p[m + "_sd"] is not None else "") if p[m] is not None
                 else "-" for m in CURVE_METRICS]
        print(f"{p['pairs']:>11,}  {p['labeler'] or 'human labels only':<24} {p['seeds']:>5}  "
              + "  ".join(f"{c:>15}" for c in cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,300000,1000000", help="numbers of pairs, comma-separated")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "homedepot" / "pairs.csv")
    parser.add_argument("--workdir", type=Path, help="the workspace's folder (kept; default: a temporary one)")
    parser.add_argument("--teacher", help="the teacher that labels (a folder or a name in the workspace)")
    parser.add_argument("--teacher-max", type=int, default=300_000,
                        help="the largest size the teacher labels; past it, the stand-in")
    parser.add_argument("--backend", default="onnx", help="the teacher's backend (relkit label --backend)")
    parser.add_argument("--k", type=int, default=30, help="candidates per train query and source (relkit pairs --k)")
    parser.add_argument("--sources", default="bm25,embedding", help="candidate sources (relkit pairs --sources)")
    parser.add_argument("--features", default="", help="the student's feature groups (default: relkit's)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of every student (no early stop)")
    parser.add_argument("--seeds", type=int, default=1, help="students per size, seeds 0..N-1")
    parser.add_argument("--seeds-max", type=int, default=0,
                        help="the largest size trained with every seed; past it, seed 0 only (default: all sizes)")
    parser.add_argument("--chunk", type=int, default=65_536, help="pairs the stand-in labels at a time")
    parser.add_argument("--shuffle-rows", type=int, default=0,
                        help="training rows shuffled together (default: relkit's; smaller: the windowed shuffle "
                             "at smaller sizes)")
    # a stage's own process
    parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--labeler", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.stage:
        args.result.write_text(json.dumps(STAGES[args.stage](args)))
        return
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    temporary = args.workdir is None
    args.workdir = Path(tempfile.mkdtemp(prefix="relkit-scale-")) if temporary else args.workdir
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    try:
        print(f"{'pairs':>11} {'stage':<8} {'seconds':>11} {'peak RSS':>12}  {'labeler':<24} figures", flush=True)
        result, seconds, rss = run_stage("setup", args)
        rows.append(row(0, "setup", seconds, rss, None, **result))
        show(rows[-1])
        for size in sorted(sizes):
            if size == 0:       # people's labels alone: no pairs to make or label
                labeler = None
            else:
                labeler = (f"teacher:{args.teacher}" if args.teacher and size <= args.teacher_max
                           else STAND_IN_LABELER)
                result, seconds, rss = run_stage("pairs", args, size=size)
                rows.append(row(size, "pairs", seconds, rss, None, **result))
                show(rows[-1])
                result, seconds, rss = run_stage("label", args, size=size, labeler=labeler)
                rows.append(row(size, "label", seconds, rss, labeler, **result))
                show(rows[-1])
            seeds = args.seeds if not args.seeds_max or size <= args.seeds_max else 1
            for seed in range(seeds):
                result, seconds, rss = run_stage("distill", args, size=size, labeler=labeler or "", seed=seed)
                # a stand-in's student measures the data path only: no quality figure
                metrics = None if labeler == STAND_IN_LABELER else result.pop("test")
                result.pop("test", None)
                per = result["train_seconds"] / max(result["epochs"] * result["teacher_pairs"], 1)
                rows.append(row(size, "distill", seconds, rss, labeler, metrics, seed=seed,
                                seconds_per_pair_epoch=float(f"{per:.3g}") if size else None, **result))
                show(rows[-1])
        show_curve(curve(rows))
    finally:
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
        if temporary:
            shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Active learning, shown: does the queue's `uncertain` strategy buy a better student than randomly
chosen pairs for the same number of human labels?

    nice python benchmarks/active_learning.py [--workdir /tmp/wt-queue-bench] [--seeds 3]
        [--seed-size 200] [--batch 200] [--rounds 5] [--arms "uncertain;random"] [--vectors-from WS]
        [--data FILE]

CrowdFlower (../shared/data/crowdflower/pairs.csv, or `--data`: a file in its format, e.g. the rows
of a few of its queries to check the script in seconds) is imported into a fresh workspace and split by
query. The dev and test judgments stay; the train judgments are hidden: their pairs become the
`pairs` table (unlabeled candidates) and a simulated annotator reveals a pair's label only when it
is asked for. Each run starts from the same random seed set of train pairs, then repeats: train a
student on the revealed labels (human labels only, early-stopped on dev), ask the arm for the next
batch, reveal it. An arm is a queue mix (`uncertain`: `rank_pairs` with the student just trained,
saved as student:al-ARM; `uncertain=3,diverse=1`, ...) or `random` (uniform over the unrevealed pool).
Prints dev QWK and nDCG@10 (early stopping and the cutpoints use dev, so dev is optimistic) and the
same on the untouched test split, mean and sd over seeds, per number of labels spent, and at each
size how many seeds each queue arm beats random by. Writes the rows to WORKDIR/active_learning.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from relkit import LabelScale, SplitConfig, Workspace, import_file, split_queries  # noqa: E402
from relkit.annotation.queue import parse_weights, rank_pairs  # noqa: E402
from relkit.evaluate import load_judged_pairs, score_prediction  # noqa: E402
from relkit.student.distill import inputs, student_prediction  # noqa: E402
from relkit.student.features import FeatureBuilder  # noqa: E402
from relkit.student.model import DevSet, StudentConfig, TrainingSet, fit_student  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "crowdflower" / "pairs.csv"


def prepare(workdir: Path, split_seed: int, vectors_from: Path | None, data: Path = DATA) -> tuple[Workspace, dict]:
    """A fresh CrowdFlower workspace whose train judgments are moved out: {(query_id, item_id): level}."""
    shutil.rmtree(workdir, ignore_errors=True)
    ws = Workspace.create(workdir / "ws", LabelScale.default(4))
    if vectors_from:   # the cache is keyed by encoder and text hash: the same vectors, not encoded again
        ws.run(f"ATTACH '{vectors_from / 'relkit.duckdb'}' AS other (READ_ONLY)")
        ws.run("INSERT OR IGNORE INTO text_vectors SELECT * FROM other.text_vectors")
        ws.run("DETACH other")
        print(f"{ws.count('text_vectors'):,} cached item vectors from {vectors_from}", flush=True)
    import_file(ws, "judgments", data, format="crowdflower")
    split_queries(ws, SplitConfig(seed=split_seed, dev=0.2, test=0.1))
    hidden = {(q, i): int(label) for q, i, label in ws.fetchall(
        "SELECT query_id, item_id, label FROM judgments JOIN splits USING (query_id) WHERE split = 'train'")}
    with ws.transaction():
        ws.run("INSERT INTO pairs SELECT query_id, item_id, 'crowdflower' FROM judgments JOIN splits "
               "USING (query_id) WHERE split = 'train'")
        ws.run("DELETE FROM judgments WHERE query_id IN (SELECT query_id FROM splits WHERE split = 'train')")
    return ws, hidden


def reveal(ws: Workspace, hidden: dict, labeled: list) -> None:
    """The judgments table holds exactly the revealed train labels (with dev and test's)."""
    with ws.transaction():
        ws.run("DELETE FROM judgments WHERE query_id IN (SELECT query_id FROM splits WHERE split = 'train')")
        ws.con.executemany("INSERT INTO judgments VALUES (?, ?, ?, NULL)", [(q, i, hidden[(q, i)]) for q, i in labeled])


class Trainer:
    """Features of every pool, dev and test pair, computed once."""

    def __init__(self, ws: Workspace, pool: list):
        self.ws, self.pool = ws, pool
        self.builder = FeatureBuilder.from_workspace(ws)
        queries = dict(ws.fetchall("SELECT query_id, query FROM queries"))
        self.x = inputs(self.builder, [queries[q] for q, _ in pool], [i for _, i in pool])
        self.row = {p: n for n, p in enumerate(pool)}
        dev = load_judged_pairs(ws, "dev")
        self.dev = DevSet(inputs(self.builder, dev.queries, dev.item_ids), dev.labels, dev.query_ids, dev.item_ids)
        self.test = load_judged_pairs(ws, "test")

    def train(self, labeled: list, hidden: dict, seed: int):
        k = self.ws.scale.k
        rows = [self.row[p] for p in labeled]
        targets = np.zeros((len(rows), k), dtype=np.float32)
        targets[np.arange(len(rows)), [hidden[p] - 1 for p in labeled]] = 1.0
        student = fit_student(TrainingSet(self.x[rows], targets, np.ones(len(rows), dtype=np.float32)), self.dev,
                              self.ws.scale, self.builder, StudentConfig(seed=seed))
        test = score_prediction(self.test, student_prediction(student, self.builder, self.test), self.ws.scale)
        dev = student.meta.metrics["dev"]
        return student, {"dev_qwk": dev["qwk"], "dev_ndcg@10": dev["ndcg@10"], "test_qwk": test["qwk"],
                         "test_ndcg@10": test["ndcg@10"]}


def run_arm(arm: str, ws: Workspace, trainer: Trainer, hidden: dict, seed_set: list, seed: int, batch: int,
            rounds: int) -> list[dict]:
    rng = np.random.default_rng(1000 + seed)
    labeled = list(seed_set)
    name = "al-" + "".join(c if c.isalnum() else "-" for c in arm)
    rows = []
    for r in range(rounds + 1):
        started = time.perf_counter()
        student, metrics = trainer.train(labeled, hidden, seed)
        rows.append({"arm": arm, "seed": seed, "round": r, "labels": len(labeled), **metrics})
        if r == rounds:
            break
        if arm == "random":
            taken = set(labeled)
            rest = [p for p in trainer.pool if p not in taken]
            picks = [rest[i] for i in rng.choice(len(rest), size=min(batch, len(rest)), replace=False)]
        else:
            student.save(ws.artifacts / f"student-{name}")
            reveal(ws, hidden, labeled)   # what is judged is never proposed again
            picks = rank_pairs(ws, parse_weights(arm), model=f"student:{name}", seed=seed, limit=batch)
        labeled += picks
        print(f"  {arm:<22} seed {seed} round {r}: {len(labeled) - len(picks):>5} labels -> dev QWK "
              f"{metrics['dev_qwk']:.3f} nDCG@10 {metrics['dev_ndcg@10']:.3f}; test QWK {metrics['test_qwk']:.3f} "
              f"nDCG@10 {metrics['test_ndcg@10']:.3f} ({time.perf_counter() - started:.0f} s)", flush=True)
    return rows


def table(rows: list[dict], arms: list[str]) -> None:
    keys = ("dev_qwk", "dev_ndcg@10", "test_qwk", "test_ndcg@10")
    sizes = sorted({r["labels"] for r in rows})
    print("\nmean (sd) over seeds")
    print(f"{'labels':>6}  {'arm':<22}" + "".join(f"{k:>17}" for k in keys))
    for n in sizes:
        for arm in arms:
            got = [r for r in rows if r["labels"] == n and r["arm"] == arm]
            cells = "".join(f"{np.mean([r[k] for r in got]):>10.4f} ({np.std([r[k] for r in got]):.3f})" for k in keys)
            print(f"{n:>6}  {arm:<22}{cells}")
    if "random" not in arms:
        return
    print("\nqueue arm minus random at equal labels: mean difference [seeds where the arm is ahead]")
    for arm in (a for a in arms if a != "random"):
        for n in sizes[1:]:
            parts = []
            for k in keys:
                mine = {r["seed"]: r[k] for r in rows if r["labels"] == n and r["arm"] == arm}
                base = {r["seed"]: r[k] for r in rows if r["labels"] == n and r["arm"] == "random"}
                diffs = [mine[s] - base[s] for s in mine if s in base]
                parts.append(f"{k} {np.mean(diffs):+.4f} [{sum(d > 0 for d in diffs)}/{len(diffs)}]")
            print(f"  {arm:<22} {n:>5} labels: " + ", ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/wt-queue-bench"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed-size", type=int, default=200)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--arms", default="uncertain;random",
                        help="';'-separated: queue mixes (uncertain, uncertain=3,diverse=1, ...) or random")
    parser.add_argument("--vectors-from", type=Path, default=None,
                        help="a workspace of the same dataset whose cached item vectors to reuse (CPU time)")
    parser.add_argument("--data", type=Path, default=DATA, help="the judgments, in CrowdFlower's format")
    args = parser.parse_args()
    arms = [a.strip() for a in args.arms.split(";") if a.strip()]
    for arm in arms:
        if arm != "random":
            parse_weights(arm)
    if not args.data.exists():
        raise SystemExit(f"{args.data} is not here")
    started = time.perf_counter()
    ws, hidden = prepare(args.workdir, split_seed=0, vectors_from=args.vectors_from, data=args.data)
    pool = sorted(hidden)
    print(f"CrowdFlower: {len(pool):,} train pairs hidden, {ws.count('judgments'):,} dev/test judgments kept",
          flush=True)
    trainer = Trainer(ws, pool)
    print(f"features ready in {time.perf_counter() - started:.0f} s", flush=True)
    rows = []
    for seed in range(args.seeds):
        seed_set = [pool[i] for i in np.random.default_rng(seed).choice(len(pool), args.seed_size, replace=False)]
        for arm in arms:
            rows += run_arm(arm, ws, trainer, hidden, seed_set, seed, args.batch, args.rounds)
    table(rows, arms)
    out = args.workdir / "active_learning.json"
    out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))
    print(f"\n{len(rows)} students in {time.perf_counter() - started:.0f} s; rows in {out}")


if __name__ == "__main__":
    main()

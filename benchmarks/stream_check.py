"""The streaming student against the in-memory one, on the same teacher labels, seed for seed.

    python benchmarks/stream_check.py --workspace WS --teacher NAME [--seeds 3] [--pairs N] [--json OUT]
    python benchmarks/stream_check.py --workspace demo-ws --teacher demo     # after make demo: 9,378 pairs, a minute

For every seed, two students with relkit's defaults on the same N teacher-labeled train pairs (all
of them by default; the same random N for both) and people's train labels:

- `stream`: relkit's (`Distiller.train`): the pairs' parts in a file on disk, each batch assembled
  when it is trained on, the standardisation from one float64 pass;
- `memory`: the same rows as one float32 array of every pair's model input in memory
  (`TrainingSet`), as relkit trained before it streamed.

Printed per seed and as means over the seeds: test AUROC@2, QWK, nDCG@10, the best epoch and the
training seconds, then the mean differences (stream - memory) against the targets: AUROC@2 within
.005 and QWK within .01. --json OUT writes the rows and the means.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from relkit import Workspace  # noqa: E402
from relkit.labels import teacher_labels  # noqa: E402
from relkit.student.distill import Distiller, inputs  # noqa: E402
from relkit.student.features import DEFAULT_GROUPS, FeatureConfig  # noqa: E402
from relkit.student.model import StudentConfig, TrainingSet, fit_student  # noqa: E402
from relkit.student.stream import sharpen  # noqa: E402

METRICS = ("auroc@2", "qwk", "ndcg@10")
TARGETS = {"auroc@2": 0.005, "qwk": 0.01}


class InMemory:
    """The students of the rows `distiller.train(n, config)` trains on, assembled in memory: every
    labeled pair's model input is built once, and each seed takes its rows from it."""

    def __init__(self, distiller: Distiller, labels):
        self.distiller, self.labels = distiller, labels
        self.teacher_x = inputs(distiller.builder, labels.queries, labels.item_ids)
        self.human_x = inputs(distiller.builder, distiller.human.queries, distiller.human.item_ids)

    def train(self, n: int, config: StudentConfig):
        distiller, labels, human = self.distiller, self.labels, self.distiller.human
        order = np.random.default_rng(config.seed).permutation(len(labels.targets))[:n]
        x = np.concatenate([self.teacher_x[order], self.human_x])
        targets = np.concatenate([sharpen(labels.targets[order], config.label_temperature), human.targets])
        weights = np.concatenate([np.ones(n), np.full(len(human.targets), config.human_weight)]).astype(np.float32)
        return fit_student(TrainingSet(x, targets, weights), distiller.dev, distiller.ws.scale, distiller.builder,
                           config, teacher=distiller.teacher,
                           data={"teacher_pairs": n, "human_pairs": len(human.targets)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", required=True, type=Path)
    parser.add_argument("--teacher", required=True, help="the teacher whose labels both students learn from")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=0, help="teacher-labeled pairs (default: all)")
    parser.add_argument("--features", default="", help="the student's feature groups, comma-separated (default: "
                                                       "relkit's)")
    parser.add_argument("--set", action="append", default=[], help="a student setting KEY=VALUE (both students)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from relkit.config import parse_sets

    rows = []
    with Workspace.open(args.workspace) as ws:
        groups = tuple(args.features.split(",")) if args.features else DEFAULT_GROUPS
        distiller = Distiller(ws, args.teacher, FeatureConfig(groups=groups))
        labels = teacher_labels(ws, distiller.teacher)
        if len(labels.targets) != distiller.available:
            raise SystemExit(f"{distiller.available:,} streamed rows but {len(labels.targets):,} labels in memory: "
                             "one labeling run must have written the shards")
        n = args.pairs or distiller.available
        print(f"{n:,} teacher-labeled pairs ({distiller.teacher}), {distiller.human_pairs:,} human ones; "
              f"{args.seeds} seeds", flush=True)
        memory = InMemory(distiller, labels)
        print(f"{'seed':>4} {'path':<7} " + " ".join(f"{m:>8}" for m in METRICS) + "  best epoch  seconds", flush=True)
        for seed in range(args.seeds):
            config = StudentConfig(**{**parse_sets(args.set, StudentConfig), "seed": seed})
            for path in ("stream", "memory"):
                student = (distiller.train(n, config) if path == "stream" else memory.train(n, config))
                seconds = student.meta.data["seconds"]      # training alone
                test = student.meta.metrics.get("test") or distiller.test(student)
                rows.append({"seed": seed, "path": path, **{m: test[m] for m in METRICS},
                             "best_epoch": student.meta.metrics["best_epoch"], "seconds": round(seconds, 1)})
                r = rows[-1]
                print(f"{seed:>4} {path:<7} " + " ".join(f"{r[m]:>8.4f}" for m in METRICS)
                      + f"  {r['best_epoch']:>10}  {seconds:>7.1f}", flush=True)
        distiller.close()
    means = {path: {m: float(np.mean([r[m] for r in rows if r["path"] == path])) for m in METRICS}
             for path in ("stream", "memory")}
    for path, figures in means.items():
        print(f"{'mean':>4} {path:<7} " + " ".join(f"{figures[m]:>8.4f}" for m in METRICS), flush=True)
    checks = {}
    for metric, limit in TARGETS.items():
        diff = means["stream"][metric] - means["memory"][metric]
        checks[metric] = {"difference": diff, "limit": limit, "met": abs(diff) <= limit}
        print(f"{metric}: stream - memory {diff:+.4f} (target within {limit}): "
              f"{'met' if abs(diff) <= limit else 'NOT met'}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"teacher": args.teacher, "pairs": n, "rows": rows, "means": means,
                                         "checks": checks}, indent=2))


if __name__ == "__main__":
    main()

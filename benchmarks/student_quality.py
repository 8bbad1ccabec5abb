"""Student quality: distill a trained teacher into students on growing numbers of its labels and
compare them with the teacher, bm25 and embedding on the test split's human labels.

    python benchmarks/student_quality.py --workspace /tmp/bench-ws/homedepot --teacher hd-prior \
        --sizes 10000,30000,all [--k 10] [--set epochs=40] [--seeds 5]

The workspace must have a split and the named teacher (see benchmarks/teacher_quality.py). If it
has no candidate pairs yet, `relkit pairs --k K` makes them; pairs the teacher has not labeled
are labeled first (`relkit label`). Prints the scaling curve (students on human labels only and on
each number of teacher-labeled pairs plus the human ones), then the test table of the teacher,
the largest student, bm25 and embedding, with the student's share of the teacher's nDCG@10 gain
over random order (the mean of 20 random orders) and its share of the teacher's accuracy. With
`--seeds N`, the largest student and the human-only one are also trained with N seeds and each
seed's test nDCG@10 is printed, with how many seeds rank above bm25 and embedding.
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from relkit import Workspace, evaluate, load_judged_pairs, make_system  # noqa: E402
from relkit.config import parse_sets  # noqa: E402
from relkit.metrics import ndcg_per_query  # noqa: E402
from relkit.student.distill import Distiller, parse_sizes, scaling_curve  # noqa: E402
from relkit.student.model import StudentConfig  # noqa: E402


def random_ndcg(ws: Workspace, seeds: int = 20) -> float:
    """Mean over `seeds` random orders of the per-query mean nDCG@10 on the test split."""
    pairs = load_judged_pairs(ws, "test")
    rng = np.random.default_rng(0)
    runs = []
    for _ in range(seeds):
        per_query = ndcg_per_query(pairs.query_ids, pairs.item_ids, pairs.labels, rng.random(len(pairs)),
                                   ws.scale.gains, cutoffs=(10,))[10]
        runs.append(np.mean(list(per_query.values())))
    return float(np.mean(runs))


def seed_table(distiller: Distiller, config: StudentConfig, seeds: int, size: int | None,
               references: dict[str, float]) -> None:
    """Test nDCG@10 of the largest student and of the human-only one over `seeds` seeds (the seed sets
    the initialisation, the batches and which teacher-labeled pairs a size takes): a margin smaller
    than the spread between seeds says little."""
    print(f"\nseeds 0..{seeds - 1} (test nDCG@10 and accuracy; dev nDCG@10 in brackets)")
    human_only = replace(config, human_weight=max(config.human_weight, 1e-9))   # as in the scaling curve
    for name, n, base in (("teacher + human", size, config), ("human labels only", 0, human_only)):
        scores = []
        for seed in range(seeds):
            student = distiller.train(n, replace(base, seed=seed))
            metrics = distiller.test(student)
            scores.append(metrics["ndcg@10"])
            print(f"  {name:<18} seed {seed}: {metrics['ndcg@10']:.4f}  acc {metrics['accuracy']:.4f}  "
                  f"[{student.meta.metrics['dev']['ndcg@10']:.4f}]", flush=True)
        above = ", ".join(f"above {ref} in {sum(x > v for x in scores)} of {seeds}" for ref, v in references.items()
                          if ref in ("bm25", "embedding"))
        print(f"  {name:<18} mean {np.mean(scores):.4f}, sd {np.std(scores):.4f}, min {min(scores):.4f}, "
              f"max {max(scores):.4f}; {above}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--sizes", default="all")
    parser.add_argument("--k", type=int, default=10, help="candidates per train query and source, if none exist")
    parser.add_argument("--prefix", default=None, help="students are saved as student-PREFIX-<size>")
    parser.add_argument("--set", action="append", default=[], help="student setting KEY=VALUE")
    parser.add_argument("--seeds", type=int, default=1,
                        help="with N > 1, also train the largest student and the human-only one with seeds "
                             "0..N-1 and print each seed's test nDCG@10 with the mean and spread")
    args = parser.parse_args()
    config = StudentConfig(**parse_sets(args.set, StudentConfig))
    prefix = args.prefix or f"{args.teacher}-bench"

    with Workspace.open(args.workspace) as ws:
        if ws.count("pairs") == 0:
            from relkit.candidates import make_pairs

            print(make_pairs(ws, k=args.k).summary(), flush=True)
        from relkit.labeling import label_pairs

        print(label_pairs(ws, args.teacher).summary(), flush=True)
        started = time.perf_counter()
        distiller = Distiller(ws, args.teacher)
        print(f"features of {distiller.available:,} teacher-labeled and {distiller.human_pairs:,} human train "
              f"pairs, {len(distiller.dev.x):,} dev pairs: {time.perf_counter() - started:.0f} s", flush=True)
        rows = list(scaling_curve(distiller, parse_sizes(args.sizes), config, prefix))
        print(f"\nscaling curve ({ws.path.name}, test split, {len(distiller.test_pairs):,} pairs)")
        print(f"{'trained on':<24}{'teacher':>9}{'human':>8}{'accuracy':>10}{'qwk':>8}{'ndcg@10':>9}{'dev ndcg':>10}"
              f"{'seconds':>9}")
        for r in rows:
            name = "human labels only" if r.name == "human" else f"teacher {r.name} + human"
            print(f"{name:<24}{r.teacher_pairs:>9,}{r.human_pairs:>8,}{r.metrics['accuracy']:>10.4f}"
                  f"{r.metrics['qwk']:>8.4f}{r.metrics['ndcg@10']:>9.4f}{r.dev['ndcg@10']:>10.4f}{r.seconds:>9.1f}")

        best = rows[-1]
        systems = [make_system(f"teacher:{args.teacher}", ws), make_system(f"student:{prefix}-{best.name}", ws),
                   make_system("bm25", ws), make_system("embedding", ws)]
        report = evaluate(ws, systems, "test")
        print()
        print(report.headline())
        results = report.results
        width = max(len(r.name) for r in results) + 2
        print(f"{'metric':<14}" + "".join(f"{r.name:>{width}}" for r in results))
        for m in results[0].metrics:
            cells = [r.metrics.get(m) for r in results]
            print(f"{m:<14}" + "".join(f"{'-' if v is None else f'{v:.4f}':>{width}}" for v in cells))
        print(f"{'seconds':<14}" + "".join(f"{r.seconds:>{width}.1f}" for r in results))
        print(f"{'ndcg@10 - teacher, per query [95% paired bootstrap]':<14}")
        for r in results[1:]:
            print(f"  {r.name:<{width}} {r.vs_first:+.4f}")
        if args.seeds > 1:
            seed_table(distiller, config, args.seeds, parse_sizes(args.sizes)[-1],
                       {r.name: r.metrics["ndcg@10"] for r in results})
        teacher, student = results[0].metrics, results[1].metrics
        rand = random_ndcg(ws)
        kept = (student["ndcg@10"] - rand) / (teacher["ndcg@10"] - rand)
        print(f"\nrandom order nDCG@10 {rand:.4f}; student keeps {kept:.1%} of the teacher's gain over random "
              f"(target >= 90%) and {student['accuracy'] / teacher['accuracy']:.1%} of its accuracy (target >= 95%); "
              f"above bm25: {student['ndcg@10'] > results[2].metrics['ndcg@10']}, above embedding: "
              f"{student['ndcg@10'] > results[3].metrics['ndcg@10']}")


if __name__ == "__main__":
    main()

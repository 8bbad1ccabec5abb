"""How much of the teacher's gain over the bi-encoder a student keeps, and what it takes.

    python benchmarks/distill_gain.py --workspace /tmp/bench/crowdflower --teacher cf --k 30 --min-queries 500 \
        [--backend onnx] [--temperature 1,0.5] [--human-weight 1,0.3] [--seeds 3] \
        [--variant 'NAME:select=log_loss;hidden=128,32']

The workspace must have a split and the named teacher (see benchmarks/teacher_quality.py). With
--k, `relkit pairs` runs first: the train split is topped up to --min-queries queries nobody judged
(0: none added) and every train query gets the catalog's top --k candidates by BM25 and by the
bi-encoder (added to what is there); the teacher labels what it has not labeled yet. Then the teacher,
the bi-encoder (embedding), bm25 and a student on human labels alone are scored on the test split,
and one student is trained per (label temperature, human weight) with each seed. Printed per
student: AUROC at every threshold and the share of the teacher's AUROC gain over the bi-encoder it
keeps ((student - embedding) / (teacher - embedding); target >= 80% at >= 2), QWK under its
cutpoints and under the argmax with the share of the teacher's QWK (target >= 90%), nDCG@10, and the
teacher-labeled and human pairs behind it. Means over seeds.
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from relkit import Workspace, evaluate, make_system  # noqa: E402
from relkit.config import parse_sets  # noqa: E402
from relkit.student.distill import Distiller  # noqa: E402
from relkit.student.model import StudentConfig  # noqa: E402


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def kept(student: float | None, teacher: float | None, base: float | None) -> float:
    """The share of the teacher's gain over `base` that the student keeps."""
    if None in (student, teacher, base) or teacher == base:
        return float("nan")
    return (student - base) / (teacher - base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--k", type=int, default=0, help="candidates per train query and source to add (0: none)")
    parser.add_argument("--min-queries", type=int, default=0, help="with --k: top the train split up to this many "
                                                                   "queries first (relkit pairs --min-queries)")
    parser.add_argument("--backend", default="torch", help="the teacher's labeling backend (relkit label --backend)")
    parser.add_argument("--temperature", type=floats, default=[1.0], help="label temperatures, comma-separated")
    parser.add_argument("--human-weight", type=floats, default=[StudentConfig.human_weight],
                        help="human label weights, comma-separated (default: the student's)")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], help="other student setting KEY=VALUE")
    parser.add_argument("--variant", action="append", default=[],
                        help="also train NAME:KEY=VALUE;KEY=VALUE (student settings over --set), repeatable")
    args = parser.parse_args()
    base = StudentConfig(**parse_sets(args.set, StudentConfig))

    with Workspace.open(args.workspace) as ws:
        started = time.perf_counter()
        if args.k:
            from relkit.candidates import make_pairs

            print(make_pairs(ws, k=args.k, min_queries=args.min_queries).summary(), flush=True)
        from relkit.labeling import label_pairs

        print(label_pairs(ws, args.teacher, backend=args.backend).summary(), f"({time.perf_counter() - started:.0f} s)", flush=True)
        report = evaluate(ws, [make_system(f"teacher:{args.teacher}", ws), make_system("embedding", ws),
                               make_system("bm25", ws)], "test")
        teacher, embedding, bm25 = (r.metrics for r in report.results)
        k = ws.scale.k
        aurocs = [f"auroc@{t}" for t in range(2, k + 1)]
        distiller = Distiller(ws, args.teacher)
        print(f"{report.headline()}\n{distiller.available:,} teacher-labeled train pairs of "
              f"{distiller.teacher_queries:,} queries, {distiller.human_pairs:,} human ones of "
              f"{len(set(distiller.human.queries)):,}", flush=True)

        header = (f"{'system':<30}{'teacher':>8}{'human':>7}" + "".join(f"{a:>10}" for a in aurocs)
                  + f"{'kept@2':>8}{'kept@all':>9}{'qwk':>8}{'qwk/T':>7}{'argmax':>8}{'ndcg@10':>9}")
        print("\n" + header)

        def line(name: str, m: dict, n_teacher: str = "", n_human: str = "") -> None:
            shares = [kept(m[a], teacher[a], embedding[a]) for a in aurocs]
            qwk = m.get("qwk")
            print(f"{name:<30}{n_teacher:>8}{n_human:>7}"
                  + "".join(f"{'-':>10}" if m[a] is None else f"{m[a]:>10.4f}" for a in aurocs)
                  + f"{shares[0]:>8.1%}{np.nanmean(shares):>9.1%}"
                  + (f"{qwk:>8.4f}{qwk / teacher['qwk']:>7.1%}" if qwk is not None else f"{'-':>8}{'-':>7}")
                  + (f"{m['argmax_qwk']:>8.4f}" if m.get("argmax_qwk") is not None else f"{'-':>8}")
                  + f"{m['ndcg@10']:>9.4f}", flush=True)

        line(f"teacher:{args.teacher}", teacher)
        line("embedding", embedding)
        line("bm25", bm25)

        def average(runs: list[dict]) -> dict:
            return {key: (None if any(r[key] is None for r in runs) else float(np.mean([r[key] for r in runs])))
                    for key in runs[0]}

        plan = [("human labels only", 0, replace(base, human_weight=1.0), True)]
        for t in args.temperature:
            for w in args.human_weight:
                plan.append((f"T={t:g} human weight {w:g}", None, replace(base, label_temperature=t, human_weight=w),
                             w > 0))
        for variant in args.variant:
            name, _, sets = variant.partition(":")
            config = replace(base, **parse_sets([s for s in sets.split(";") if s.strip()], StudentConfig))
            plan.append((name, None, config, config.human_weight > 0))
        for name, n, config, human in plan:
            runs, student = [], None
            for seed in range(args.seeds):
                student = distiller.train(n, replace(config, seed=seed), human=human)
                runs.append(student.meta.metrics["test"])
            data = student.meta.data
            line(name, average(runs), f"{data['teacher_pairs']:,}", f"{data['human_pairs']:,}")
        print(f"\n{time.perf_counter() - started:.0f} s; kept@2: share of the teacher's AUROC@2 gain over the "
              f"bi-encoder (target >= 80%); qwk/T: share of the teacher's QWK (target >= 90%)")


if __name__ == "__main__":
    main()

"""How well an LLM judge agrees with people: the judge, the trained teacher and the bi-encoder on
the same judged test pairs, side by side, plus the judge's pairs per second.

    python benchmarks/judge_agreement.py --workspace /tmp/ws/crowdflower --teacher cf [--queries 20]
    python benchmarks/judge_agreement.py --workspace WS --teacher T --endpoint http://host:8000/v1 --model M

Without --endpoint the judge is SmolLM2-135M-Instruct, read locally (next-token logits of the
level tokens); with it, any OpenAI-compatible server and model (the key from $OPENAI_API_KEY, or
--key-env). --queries N judges the pairs of the first N test queries (by a fixed random order)
when the whole split is too slow here; the output says so. Labels are cached in the workspace:
running again costs nothing. Agreement: exact (accuracy), within one level, QWK, linearly weighted
kappa, AUROC at each threshold and nDCG@10 over the same queries.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from relkit.evaluate import (JudgedPairs, Prediction, SystemPrediction, compare, load_judged_pairs,  # noqa: E402
                             predict_all)
from relkit.judge import JudgeSpec, create_judge  # noqa: E402
from relkit.systems import make_system  # noqa: E402
from relkit.workspace import Workspace  # noqa: E402


def subset(pairs: JudgedPairs, n_queries: int, seed: int = 0) -> JudgedPairs:
    queries = sorted(set(pairs.query_ids))
    if not n_queries or n_queries >= len(queries):
        return pairs
    keep = set(np.random.default_rng(seed).permutation(queries)[:n_queries].tolist())
    rows = [i for i, q in enumerate(pairs.query_ids) if q in keep]
    return JudgedPairs(pairs.split, [pairs.query_ids[i] for i in rows], [pairs.queries[i] for i in rows],
                       [pairs.items[i] for i in rows], pairs.labels[rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--teacher", required=True, help="the trained teacher to compare with")
    parser.add_argument("--split", default="test")
    parser.add_argument("--queries", type=int, default=0, help="judge only this many queries' pairs (0: all)")
    parser.add_argument("--endpoint", help="an OpenAI-compatible base URL (default: local SmolLM2)")
    parser.add_argument("--model", default="smollm2", help="the endpoint's model, or a local model")
    parser.add_argument("--key-env", default="OPENAI_API_KEY")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--shots", type=int, default=0)
    parser.add_argument("--fields", default="title,description:60", help="item text fields (as relkit teach)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--name", help="the judge's name (default from the model)")
    args = parser.parse_args()
    console = Console(width=130)
    with Workspace.open(args.workspace) as ws:
        pairs = load_judged_pairs(ws, args.split)
        total_queries = len(set(pairs.query_ids))
        pairs = subset(pairs, args.queries)
        n_queries = len(set(pairs.query_ids))
        name = args.name or (("endpoint-" if args.endpoint else "") + "".join(c if c.isalnum() else "-" for c in args.model)
                             + f"-s{args.shots}")
        spec = JudgeSpec(name=name, model=args.model, backend="endpoint" if args.endpoint else "local",
                         endpoint=args.endpoint, key_env=args.key_env, concurrency=args.concurrency,
                         batch_size=args.batch_size, fields=args.fields, shots=args.shots)
        judge = create_judge(ws, spec)
        start = time.perf_counter()
        run = judge.run(ws, list(zip(pairs.query_ids, pairs.item_ids)))
        proba = judge.labels(ws, list(zip(pairs.query_ids, pairs.item_ids)))
        unparsed = np.isnan(proba).any(axis=1)
        proba[unparsed] = 1.0 / proba.shape[1]
        judged = SystemPrediction(judge.name, Prediction(proba=proba), time.perf_counter() - start)
        others = predict_all(pairs, [make_system(f"teacher:{args.teacher}", ws), make_system("embedding", ws)])
        report = compare(pairs, [judged, *others], ws.scale)
        scope = (f"{n_queries} of {total_queries} {args.split} queries (a fixed random subset: the whole split is "
                 f"too slow for this judge here)" if n_queries < total_queries else f"all {n_queries} {args.split} queries")
        console.print(f"[bold]{args.workspace.name}[/]: {len(pairs):,} judged pairs of {scope}; "
                      f"{ws.scale.k} levels", highlight=False)
        table = Table()
        table.add_column("metric")
        for r in report.results:
            table.add_column(r.name, justify="right")
        rows = ["accuracy", "within_one", "qwk", "linear_kappa", *[f"auroc@{t}" for t in range(2, ws.scale.k + 1)],
                "ndcg@10"]
        for metric in rows:
            table.add_row(metric, *("-" if r.metrics.get(metric) is None else f"{r.metrics[metric]:.4f}"
                                    for r in report.results))
        table.add_row("pairs/s", *(f"{len(pairs) / max(r.seconds, 1e-9):,.1f}" for r in report.results), style="dim")
        console.print(table)
        rate = run.judged / run.seconds if run.judged and run.seconds else float("nan")
        console.print(f"judge: {run.judged:,} pairs judged now ({rate:.2f} pairs/s while judging), {run.held + run.reused:,} "
                      f"from the cache; {int(unparsed.sum()):,} answers named no level (scored uniform); "
                      f"{run.prompt_tokens:,} prompt tokens", highlight=False)


if __name__ == "__main__":
    main()

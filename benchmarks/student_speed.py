"""Student speed on one core: the time to score 1,000 candidates of one query with the fast
numpy scorer, the torch student and the teacher, measured in one run on the same queries and
candidates.

    python benchmarks/student_speed.py --workspace /tmp/bench-ws/homedepot --student hd-bench-all \
        --teacher hd-prior [--candidates 1000] [--queries 200] [--teacher-queries 3]

Each query of the test split (the first N) gets `--candidates` random catalog items. Every path
starts from the query's text and the candidates' ids and ends with level probabilities:

- fast scorer: the student's numpy path (relkit/student/fast.py): pair features, the split first
  layer, the upper layers; the query's embedding is computed beforehand (a service caches it),
  and its cost is measured separately ("query embedding");
- torch student: the same features assembled into the full input matrix and the torch MLP;
- teacher: the cross-encoder over (query, item text), as `relkit label` runs it.

Prints p50 and p99 milliseconds per query and candidates/s, and each path's ratio to the teacher.
One core: the thread pools of numpy, torch and the tokenizer are pinned to 1 before they load.
"""
from __future__ import annotations

import argparse
import os
import time

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import numpy as np  # noqa: E402
import torch  # noqa: E402

from relkit import Workspace, load_judged_pairs  # noqa: E402
from relkit.student import FastScorer, FeatureBuilder, Student  # noqa: E402
from relkit.student.features import PairFeatures  # noqa: E402
from relkit.student.model import assemble, torch_student  # noqa: E402
from relkit.student.system import StudentSystem  # noqa: E402
from relkit.teacher.model import Teacher  # noqa: E402
from relkit.teacher.system import TeacherSystem  # noqa: E402
from relkit.workspace import ITEM_RECORD_COLUMNS  # noqa: E402


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.asarray(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--student", required=True)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--teacher-queries", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    with Workspace.open(args.workspace, read_only=True) as ws:
        student = Student.load(StudentSystem.from_workspace(ws, args.student).path)
        builder = FeatureBuilder.from_workspace(ws, student.feature_config())
        teacher = Teacher.load(TeacherSystem.from_workspace(ws, args.teacher).path)
        test = load_judged_pairs(ws, "test")
        cols = ", ".join(ITEM_RECORD_COLUMNS)
        item_records = {row[0]: dict(zip(ITEM_RECORD_COLUMNS, row))
                        for row in ws.fetchall(f"SELECT {cols} FROM item_records")}
    queries = list(dict.fromkeys(test.queries))[:args.queries]
    rng = np.random.default_rng(0)
    n_items = len(builder.items.item_ids)
    candidates = [rng.choice(n_items, size=min(args.candidates, n_items), replace=False) for _ in queries]
    n = len(candidates[0])
    print(f"{len(queries)} test queries x {n:,} random candidates from a catalog of {n_items:,} items; one core")

    if builder.dim and teacher.meta.prior:
        # the teacher's prior reads item vectors; give it the catalog's (as `relkit label` does from the
        # workspace cache), so that the teacher is timed on its cross-encoder, not on encoding items
        by_text = dict(zip(builder.items.texts, builder.items.vectors))
        teacher.text_vectors = lambda texts: np.stack([by_text[t] if t in by_text else builder.query_vectors([t])[0]
                                                       for t in texts])
    scorer = FastScorer(student, builder)
    query_vectors = builder.query_vectors(queries)
    encode_times = []
    for q in queries[:50]:
        start = time.perf_counter()
        builder.query_vectors([q])
        encode_times.append(time.perf_counter() - start)

    def run_fast():
        times = []
        for q, qv, rows in zip(queries, query_vectors, candidates):
            start = time.perf_counter()
            scorer.score_rows(q, rows, qv)
            times.append(time.perf_counter() - start)
        return times

    net, mean, std = torch_student(student)

    def run_torch():
        times = []
        with torch.inference_mode():
            for q, qv, rows in zip(queries, query_vectors, candidates):
                start = time.perf_counter()
                pair = builder.pair_scalars(q, qv, rows)
                features = PairFeatures(qv[None, :], np.zeros(len(rows), dtype=np.int64), rows, pair)
                x = torch.from_numpy(assemble(features, builder.items.vectors, builder.items.extra))
                torch.softmax(net((x - mean) / std), dim=-1).numpy()
                times.append(time.perf_counter() - start)
        return times

    def run_teacher():
        times = []
        for q, rows in zip(queries[:args.teacher_queries], candidates):
            pairs = [(q, item_records[builder.items.item_ids[r]]) for r in rows]
            start = time.perf_counter()
            teacher.predict_proba(pairs)
            times.append(time.perf_counter() - start)
        return times

    run_fast()  # warm-up
    results = {"fast scorer (numpy)": run_fast(), "torch student": run_torch(), "teacher": run_teacher()}
    agree_q, agree_rows = queries[0], candidates[0]
    fast_p = scorer.score_rows(agree_q, agree_rows, query_vectors[0])
    with torch.inference_mode():
        pair = builder.pair_scalars(agree_q, query_vectors[0], agree_rows)
        x = torch.from_numpy(assemble(PairFeatures(query_vectors[0][None, :], np.zeros(n, dtype=np.int64), agree_rows,
                                                   pair), builder.items.vectors, builder.items.extra))
        torch_p = torch.softmax(net((x - mean) / std), dim=-1).numpy()
    teacher_rate = n / np.median(results["teacher"])
    print(f"{'path':<22}{'p50 ms':>10}{'p99 ms':>10}{'cand/s':>12}{'x teacher':>11}")
    for name, times in results.items():
        p50, p99 = percentiles(times)
        rate = n / np.median(times)
        print(f"{name:<22}{p50:10.2f}{p99:10.2f}{rate:12,.0f}{rate / teacher_rate:11,.0f}")
    e50, e99 = percentiles(encode_times)
    print(f"{'query embedding':<22}{e50:10.2f}{e99:10.2f}   (once per query, before the fast scorer; cacheable)")
    print(f"fast vs torch student: max |difference| of probabilities {np.abs(fast_p - torch_p).max():.2e}")


if __name__ == "__main__":
    main()

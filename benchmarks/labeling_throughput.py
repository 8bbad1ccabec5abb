"""Labeling throughput: the same trained teacher and the same pairs, scored by
sentence-transformers' `CrossEncoder.predict` (the baseline), relkit's torch path, and relkit on
ONNX Runtime (fp32 and dynamic int8), in one run.

    python benchmarks/labeling_throughput.py --teacher /tmp/bench-ws/homedepot/artifacts/teacher-minilm-q \
        --workspace /tmp/bench-ws/homedepot [--pairs 2000]

Pairs are the first N judged pairs of the workspace's test split (query and item text as the
teacher reads them); each path's time is the best of `--repeats` runs (3). Prints pairs/s of each
path, its ratio to CrossEncoder.predict, the level agreement (argmax) with the torch path, and the
achieved GFLOP/s against this machine's measured fp32 matmul peak; then ONNX Runtime's fp32 and
int8 matmul rates at the teacher's feed-forward shape (int8 pays off only where the second is the
higher: CPUs with VNNI or AMX). relkit's paths score each distinct (query, text) once, sort by
length and, for BERT-style teachers, compute the last layer for the first token only
(relkit/teacher/fast.py); the teacher must have no bi-encoder prior (CrossEncoder cannot add one).
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from relkit import Workspace, load_judged_pairs  # noqa: E402
from relkit.teacher.model import Teacher  # noqa: E402


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """fp32 GFLOP/s of torch's matmul on all threads: the best of `repeats` runs."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / (time.perf_counter() - start) / 1e9)
    return best


def ort_matmul_rates(rows: int, inner: int, outer: int, repeats: int = 20) -> tuple[float, float]:
    """(fp32, int8) multiply-add rates of ONNX Runtime on this machine, in G(FL)OP/s, for one matmul
    of the teacher's feed-forward shape: MatMul on floats and MatMulInteger on uint8 x int8 (the
    kernel of dynamic int8). Dynamic int8 can only be faster where the second rate is above the
    first (CPUs with VNNI or AMX); without, its extra quantize steps make it as fast or slower."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    rates = []
    for op, x_type, y_type, x, w in (
            ("MatMul", TensorProto.FLOAT, TensorProto.FLOAT, rng.standard_normal((rows, inner), dtype=np.float32),
             rng.standard_normal((inner, outer), dtype=np.float32)),
            ("MatMulInteger", TensorProto.UINT8, TensorProto.INT32, rng.integers(0, 255, (rows, inner), dtype=np.uint8),
             rng.integers(-127, 127, (inner, outer), dtype=np.int8))):
        graph = helper.make_graph([helper.make_node(op, ["x", "w"], ["y"])], op,
                                  [helper.make_tensor_value_info("x", x_type, [None, inner])],
                                  [helper.make_tensor_value_info("y", y_type, None)],
                                  [numpy_helper.from_array(w, "w")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        session.run(None, {"x": x})
        _, seconds = timed(lambda: session.run(None, {"x": x}), repeats)
        rates.append(2 * rows * inner * outer / seconds / 1e9)
    return rates[0], rates[1]


def flops_per_pair(config, tokens: int, first_token_last_layer: bool = False) -> float:
    """Forward FLOPs of a BERT-style encoder on one sequence: the dense layers plus attention. With
    `first_token_last_layer`, the last layer computes keys and values for every token and the rest
    for the first token only (relkit's scoring forward, teacher/fast.py)."""
    d, layers, ff = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    per_token = 2 * (4 * d * d + 2 * d * ff)
    attention = 2 * 2 * tokens * tokens * d
    if not first_token_last_layer:
        return float(layers * (tokens * per_token + attention))
    last = tokens * 2 * 2 * d * d + (per_token - 2 * 2 * d * d) + 2 * 2 * tokens * d
    return float((layers - 1) * (tokens * per_token + attention) + last)


def timed(fn, repeats: int = 1):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32, help="for every path (CrossEncoder's default: 32)")
    parser.add_argument("--repeats", type=int, default=3, help="each path's time is the best of this many runs")
    args = parser.parse_args()

    teacher = Teacher.load(args.teacher)
    if teacher.meta.prior:
        raise SystemExit("this teacher adds a bi-encoder prior, which CrossEncoder cannot: train one with prior=none")
    with Workspace.open(args.workspace) as ws:
        judged = load_judged_pairs(ws, "test")
    n = min(args.pairs, len(judged))
    queries = judged.queries[:n]
    texts = [teacher.meta.template.item(item) for item in judged.items[:n]]
    pairs = list(zip(queries, texts))
    distinct = list(dict.fromkeys(pairs))
    threads = torch.get_num_threads()
    print(f"{n:,} pairs ({len(distinct):,} distinct) from the test split, max length {teacher.meta.max_length}, "
          f"{threads} threads")

    from sentence_transformers import CrossEncoder

    cross = CrossEncoder(args.teacher, max_length=teacher.meta.max_length, device="cpu")
    softmax = torch.nn.Softmax(dim=-1)
    cross.predict(pairs[:64], batch_size=args.batch_size, activation_fn=softmax)  # warm-up
    base, base_s = timed(lambda: cross.predict(pairs, batch_size=args.batch_size, activation_fn=softmax,
                                               show_progress_bar=False), args.repeats)
    base = np.asarray(base)

    def relkit_path(onnx: str | None):
        t = Teacher.load(args.teacher)
        if onnx:
            t.use_onnx(int8=onnx == "int8")
        t.predict_proba(distinct[:64], batch_size=args.batch_size)  # warm-up (and export)

        def run():
            proba = t.predict_proba(distinct, batch_size=args.batch_size)
            index = {p: i for i, p in enumerate(distinct)}
            return proba[[index[p] for p in pairs]]
        return timed(run, args.repeats)

    results = {"CrossEncoder.predict": (base, base_s)}
    results["relkit torch"] = relkit_path(None)
    results["relkit onnx fp32"] = relkit_path("fp32")
    results["relkit onnx int8"] = relkit_path("int8")

    tokens = [len(ids) for ids in teacher.tokenizer([q for q, _ in distinct], [t for _, t in distinct],
                                                    truncation="only_second", max_length=teacher.meta.max_length,
                                                    return_token_type_ids=False)["input_ids"]]
    from relkit.teacher.fast import FirstTokenClassifier

    first = FirstTokenClassifier.supports(teacher.model)
    work_all = sum(flops_per_pair(teacher.model.config, t) for t in tokens) * n / len(distinct)
    work = sum(flops_per_pair(teacher.model.config, t, first) for t in tokens)  # what relkit computes
    peak = matmul_peak()
    reference = results["relkit torch"][0].argmax(axis=1)
    config = teacher.model.config
    rows = args.batch_size * round(float(np.mean(tokens)))
    fp32_rate, int8_rate = ort_matmul_rates(rows, config.hidden_size, config.intermediate_size)
    print(f"fp32 matmul peak (torch, {threads} threads, 2048x2048): {peak:.1f} GFLOP/s")
    print(f"ONNX Runtime, one feed-forward matmul ({rows}x{config.hidden_size} by "
          f"{config.hidden_size}x{config.intermediate_size}): fp32 {fp32_rate:.1f} GFLOP/s, "
          f"int8 {int8_rate:.1f} GOP/s ({int8_rate / fp32_rate:.2f}x)")
    print(f"{'path':<22}{'seconds':>9}{'pairs/s':>10}{'x base':>8}{'agree':>8}{'GFLOP/s':>9}{'of peak':>9}")
    for name, (proba, seconds) in results.items():
        flops = work_all if name == "CrossEncoder.predict" else work
        agree = float((np.asarray(proba).argmax(axis=1) == reference).mean())
        print(f"{name:<22}{seconds:9.2f}{n / seconds:10.1f}{base_s / seconds:8.2f}{agree:8.4f}"
              f"{flops / seconds / 1e9:9.1f}{flops / seconds / 1e9 / peak:9.1%}")
    print("GFLOP/s counts the work on the real (unpadded) tokens each path had to do: the full model on every "
          "pair for CrossEncoder.predict; for relkit, each distinct pair once"
          + (", with the last layer for the first token only" if first else ""))


if __name__ == "__main__":
    main()

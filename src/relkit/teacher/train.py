"""Fine-tune a teacher on the judged pairs of the train split, choosing the best weights on dev.

Three parts: `prepare_run` reads the data once (pairs, item text, tokens, the prior);
`relkit.teacher.loss.TeacherLoss` is the loss; `train_teacher` is one loop on Hugging Face
Accelerate that reads top to bottom: for each optimizer step, a few micro-batches (gradient
accumulation), clip, step, schedule; now and then a dev evaluation (the best weights by `primary`
are saved as the teacher) and a resumable checkpoint. The same loop runs on one CPU, one GPU, or
several processes under `accelerate launch` (each trains on its share of every step's batches).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np

from relkit.config import from_dict
from relkit.errors import RelkitError
from relkit.evaluate import Prediction, metric_names, score_prediction
from relkit.features.text_match import IDF_NAME, DocumentFrequencies
from relkit.hf import resolve_device
from relkit.labels import JudgedPairs, judged_split, load_judged_pairs
from relkit.languages import stored_languages
from relkit.logs import main_process_only, progress
from relkit.metrics import apply_cutpoints, expected_level, fit_cutpoints
from relkit.scale import LabelScale
from relkit.teacher.model import (CHECKPOINT, META_FILE, TEMPLATES, Teacher, TeacherMeta, TextTemplate, collate,
                                  encode_pairs, family_of, load_tokenizer, predict_ids, replace_dir)
from relkit.teacher.config import TrainConfig  # noqa: F401  (re-exported: relkit.teacher.train.TrainConfig)
from relkit.teacher.prior import FEATURE_SETS, Prior
from relkit.text import DEFAULT_TEMPLATE, ItemTextTemplate, item_text, item_title
from relkit.workspace import Workspace

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    path: Path                 # the saved teacher (best dev weights)
    steps: int                 # optimizer steps done so far
    total_steps: int
    best_step: int
    dev_metrics: dict
    seconds: float
    history: list              # one dict per dev evaluation: step, dev_loss, and the metrics
    main_process: bool = True  # False in the other processes of `accelerate launch` (they keep no history)

    @property
    def finished(self) -> bool:
        return self.steps >= self.total_steps


# --- the base model -------------------------------------------------------------------------

def resolve_base(config: TrainConfig) -> tuple[str, str | None]:
    """(path or hub id, gguf file) for the configured base model."""
    from relkit.features.embeddings import resolve_model
    from relkit.hf import smollm2

    if config.model == "smollm2":
        return smollm2(config.gguf_file, "base")
    return resolve_model(config.model), config.gguf_file


def load_base(config: TrainConfig, num_labels: int, device: str):
    """The base model with a fresh K-way head, and its tokenizer; clear errors before any training."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    source, gguf = resolve_base(config)
    extra = {"gguf_file": gguf} if gguf else {}
    try:
        base_config = AutoConfig.from_pretrained(source, **extra)
    except (OSError, ValueError) as e:
        raise RelkitError(f"cannot load the model '{config.model}': not a local model folder, and the hub could "
                          f"not provide it (offline, or no such model): {e}") from None
    family = family_of(base_config)
    old = getattr(base_config, "num_labels", None)
    has_head = any(a.endswith("ForSequenceClassification") for a in (base_config.architectures or []))
    if has_head and old is not None and old != num_labels:
        raise RelkitError(f"the model '{config.model}' already has a classification head for {old} labels; the "
                          f"workspace scale has {num_labels} levels. Start from its base model instead.")
    tokenizer = load_tokenizer(source, family, **extra)
    kwargs = dict(extra, num_labels=num_labels)
    if config.quantize_4bit:
        if device != "cuda":
            raise RelkitError("quantize_4bit (qLoRA) needs a CUDA GPU")
        try:
            from transformers import BitsAndBytesConfig
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise RelkitError("quantize_4bit needs bitsandbytes: pip install bitsandbytes") from None
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=torch.bfloat16)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(source, **kwargs)
    except (OSError, ValueError, RuntimeError) as e:
        raise RelkitError(f"cannot build a {num_labels}-level classifier from '{config.model}': {e}") from None
    if gguf:
        # transformers dequantizes GGUF weights to float as it loads them; what remains marked as
        # quantized is only a flag, and it would stop save_pretrained
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    if family == "decoder":
        model.config.pad_token_id = tokenizer.pad_token_id
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if config.lora:
        from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

        if config.quantize_4bit:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
        # SEQ_CLS keeps the new head (classifier / score) trainable in full (peft's modules_to_save)
        lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=config.lora_r, lora_alpha=config.lora_alpha,
                          lora_dropout=config.lora_dropout, target_modules="all-linear")
        model = get_peft_model(model, lora)
    if not config.quantize_4bit:
        model = model.to(device)
    return model, tokenizer, family, source


# the names a sequence classifier's head goes by (BERT's `classifier`, RoBERTa's `classifier.out_proj`,
# Llama's `score`, T5's `classification_head.out_proj`): a parameter or layer with one in its path is the head's
HEAD_NAMES = ("classifier", "score", "classification_head")


def _head_parameters(model) -> set[int]:
    return {id(p) for n, p in model.named_parameters() if any(part in HEAD_NAMES for part in n.split("."))}


# --- data -----------------------------------------------------------------------------------

def check_train_data(train: JudgedPairs, k: int) -> None:
    present = set(np.unique(train.labels).tolist())
    missing = [level for level in range(1, k + 1) if level not in present]
    if missing:
        raise RelkitError(f"the train split has no judgment at level(s) {', '.join(map(str, missing))}; a "
                          f"teacher cannot learn a level it never sees (judge some, or use a smaller scale)")


def _titles(pairs: JudgedPairs) -> list[str]:
    return [item_title(item) for item in pairs.items]


def sample_queries(pairs: JudgedPairs, n: int, seed: int) -> JudgedPairs:
    """The pairs of `n` of the queries (a sample fixed by the seed); all of them when n is 0."""
    queries = sorted(set(pairs.query_ids))
    if not n or n >= len(queries):
        return pairs
    keep = set(np.random.default_rng(seed).choice(queries, size=n, replace=False).tolist())
    return pairs.take([i for i, q in enumerate(pairs.query_ids) if q in keep])


def epoch_batches(n: int, groups: np.ndarray | None, batch_size: int, seed: int) -> list[np.ndarray]:
    """The micro-batches of one epoch, a pure function of the seed: shuffled pairs, or, with
    `groups` (a query number per pair), shuffled whole queries packed up to `batch_size` pairs."""
    rng = np.random.default_rng(seed)
    if groups is None:
        order = rng.permutation(n)
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(int(g), []).append(i)
    batches, current = [], []
    for g in rng.permutation(sorted(members)):
        items = rng.permutation(members[int(g)]).tolist()
        for start in range(0, len(items), batch_size):  # a query larger than a batch is cut
            chunk = items[start:start + batch_size]
            if current and len(current) + len(chunk) > batch_size:
                batches.append(np.array(current))
                current = []
            current += chunk
    if current:
        batches.append(np.array(current))
    return batches


# --- preparing the run ----------------------------------------------------------------------

@dataclass(frozen=True)
class PreparedRun:
    """What the loop trains on, read from the workspace once: the train and dev pairs as token ids,
    the text template, and the prior (fitted on train) with its features of each pair."""

    scale: LabelScale
    train: JudgedPairs
    dev: JudgedPairs
    template: TextTemplate
    train_ids: list               # token ids of each train pair
    dev_ids: list
    query_numbers: np.ndarray     # a number per train pair, the same for the pairs of one query
    prior: Prior | None = None    # the starting prior; None for a plain cross-encoder
    train_x: np.ndarray | None = None   # (train pairs, prior features)
    dev_x: np.ndarray | None = None
    train_targets: np.ndarray | None = None   # (train pairs, K) soft labels (a judge's); None: the human levels

    def __post_init__(self) -> None:
        if not (len(self.train_ids) == len(self.train) == len(self.query_numbers)) or len(self.dev_ids) != len(self.dev):
            raise ValueError("one token sequence and one query number per pair")
        if (self.prior is None) != (self.train_x is None) or (self.train_x is None) != (self.dev_x is None):
            raise ValueError("the prior comes with its features of the train and dev pairs")


def check_run(ws: Workspace, config: TrainConfig) -> None:
    """The errors a run can meet in the workspace, raised before any model is loaded."""
    if config.primary not in metric_names(ws.scale):
        raise RelkitError(f"unknown primary metric '{config.primary}'; one of {', '.join(metric_names(ws.scale))}")
    if config.labels != "human":
        train, _ = judged_split(ws, config.labels, "train")
        judged_split(ws, config.labels, "dev")
        if config.prior != "none" and len(np.unique(train.labels)) < 2:
            raise RelkitError(f"{config.labels} puts every train pair at level {train.labels[0]} at most probable; the "
                              f"prior is fit on those levels and needs two: train with --set prior=none")
        return
    check_train_data(load_judged_pairs(ws, "train"), ws.scale.k)
    if not ws.fetchone("SELECT count(*) FROM judgments JOIN splits USING (query_id) WHERE split = 'dev'")[0]:
        raise RelkitError("the dev split has no judged pairs, and the teacher keeps the weights best on dev: "
                          "split with --dev above 0, or pin queries to dev")


def prepare_run(ws: Workspace, config: TrainConfig, tokenizer, family: str) -> PreparedRun:
    """Read the train and dev pairs, render their item text, tokenize them and fit the prior."""
    item_template = ItemTextTemplate.parse(config.fields) if config.fields else DEFAULT_TEMPLATE
    targets = None
    if config.labels == "human":
        train = load_judged_pairs(ws, "train")
        dev = load_judged_pairs(ws, "dev")
    else:   # the judge's labels stand for people's: soft targets to learn, its most probable level on dev
        train, targets = judged_split(ws, config.labels, "train")
        dev, _ = judged_split(ws, config.labels, "dev")
    dev = sample_queries(dev, config.dev_queries, config.seed)
    template = TextTemplate(item_text=item_template, query_prefix=TEMPLATES[family][0],
                            item_prefix=TEMPLATES[family][1])
    train_texts, dev_texts = train.item_texts(item_template), dev.item_texts(item_template)
    prior = train_x = dev_x = None
    if config.prior != "none":
        from relkit.features.embeddings import workspace_encoder, workspace_vectors
        from relkit.teacher.prior import features

        names = FEATURE_SETS[config.prior_features]
        encoder = workspace_encoder(ws, config.prior)   # the prior records the encoder it was fit on
        logger.info("prior (%s; bi-encoder '%s') of %s pairs", ", ".join(names), encoder,
                    f"{len(train) + len(dev):,}")
        item_vectors = workspace_vectors(ws, encoder)  # shared with labeling
        frequencies = catalog_frequencies(ws, item_template, config.tokenization) if IDF_NAME in names else None
        read = {"tokenization": config.tokenization, "frequencies": frequencies}
        train_x = features(names, encoder, train.queries, train_texts, _titles(train), item_vectors,
                           languages=stored_languages(train.items), **read)
        dev_x = features(names, encoder, dev.queries, dev_texts, _titles(dev), item_vectors,
                         languages=stored_languages(dev.items), **read)
        prior = Prior.fit(encoder, train_x, train.labels, ws.scale.k, names, config.tokenization, frequencies)
    return PreparedRun(
        scale=ws.scale, train=train, dev=dev, template=template,
        train_ids=encode_pairs(tokenizer, template, train.queries, train_texts, config.max_length),
        dev_ids=encode_pairs(tokenizer, template, dev.queries, dev_texts, config.max_length),
        query_numbers=np.unique(np.array(train.query_ids), return_inverse=True)[1],
        prior=prior, train_x=train_x, dev_x=dev_x, train_targets=targets)


def catalog_frequencies(ws: Workspace, template: ItemTextTemplate, tokenization: str) -> DocumentFrequencies:
    """The document frequencies of the workspace's item texts (every item, each in its stored language)
    for a prior's `idf_coverage`: the catalog's, read without a label."""
    records = list(ws.item_records().values())
    logger.info("document frequencies of %s item texts", f"{len(records):,}")
    return DocumentFrequencies.of([item_text(r, template) for r in records], stored_languages(records), tokenization)


# --- the model being trained, its evaluation and its checkpoint -----------------------------

def teacher_net(model, prior: Prior | None):
    """The transformer and the prior as one module, so that `accelerator.prepare` places, wraps
    and synchronises the prior's weights with the transformer's."""
    import torch

    class TeacherNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.prior_weight = self.prior_bias = None
            if prior is not None:
                self.prior_weight = torch.nn.Parameter(torch.tensor(prior.weight, dtype=torch.float32))
                self.prior_bias = torch.nn.Parameter(torch.tensor(prior.bias, dtype=torch.float32))

        def forward(self, batch, prior_x=None):
            logits = self.model(**batch).logits.float()
            if self.prior_weight is None:
                return logits
            with torch.autocast(logits.device.type, enabled=False):  # the prior stays in fp32
                return logits + prior_x.to(logits.device) @ self.prior_weight + self.prior_bias

        def prior(self) -> Prior | None:
            if self.prior_weight is None:
                return None
            return replace(prior, weight=self.prior_weight.detach().cpu().tolist(),
                           bias=self.prior_bias.detach().cpu().tolist())

    return TeacherNet()


def evaluate_dev(net, tokenizer, run: PreparedRun, decision: str) -> tuple[dict, list[float] | None]:
    """Dev metrics (and dev_loss) of the current weights, and the cutpoints fit on dev."""
    prior = net.prior()
    offsets = None if prior is None else prior.logits(run.dev_x)
    proba = predict_ids(net.model, tokenizer, run.dev_ids, batch_size=64, offsets=offsets)
    cuts = None
    if decision == "cutpoints":
        cuts = fit_cutpoints(expected_level(proba), run.dev.labels, run.scale.levels).tolist()
    levels = None if cuts is None else apply_cutpoints(expected_level(proba), cuts)
    metrics = score_prediction(run.dev, Prediction(proba=proba, levels=levels), run.scale)
    picked = proba[np.arange(len(run.dev)), run.dev.labels - 1]
    metrics["dev_loss"] = float(-np.mean(np.log(np.clip(picked, 1e-12, 1))))
    return metrics, cuts


def save_checkpoint(accelerator, state: dict, config: TrainConfig, path: Path) -> None:
    """Model, optimizer, schedule and every process's random state (`accelerator.save_state`), the
    loop's counters (trainer.pt) and the resolved config, replacing `path` whole."""
    import torch

    tmp = path.with_name(path.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        torch.save({**state, "processes": accelerator.num_processes}, tmp / "trainer.pt")
        (tmp / "config.json").write_text(json.dumps(asdict(config), indent=2))
        replace_dir(tmp, path)
    accelerator.wait_for_everyone()


def my_share(group: list, rank: int, processes: int) -> list:
    """This process's micro-batches of one optimizer step: every `processes`-th, from `rank`. Every
    process does the same number of backward passes (DDP's gradient all-reduce waits for each),
    so a short last group is evened out with batches from its start, as accelerate's even_batches."""
    count = math.ceil(len(group) / processes)
    return [group[(rank + processes * j) % len(group)] for j in range(count)]


def new_accelerator(precision: str, device: str):
    """An `Accelerator` for this run. Processes started by `accelerate launch` (or torchrun) join
    their group: over NCCL on GPUs, over gloo on CPUs. accelerate keeps its settings process-wide;
    outside such a group they are reset, so that one Python process can train a bf16 teacher, then
    an fp32 one."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if not torch.distributed.is_initialized():
        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(mixed_precision="bf16" if precision == "bf16" else "no", cpu=device == "cpu")


# --- the loop -------------------------------------------------------------------------------

def teacher_dir(ws: Workspace | Path, name: str) -> Path:
    if isinstance(ws, Workspace):
        return ws.artifact_dir("teacher", name)
    return Path(ws) / "artifacts" / f"teacher-{name}"


def train_teacher(ws: Workspace | str | os.PathLike, config: TrainConfig | None = None, resume: str | None = None,
                  stop_after: int | None = None) -> TrainResult:
    """Fine-tune a teacher on the train split; keep the weights best on dev by `config.primary`.

    `ws` is an open workspace, or its path: then it is opened only while the run is prepared (by
    each process of `accelerate launch` in turn, the first read-write, the others read-only).
    `resume` names a teacher whose checkpoint to continue (its saved config is used).
    `stop_after` ends this call after that many optimizer steps, leaving a checkpoint to resume.
    It logs its evaluations to `relkit.teacher.train` and draws a bar (see `relkit.logs`); under
    `accelerate launch` only the main process does.

        result = train_teacher(ws, TrainConfig(epochs=1))
        Teacher.load(result.path).predict_proba([("red chair", "Red oak chair")])
    """
    import torch
    from accelerate.utils import broadcast_object_list
    from transformers import get_linear_schedule_with_warmup

    from relkit.teacher.loss import TeacherLoss, class_weights

    started = time.perf_counter()
    root = ws.path if isinstance(ws, Workspace) else Path(ws)
    if resume is not None:
        ckpt = teacher_dir(root, resume) / CHECKPOINT
        if not (ckpt / "trainer.pt").is_file():
            raise RelkitError(f"no checkpoint to resume at {ckpt}")
        config = from_dict(TrainConfig, json.loads((ckpt / "config.json").read_text()), "training option")
    config = config or TrainConfig()
    accelerator = new_accelerator(config.precision, resolve_device(config.device))
    main = accelerator.is_main_process
    main_process_only(main)
    # every process trains under one name: the main process's, whose default holds the time
    base_name = Path(resolve_base(config)[0]).name or "model"
    config.name = broadcast_object_list([config.name or f"{base_name}-{datetime.now():%Y%m%d-%H%M%S}"])[0]
    name, out = config.name, teacher_dir(root, config.name)
    if resume is None and (out / META_FILE).exists():
        raise RelkitError(f"{out} exists; pick another --name, or --resume {name}")
    accelerator.wait_for_everyone()  # before the main process saves anything there

    # prepare: data, text, tokens and prior (the main process first, so that it fills the caches)
    with accelerator.main_process_first(), _opened(ws, read_only=not main) as opened:
        check_run(opened, config)
        torch.manual_seed(config.seed)
        model, tokenizer, family, _ = load_base(config, opened.scale.k, str(accelerator.device.type))
        if config.prior_fit == "after":
            head_linear(model, opened.scale.k)   # refused now, not after training
        run = prepare_run(opened, config, tokenizer, family)
    if isinstance(ws, Workspace):
        ws.release()  # everything is read: other commands can use the workspace while the teacher trains
    k, scale = run.scale.k, run.scale
    starting_prior = run.prior if config.prior_fit == "before" else None   # after: a plain cross-encoder trains
    net = teacher_net(model, starting_prior)
    train_x = None if starting_prior is None else torch.tensor(run.train_x, dtype=torch.float32)
    targets = (torch.tensor(run.train.labels - 1) if run.train_targets is None
               else torch.tensor(run.train_targets, dtype=torch.float32))   # soft labels: a distribution per pair
    group_of = torch.tensor(run.query_numbers)
    weights = class_weights(run.train.labels, k, config.class_weights)
    loss_fn = TeacherLoss(scale, weights, config.label_smoothing, config.ordinal_weight, config.listwise_weight,
                          num_labels=model.config.num_labels).to(accelerator.device)
    meta = TeacherMeta(base_model=config.model if not config.gguf_file else f"{config.model}:{config.gguf_file}",
                       family=family, scale=scale, template=run.template, max_length=config.max_length,
                       config=asdict(config), loss=loss_fn.config)

    # optimizer: the head and the prior may learn at their own rate
    head = _head_parameters(net)
    prior_params = [p for p in (net.prior_weight, net.prior_bias) if p is not None]
    params = [p for p in net.model.parameters() if p.requires_grad]
    param_groups = [{"params": [p for p in params if id(p) not in head], "lr": config.lr},
                    {"params": [p for p in params if id(p) in head] + prior_params, "lr": config.head_lr or config.lr}]
    optimizer = torch.optim.AdamW([g for g in param_groups if g["params"]], weight_decay=config.weight_decay)
    groups = run.query_numbers if config.listwise_weight else None
    per_step = config.grad_accum * accelerator.num_processes     # micro-batches of one optimizer step
    steps_per_epoch = math.ceil(len(epoch_batches(len(run.train_ids), groups, config.batch_size, config.seed))
                                / per_step)
    total_steps = max(1, round(steps_per_epoch * config.epochs))
    # the schedule counts optimizer steps; prepared, accelerate would advance it once per process
    scheduler = get_linear_schedule_with_warmup(optimizer, round(config.warmup * total_steps), total_steps)
    net, optimizer = accelerator.prepare(net, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    unwrapped = accelerator.unwrap_model(net)

    step, epoch, micro, best, best_step, history = 0, 0, 0, -math.inf, 0, []
    if resume is not None:
        state = torch.load(out / CHECKPOINT / "trainer.pt", weights_only=True)
        if int(state.get("processes", 1)) != accelerator.num_processes:
            raise RelkitError(f"{name} was checkpointed with {state.get('processes', 1)} processes; resume it with "
                              f"as many (accelerate launch --num_processes)")
        accelerator.load_state(str(out / CHECKPOINT))
        step, epoch, micro = int(state["step"]), int(state["epoch"]), int(state["micro"])
        best, best_step = float(state["best"]), int(state["best_step"])
        history = [h for h in _history(out) if h["step"] <= step]  # evaluations after the checkpoint are redone
        logger.info("resuming %s at step %d of %d", name, step, total_steps)
    batches = epoch_batches(len(run.train_ids), groups, config.batch_size, config.seed + epoch)

    stop_at = total_steps if stop_after is None else min(total_steps, step + stop_after)
    bar = progress(total=total_steps, initial=step, enabled=main, desc=f"teacher-{name}", unit="step")
    evaluate_now, checkpoint_now = step == 0, False  # step 0 (the prior alone, if any) is a candidate too
    seen, tick = 0, time.perf_counter()
    try:
        while True:
            # evaluate on dev (main process); the weights are saved as the teacher when `primary` improves
            if evaluate_now and main:
                eval_start = time.perf_counter()
                metrics, cuts = evaluate_dev(unwrapped, tokenizer, run, config.decision)
                history.append({"step": step, **metrics})
                value = metrics[config.primary]
                improved = value is not None and value > best
                logger.info("step %d: dev %s %s, dev loss %.4f%s", step, config.primary,
                            "-" if value is None else f"{value:.4f}", metrics["dev_loss"],
                            " (best so far, saved)" if improved else "")
                if improved or best == -math.inf:
                    best, best_step = (value if value is not None else best), step
                    prior = unwrapped.prior()
                    meta.metrics, meta.cutpoints = {**metrics, "step": step}, cuts
                    meta.prior = None if prior is None else prior.to_dict()
                    Teacher(unwrapped.model, tokenizer, meta).save(out)
                _write_history(out, history)
                tick += time.perf_counter() - eval_start  # pairs/s counts training time only
            if checkpoint_now:
                save_checkpoint(accelerator, {"step": step, "epoch": epoch, "micro": micro, "best": best,
                                              "best_step": best_step}, config, out / CHECKPOINT)
            if step >= stop_at:
                break

            # one optimizer step: this process's share of `per_step` micro-batches, then clip, step, schedule
            net.train()
            share = my_share(batches[micro:micro + per_step], accelerator.process_index, accelerator.num_processes)
            loss_sum = 0.0
            for i, idx in enumerate(share):
                # gradients are all-reduced across processes at the last backward of the step only
                with accelerator.no_sync(net) if i < len(share) - 1 else contextlib.nullcontext():
                    batch = collate(tokenizer, [run.train_ids[j] for j in idx]).to(accelerator.device)
                    logits = net(batch, None if train_x is None else train_x[idx])
                    y = targets[idx].to(accelerator.device)
                    loss = loss_fn(logits, y, group_of[idx].to(accelerator.device))
                    accelerator.backward(loss / config.grad_accum)
                loss_sum += loss.item()
                seen += len(idx)
            accelerator.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step, micro = step + 1, min(micro + per_step, len(batches))
            bar.set_postfix(loss=f"{loss_sum / len(share):.4f}",
                            pairs_s=f"{seen * accelerator.num_processes / max(time.perf_counter() - tick, 1e-9):.1f}")
            bar.update(1)
            end_of_epoch = micro >= len(batches)
            if end_of_epoch:
                epoch, micro = epoch + 1, 0
                batches = epoch_batches(len(run.train_ids), groups, config.batch_size, config.seed + epoch)
            evaluate_now = bool(config.eval_every and step % config.eval_every == 0) or \
                (not config.eval_every and end_of_epoch) or step == total_steps
            checkpoint_now = step % config.checkpoint_every == 0
    except KeyboardInterrupt:
        bar.close()
        save_checkpoint(accelerator, {"step": step, "epoch": epoch, "micro": micro, "best": best,
                                      "best_step": best_step}, config, out / CHECKPOINT)
        raise RelkitError(f"interrupted at step {step} of {total_steps}; a checkpoint is in {out / CHECKPOINT}; "
                          f"continue with `relkit teach --resume {name}`") from None
    bar.close()
    finished = step >= total_steps
    if finished:
        if main:
            shutil.rmtree(out / CHECKPOINT, ignore_errors=True)  # nothing left to resume
    elif not checkpoint_now:
        save_checkpoint(accelerator, {"step": step, "epoch": epoch, "micro": micro, "best": best,
                                      "best_step": best_step}, config, out / CHECKPOINT)
    if not finished:
        logger.info("stopped at step %d of %d; continue with `relkit teach --resume %s`", step, total_steps, name)
    accelerator.wait_for_everyone()
    if finished and main and config.prior_fit == "after":
        stack_prior(out, run, config, accelerator.device.type, history)
    accelerator.wait_for_everyone()
    final = json.loads((out / META_FILE).read_text())["metrics"] if (out / META_FILE).exists() else {}
    return TrainResult(path=out, steps=step, total_steps=total_steps, best_step=best_step, dev_metrics=final,
                       seconds=time.perf_counter() - started, history=history if main else [], main_process=main)


def stack_prior(out: Path, run: PreparedRun, config: TrainConfig, device: str, history: list) -> None:
    """`prior_fit=after`: fit the prior on top of the kept cross-encoder at `out`, and save the two as
    the teacher. A logistic regression of the levels on the prior's features and the cross-encoder's
    logits (centred over the levels) weighs them, over the dev pairs (`stack_on=dev`: the cross-encoder
    never trained on them, so its confidence there is what it earns on new pairs; on train pairs it is
    overconfident and weighs too much) or the train pairs. The features' weights become the prior, the
    logits' a (K, K) matrix folded into the cross-encoder's head, so the teacher's logits stay
    `head(x) + prior` for every reader (scoring, ONNX, labeling). The cutpoints and dev metrics are fit
    again on the sum (on dev, both are then in-sample)."""
    import torch

    from relkit.teacher.prior import logistic_weights

    k = run.scale.k
    on = config.stack_on
    if on == "dev" and len(np.unique(run.dev.labels)) < k:
        logger.warning("the dev pairs lack a level: the prior is fit on top of the cross-encoder over the train pairs")
        on = "train"
    ids, x, labels = (run.dev_ids, run.dev_x, run.dev.labels) if on == "dev" else \
        (run.train_ids, run.train_x, run.train.labels)
    teacher = Teacher.load(out, device=device, precision="fp32")   # saved again: keep the weights' precision
    proba = predict_ids(teacher.model, teacher.tokenizer, ids, batch_size=64, bar=True)
    log_p = np.log(np.clip(proba, 1e-12, 1))
    centred = log_p - log_p.mean(axis=1, keepdims=True)     # = logits less their mean: linear in the logits
    weight, bias = logistic_weights(np.hstack([x, centred]), labels, k)
    features = weight.shape[0] - k
    mix = (np.eye(k) - 1.0 / k) @ weight[features:]           # new logits = logits @ mix (the centring folded in)
    head = head_linear(teacher.model, k)
    with torch.no_grad():
        m = torch.as_tensor(mix, dtype=head.weight.dtype, device=head.weight.device)
        head.weight.copy_(m.T @ head.weight)
        if head.bias is not None:
            head.bias.copy_(head.bias @ m)
    prior = replace(run.prior, weight=weight[:features].tolist(), bias=bias.tolist())
    before = teacher.meta.metrics
    metrics, cuts = evaluate_dev(teacher_net(teacher.model, prior), teacher.tokenizer, run, config.decision)
    meta = teacher.meta
    meta.prior, meta.cutpoints, meta.config = prior.to_dict(), cuts, asdict(replace(config, stack_on=on))
    meta.metrics = {**metrics, "step": before.get("step", 0),
                    f"cross_encoder_{config.primary}": before.get(f"cross_encoder_{config.primary}",
                                                                  before.get(config.primary))}
    Teacher(teacher.model, teacher.tokenizer, meta).save(out)
    _write_history(out, history)
    value, alone = metrics.get(config.primary), meta.metrics[f"cross_encoder_{config.primary}"]
    logger.info("prior fit on top of the cross-encoder over the %s pairs: dev %s %s (the cross-encoder alone %s)",
                on, config.primary, "-" if value is None else f"{value:.4f}", "-" if alone is None else f"{alone:.4f}")


# the settings of a prior_fit=after teacher that only its prior reads: `refit_prior` may change them
PRIOR_SETTINGS = ("prior", "prior_features", "tokenization", "stack_on")


def refit_prior(ws: Workspace | str | os.PathLike, name: str, device: str = "auto", **settings) -> TrainConfig:
    """Fit the prior of the saved teacher `name` (trained with `prior_fit=after`) again on top of its
    cross-encoder, under its recorded settings with `settings` (among `PRIOR_SETTINGS`) changed: what
    training it so would have saved, as the cross-encoder of `prior_fit=after` trains without the prior,
    in minutes rather than hours. The cross-encoder's logits are read through the head as saved, whose
    earlier weighing is linear and is weighed again. The workspace's items as they are now give an
    `idf_coverage` prior its document frequencies. Returns the teacher's new settings."""
    unknown = sorted(set(settings) - set(PRIOR_SETTINGS))
    if unknown:
        raise RelkitError(f"refit_prior changes only {', '.join(PRIOR_SETTINGS)}, not {', '.join(unknown)}")
    out = teacher_dir(ws, name)
    if not (out / META_FILE).is_file():
        raise RelkitError(f"no teacher '{name}' at {out}")
    meta = TeacherMeta.from_json((out / META_FILE).read_text())
    recorded = {k: v for k, v in meta.config.items() if k in TrainConfig.__dataclass_fields__}
    if recorded.get("prior_fit") != "after":
        raise RelkitError(f"the teacher '{name}' was trained with prior_fit={recorded.get('prior_fit')}: its prior "
                          f"learned beside the cross-encoder and cannot be fit again alone (train with "
                          f"prior_fit=after)")
    config = from_dict(TrainConfig, {**recorded, **settings, "device": device}, "training option")
    with _opened(ws, read_only=False) as opened:
        check_run(opened, config)
        run = prepare_run(opened, config, load_tokenizer(str(out), meta.family), meta.family)
    stack_prior(out, run, config, resolve_device(config.device), _history(out))
    return config


def head_linear(model, k: int):
    """The linear layer that makes a sequence classifier's k logits (BERT's `classifier`, RoBERTa's
    `classifier.out_proj`, Llama's `score`)."""
    import torch

    found = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m.out_features == k
             and any(part in HEAD_NAMES for part in n.split("."))]
    if not found:
        raise RelkitError(f"{type(model).__name__} has no linear head of {k} outputs named one of "
                          f"{', '.join(HEAD_NAMES)}: prior_fit=after cannot weigh its logits (use prior_fit=before)")
    return found[-1]


@contextlib.contextmanager
def _opened(ws: Workspace | Path, read_only: bool):
    """`ws` itself when it is an open workspace; else the workspace at that path, open for the block."""
    if isinstance(ws, Workspace):
        yield ws
        return
    with Workspace.open(ws, read_only=read_only) as opened:
        yield opened


def _write_history(out: Path, history: list) -> None:
    (out / "history.json").write_text(json.dumps(history, indent=2))


def _history(out: Path) -> list:
    path = out / "history.json"
    return json.loads(path.read_text()) if path.exists() else []

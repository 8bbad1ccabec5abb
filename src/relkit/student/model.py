"""The student: an MLP over the features of `features.py` with a K-way softmax, trained on the
teacher's soft labels (soft cross-entropy), optionally mixed with human labels, early-stopped on the
dev split's human labels (their log loss, by default).

Saved as a folder: `weights.npz` (standardisation and layer weights, plain numpy so serving needs
no torch) and `relkit.json` (kind, scale, feature config and blocks, layer sizes, training config,
data counts and dev metrics).
"""
from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from relkit import __version__
from relkit.errors import RelkitError
from relkit.logs import progress
from relkit.scale import LabelScale
from relkit.student.features import FeatureBuilder, FeatureConfig, PairFeatures

if TYPE_CHECKING:
    from relkit.student.stream import TrainingStream

META_FILE = "relkit.json"
WEIGHTS_FILE = "weights.npz"


SELECT = ("log_loss", "ndcg@10", "auroc")


@dataclass(frozen=True)
class StudentConfig:
    hidden: tuple[int, ...] = (64, 32)     # the fastest size that matched the best dev nDCG (HD, CF)
    epochs: int = 40                 # at most; early stopping usually ends sooner
    patience: int = 4                # epochs without a better dev score before stopping
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 1e-4
    dropout: float = 0.1
    human_weight: float = 0.3        # weight of a human-labeled pair against a teacher-labeled one: below 1,
                                     # so the teacher's labels outweigh people's where people judged many
                                     # pairs (on Home Depot 0.3 kept 94% of the teacher's AUROC gain, 1 kept 69%)
    seed: int = 0
    product_rank: int = 8            # > 0: the first layer's query-item-product weights have this rank (a
                                     # student of few queries then learns the teacher, not the queries, and
                                     # scores faster); 0: full rank
    label_temperature: float = 1.0   # teacher soft labels as p^(1/T), renormalised: T < 1 sharpens them
    decision: str = "cutpoints"      # cutpoints: a level from the expected level, cut where dev QWK is best;
                                     # argmax: the most probable level (collapses to the majority level)
    select: str = "log_loss"         # the dev figure that picks the epoch kept: log_loss (of the human dev
                                     # labels; smooth, and never an epoch that barely trained), ndcg@10 or
                                     # auroc (mean over thresholds)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if not self.hidden or min(self.hidden) < 1:
            raise RelkitError("student: hidden needs at least one layer size, each at least 1")
        if self.epochs < 1 or self.patience < 1 or self.batch_size < 1 or self.lr <= 0:
            raise RelkitError("student: epochs, patience and batch_size must be at least 1, lr positive")
        if self.human_weight < 0:
            raise RelkitError("student: human_weight cannot be negative")
        if self.product_rank < 0:
            raise RelkitError("student: product_rank is 0 (full) or a positive rank")
        if not self.label_temperature > 0:
            raise RelkitError("student: label_temperature must be positive")
        if self.decision not in ("cutpoints", "argmax"):
            raise RelkitError(f"student: decision is cutpoints or argmax, not '{self.decision}'")
        if self.select not in SELECT:
            raise RelkitError(f"student: select is one of {', '.join(SELECT)}, not '{self.select}'")


@dataclass
class StudentMeta:
    scale: LabelScale
    features: dict                         # FeatureConfig.to_dict()
    blocks: list                           # [(name, width), ...] of the model input
    hidden: list
    teacher: str | None = None
    cutpoints: list[float] | None = None   # levels from the expected level (fit on dev); None: argmax
    config: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    kind: str = "student"
    relkit_version: str = ""

    def to_json(self) -> str:
        d = asdict(self)
        d["relkit_version"] = __version__
        d["scale"] = {"names": list(self.scale.names), "gains": list(self.scale.gains)}
        d["blocks"] = [list(b) for b in self.blocks]
        return json.dumps(d, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "StudentMeta":
        d = json.loads(text)
        if d.get("kind") != "student":
            raise RelkitError(f"not a student (kind {d.get('kind')!r})")
        d["scale"] = LabelScale(names=tuple(d["scale"]["names"]), gains=tuple(d["scale"]["gains"]))
        d["blocks"] = [tuple(b) for b in d["blocks"]]
        return cls(**d)


def assemble(features: PairFeatures, item_vectors: np.ndarray | None, item_extra: np.ndarray) -> np.ndarray:
    """The dense model input of `features` (rows in block order); training and the torch path use
    this, the fast scorer computes the same first layer without forming it."""
    parts = []
    if item_vectors is not None and item_vectors.shape[1]:
        q = features.query_vectors[features.query_index]
        i = item_vectors[features.item_rows]
        parts += [q, i, q * i]
    if item_extra.shape[1]:
        parts.append(item_extra[features.item_rows])
    parts.append(features.pair)
    return np.concatenate(parts, axis=1).astype(np.float32)


class Student:
    """A trained student: numpy weights, a feature layout, a label scale.

        student = Student.load("relkit-ws/artifacts/student-hd")
        builder = FeatureBuilder.from_workspace(ws, student.feature_config())
        student.predict_proba(builder.pairs(["red chair"], ["item-1"]), builder)   # (1, K)
    """

    def __init__(self, meta: StudentMeta, weights: dict[str, np.ndarray], path: Path | None = None):
        self.meta = meta
        self.weights = weights
        self.path = path

    @property
    def scale(self) -> LabelScale:
        return self.meta.scale

    @property
    def layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        n = len(self.meta.hidden) + 1
        return [(self.weights[f"w{i}"], self.weights[f"b{i}"]) for i in range(n)]

    def feature_config(self) -> FeatureConfig:
        return FeatureConfig.from_dict(self.meta.features)

    def to_dict(self) -> dict:
        """A saved student as `relkit distill --json` prints it: its folder, data, decision, dev figures."""
        return {"student": self.path.name, **self.meta.data, "cutpoints": self.meta.cutpoints,
                "dev": self.meta.metrics["dev"], "best_epoch": self.meta.metrics["best_epoch"]}

    def summary(self) -> str:
        """One line on a saved student, as `relkit distill` prints it."""
        d = self.to_dict()
        dev = {k: "-" if v is None else f"{v:.4f}" for k, v in d["dev"].items()}
        return (f"{d['student']}: {d['teacher_pairs']:,} teacher-labeled pairs of {d['teacher_queries']:,} queries + "
                f"{d['human_pairs']:,} human ones of {d['human_queries']:,}, best epoch {d['best_epoch']}, dev nDCG@10 "
                f"{dev['ndcg@10']}, {'argmax' if d['cutpoints'] is None else 'cutpoints'} accuracy {dev['accuracy']} "
                f"QWK {dev['qwk']} (argmax: {dev['argmax_accuracy']}, {dev['argmax_qwk']}) ({d['seconds']:.1f} s); "
                f"evaluate with `relkit eval --system student:{d['student'].removeprefix('student-')}`")

    def check_builder(self, builder: FeatureBuilder) -> None:
        """Refuse features laid out differently from the ones the student was trained on."""
        got = [tuple(b) for b in builder.blocks()]
        want = [tuple(b) for b in self.meta.blocks]
        # as configs, not dicts: a student saved before a config field existed has its default
        if got != want or builder.config != self.feature_config():
            diff = sorted(set(got) ^ set(want))
            raise RelkitError(f"the features do not match the student's: it was trained on {len(want)} blocks "
                              f"({self.meta.features}), these are {len(got)} ({builder.config.to_dict()}); "
                              f"differing blocks: {diff or 'order or config'}")

    # -- numpy inference (no torch) -----------------------------------------------------------
    def logits(self, x: np.ndarray) -> np.ndarray:
        h = (x - self.weights["mean"]) / self.weights["std"]
        layers = self.layers
        for w, b in layers[:-1]:
            h = np.maximum(h @ w.T + b, 0.0)
        w, b = layers[-1]
        return h @ w.T + b

    def predict_proba(self, features: PairFeatures, builder: FeatureBuilder) -> np.ndarray:
        self.check_builder(builder)
        x = assemble(features, builder.items.vectors, builder.items.extra)
        return softmax(self.logits(x))

    def predict_levels(self, proba: np.ndarray) -> np.ndarray:
        """The student's level for each row of `predict_proba`'s output: its decision rule (the
        cutpoints fit on dev, else the most probable level)."""
        return decide(proba, self.meta.cutpoints)

    # -- files --------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the folder whole: into a temporary sibling, renamed into place at the end."""
        import shutil

        path = Path(path)
        tmp = path.with_name(path.name + ".saving")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        np.savez(tmp / WEIGHTS_FILE, **self.weights)
        (tmp / META_FILE).write_text(self.meta.to_json())
        (tmp / "README.md").write_text(model_card(self.meta, self.weights))
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Student":
        path = Path(path)
        if not (path / META_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise RelkitError(f"{path} is not a saved student (no {META_FILE} and {WEIGHTS_FILE})")
        meta = StudentMeta.from_json((path / META_FILE).read_text())
        with np.load(path / WEIGHTS_FILE) as f:
            weights = {k: f[k] for k in f.files}
        width = sum(w for _, w in meta.blocks)
        if weights["w0"].shape[1] != width:
            raise RelkitError(f"{path}: the first layer takes {weights['w0'].shape[1]} inputs, the blocks "
                              f"in {META_FILE} make {width}")
        return cls(meta, weights, path)


def model_card(meta: StudentMeta, weights: dict[str, np.ndarray]) -> str:
    """The student's README.md: what it reads, what it learned from, how good and how fast it is."""
    def table(metrics: dict) -> str:
        return "\n".join(f"| {k} | {'-' if v is None else f'{v:.4f}'} |" for k, v in metrics.items()
                         if v is None or isinstance(v, (int, float)))

    features = meta.features or {}
    groups = ", ".join(features.get("groups", ())) or "features of your own"
    blocks = ", ".join(f"{name} ({width})" for name, width in meta.blocks)
    params = sum(int(w.size) for k, w in weights.items() if k[0] in "wb")
    data = meta.data

    def queries(key: str) -> str:   # students saved before the counts were kept have none
        return f" of {data[key]:,} queries" if data.get(key) else ""

    source = (f"`{meta.teacher}`'s soft labels of {data.get('teacher_pairs', 0):,} train-split pairs"
              f"{queries('teacher_queries')}" if data.get("teacher_pairs") else "no teacher labels")
    temperature = meta.config.get("label_temperature", 1.0)
    if data.get("teacher_pairs") and temperature != 1.0:
        source += f" (sharpened at temperature {temperature})"
    human = data.get("human_pairs", 0)
    weight = meta.config.get("human_weight", 1.0)
    decision = (f"its expected level cut at {', '.join(f'{c:.3f}' for c in meta.cutpoints)} (fit on dev to "
                f"maximise QWK)" if meta.cutpoints is not None else "its most probable level")
    sections = [f"""# relkit student

A feed-forward student (hidden layers {', '.join(map(str, meta.hidden))}; {params:,} weights, plain
numpy) that predicts search relevance on {meta.scale.k} levels ({meta.scale.describe()}). It ranks by
the expected gain under its level probabilities; its level for a pair is {decision}. Load it with
`relkit.student.Student.load(path)`; `relkit.json` holds the scale, the feature layout, the
cutpoints and the training config.

## Features

Groups: {groups}{f"; bi-encoder `{features['encoder']}`" if "embedding" in features.get("groups", ()) else ""}.
Input blocks in order: {blocks}.

## Training data

{source}, and {human:,} human-labeled train pairs{queries('human_queries')}{f" (weight {weight:g} each)" if human else ""};
{data.get('train_rows', 0):,} rows in all. Early-stopped on the dev split's human labels (best epoch
{meta.metrics.get('best_epoch', '-')}), trained in {data.get('seconds', 0):.1f} s.
"""]
    for split in ("dev", "test"):
        if meta.metrics.get(split):
            sections.append(f"""## {split.capitalize()} metrics

accuracy and qwk use the student's decision ({'cutpoints' if meta.cutpoints is not None else 'argmax'});
argmax_accuracy and argmax_qwk the most probable level.

| metric | value |
|---|---|
{table(meta.metrics[split])}
""")
    speed = data.get("speed")
    if speed:
        sections.append(f"""## Speed

The fast scorer (numpy, one process) scores {speed['candidates']:,} candidates for a query in
{speed['p50_ms']:.2f} ms (p50; p99 {speed['p99_ms']:.2f} ms over {speed['queries']} queries), the
query's embedding known, on the machine it was trained on.
""")
    return "\n".join(sections)


def decide(proba: np.ndarray, cutpoints: list[float] | None) -> np.ndarray:
    """Levels 1..K from probabilities: cut the expected level at `cutpoints`, or argmax when None."""
    from relkit.metrics import apply_cutpoints, expected_level   # lazy: scikit-learn, which serving does without

    if cutpoints is None:
        return np.asarray(proba).argmax(axis=1) + 1
    return apply_cutpoints(expected_level(proba), cutpoints)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


# -- training ---------------------------------------------------------------------------------
@dataclass
class TrainingSet:
    """Model inputs and targets in memory: x (n, F), targets (n, K) distributions, weights (n,).
    `fit_student` also takes a `relkit.student.stream.TrainingStream`, which has the same length,
    width and methods, for training sets kept on disk."""

    x: np.ndarray
    targets: np.ndarray
    weights: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    @property
    def width(self) -> int:
        return self.x.shape[1]

    def standardization(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of every input column; a std below 1e-6 is taken as 1."""
        mean = self.x.mean(axis=0)
        std = self.x.std(axis=0)
        std[std < 1e-6] = 1.0
        return mean, std

    def batches(self, batch_size: int, rng: np.random.Generator, mean: np.ndarray, std: np.ndarray
                ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """One epoch: (standardised inputs, targets, weights) float32 batches in a random order."""
        order = rng.permutation(len(self.x))
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            yield ((self.x[idx] - mean) / std, self.targets[idx].astype(np.float32),
                   self.weights[idx].astype(np.float32))


@dataclass
class DevSet:
    x: np.ndarray
    labels: np.ndarray          # human levels 1..K
    query_ids: list[str]
    item_ids: list[str]


def torch_net(sizes: list[int], dropout: float = 0.0, product: tuple[int, int] | None = None, rank: int = 0):
    """The MLP; with `rank` > 0 the first layer's weights on the input columns `product` (start,
    stop) are a product U R of rank `rank` (the other columns and the bias are free)."""
    import torch

    layers = []
    for n_in, n_out in zip(sizes[:-2], sizes[1:-1]):
        first = not layers
        linear = (low_rank_linear(n_in, n_out, product, rank) if first and rank and product
                  else torch.nn.Linear(n_in, n_out))
        layers += [linear, torch.nn.ReLU(), torch.nn.Dropout(dropout)]
    layers.append(torch.nn.Linear(sizes[-2], sizes[-1]))
    return torch.nn.Sequential(*layers)


def low_rank_linear(n_in: int, n_out: int, columns: tuple[int, int], rank: int):
    """A linear layer whose weights on `columns` have rank <= `rank`: the fast scorer then scores a
    candidate's query-item product with rank x (d + hidden) multiply-adds instead of d x hidden.
    `weight` is the whole (n_out, n_in) matrix, as `torch.nn.Linear` has it (and as it is saved)."""
    import torch

    class LowRankColumns(torch.nn.Module):
        def __init__(self):
            super().__init__()
            start, stop = columns
            init = torch.nn.Linear(n_in, n_out)
            w = init.weight.detach()
            u, s, vt = torch.linalg.svd(w[:, start:stop], full_matrices=False)
            k = min(rank, len(s))
            self.left = torch.nn.Parameter(w[:, :start].clone())
            self.right = torch.nn.Parameter(w[:, stop:].clone())
            self.u = torch.nn.Parameter((u[:, :k] * s[:k].sqrt()).contiguous())
            self.r = torch.nn.Parameter((s[:k].sqrt()[:, None] * vt[:k]).contiguous())
            self.bias = init.bias

        @property
        def weight(self):
            return torch.cat([self.left, self.u @ self.r, self.right], dim=1)

        def forward(self, x):
            return torch.nn.functional.linear(x, self.weight, self.bias)

    return LowRankColumns()


def linear_layers(net) -> list:
    """The layers with weights, in order (plain or low-rank linear)."""
    return [m for m in net if hasattr(m, "weight")]


def torch_student(student: Student):
    """The student as a torch module on standardised inputs (for training-time checks and speed
    comparisons); `logits` is the numpy equivalent."""
    import torch

    sizes = [student.weights["w0"].shape[1], *student.meta.hidden, student.scale.k]
    net = torch_net(sizes)
    linears = linear_layers(net)
    with torch.no_grad():
        for module, (w, b) in zip(linears, student.layers):
            module.weight.copy_(torch.from_numpy(w))
            module.bias.copy_(torch.from_numpy(b))
    mean = torch.from_numpy(student.weights["mean"])
    std = torch.from_numpy(student.weights["std"])
    return net.eval(), mean, std


def dev_metrics(proba: np.ndarray, dev: DevSet, scale: LabelScale) -> dict[str, float]:
    from relkit.metrics import accuracy, auroc_at, ndcg_per_query   # lazy: scikit-learn (see decide)

    scores = proba @ np.asarray(scale.gains, dtype=np.float64)
    per_query = ndcg_per_query(dev.query_ids, dev.item_ids, dev.labels, scores, scale.gains, cutoffs=(10,))[10]
    at_least = np.cumsum(proba[:, ::-1], axis=1)[:, ::-1]          # P(level >= t), t = 1..K
    aurocs = [auroc_at(dev.labels, at_least[:, t - 1], t) for t in range(2, scale.k + 1)]
    picked = np.clip(proba[np.arange(len(proba)), dev.labels - 1], 1e-12, 1.0)
    return {"accuracy": accuracy(dev.labels, proba.argmax(axis=1) + 1),
            "ndcg@10": float(np.mean(list(per_query.values()))) if per_query else 0.0,
            "log_loss": float(-np.log(picked).mean()),
            "auroc": float(np.nanmean(aurocs)) if not np.isnan(aurocs).all() else 0.0}


def selection_key(metrics: dict[str, float], select: str) -> tuple[float, float]:
    """Larger is better: the dev figure `select` (log loss negated), accuracy breaking ties."""
    value = -metrics["log_loss"] if select == "log_loss" else metrics[select]
    return value, metrics["accuracy"]


def fit_decision(proba: np.ndarray, dev: DevSet, scale: LabelScale, decision: str
                 ) -> tuple[list[float] | None, dict[str, float]]:
    """The cutpoints of `decision` fit on dev (None for argmax), and dev accuracy and QWK under both
    decisions: the argmax of a soft-label student mostly says the majority level, while the
    expected level still orders pairs well; cutting it where dev QWK is best gives levels that
    spread as the human ones do."""
    from relkit.metrics import accuracy, expected_level, fit_cutpoints, quadratic_kappa   # lazy: as in decide

    cuts = (fit_cutpoints(expected_level(proba), dev.labels, scale.levels).tolist()
            if decision == "cutpoints" else None)
    argmax, levels = proba.argmax(axis=1) + 1, decide(proba, cuts)
    kappa = lambda y: quadratic_kappa(dev.labels, y, scale.levels)  # noqa: E731
    nan_free = lambda v: None if np.isnan(v) else v                  # noqa: E731
    return cuts, {"accuracy": accuracy(dev.labels, levels), "qwk": nan_free(kappa(levels)),
                  "argmax_accuracy": accuracy(dev.labels, argmax), "argmax_qwk": nan_free(kappa(argmax))}


def fit_student(train: TrainingSet | TrainingStream, dev: DevSet, scale: LabelScale, builder: FeatureBuilder | None,
                config: StudentConfig | None = None, teacher: str | None = None, data: dict | None = None) -> Student:
    """Train an MLP on `train` (soft targets; in memory, or a stream of batches from disk), keep the
    epoch with the best dev figure `config.select` (accuracy breaks ties)."""
    import torch

    config = config or StudentConfig()
    if len(train) == 0:
        raise RelkitError("the student has no training pairs")
    if len(dev.x) == 0:
        raise RelkitError("the student needs judged dev pairs for early stopping: run `relkit split` with --dev > 0")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    mean, std = train.standardization()
    sizes = [train.width, *config.hidden, scale.k]
    blocks = builder.blocks() if builder is not None else [("features", train.width)]
    offsets = np.cumsum([0] + [w for _, w in blocks])
    names = [name for name, _ in blocks]
    product = ((int(offsets[names.index("query_item_product")]), int(offsets[names.index("query_item_product") + 1]))
               if "query_item_product" in names else None)
    net = torch_net(sizes, config.dropout, product, config.product_rank)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    dev_x = torch.from_numpy((dev.x - mean) / std)
    weights_of = lambda: {f"{kind}{i}": p.detach().numpy().copy()  # noqa: E731
                          for i, m in enumerate(linear_layers(net))
                          for kind, p in (("w", m.weight), ("b", m.bias))}
    best, best_key, stale, history = None, (-np.inf, -np.inf), 0, []
    started = time.perf_counter()
    bar = progress(range(config.epochs), desc="training student", unit="epoch")
    for epoch in bar:
        net.train()
        total = 0.0
        for batch in train.batches(config.batch_size, rng, mean, std):
            x, y, w = (torch.from_numpy(a) for a in batch)
            logp = torch.log_softmax(net(x), dim=-1)
            loss = (-(y * logp).sum(1) * w).sum() / w.sum().clamp_min(1e-9)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(x)
        net.eval()
        with torch.no_grad():
            proba = torch.softmax(net(dev_x), dim=-1).numpy()
        metrics = dev_metrics(proba, dev, scale)
        history.append({"epoch": epoch + 1, "loss": total / len(train), **metrics})
        key = selection_key(metrics, config.select)
        bar.set_postfix(loss=f"{total / len(train):.4f}", dev_ndcg=f"{metrics['ndcg@10']:.4f}")
        if key > best_key:
            best, best_key, stale = copy.deepcopy(weights_of()), key, 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    bar.close()
    weights = {"mean": mean.astype(np.float32), "std": std.astype(np.float32), **best}
    best_epoch = max(history, key=lambda h: selection_key(h, config.select))
    meta = StudentMeta(scale=scale, features=builder.config.to_dict() if builder is not None else {}, blocks=blocks,
                       hidden=list(config.hidden), teacher=teacher,
                       config={**asdict(config), "hidden": list(config.hidden)},
                       data={**(data or {}), "train_rows": len(train), "seconds": time.perf_counter() - started},
                       metrics={"best_epoch": best_epoch["epoch"], "history": history})
    student = Student(meta, weights)
    meta.cutpoints, decided = fit_decision(softmax(student.logits(dev.x)), dev, scale, config.decision)
    meta.metrics["dev"] = {"ndcg@10": best_epoch["ndcg@10"], **decided}
    return student

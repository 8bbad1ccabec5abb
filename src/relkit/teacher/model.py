"""A teacher: a sequence-classification transformer that reads `query [SEP] item text` and gives a
distribution over the K relevance levels. Load with `Teacher.load(path)`; everything it needs to
predict (scale, text template, max length) is in the `relkit.json` beside its weights.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from relkit.errors import RelkitError
from relkit.scale import LabelScale
from relkit.text import DEFAULT_TEMPLATE, ItemTextTemplate, item_title

META_FILE = "relkit.json"
CHECKPOINT = "checkpoint"   # a resumable training checkpoint, kept inside the teacher's folder

# How each architecture reads a pair, by `config.model_type`. An explicit list: a model type that
# is not here is refused with this list rather than guessed at.
#   encoder: [CLS] query [SEP] item [SEP], the first token's vector feeds the head
#   decoder: "query: ... item: ...", the last non-padding token's vector feeds the head
#   encoder-decoder: T5's own classification head (the decoder's final EOS state)
FAMILIES: dict[str, str] = {
    "bert": "encoder", "roberta": "encoder", "xlm-roberta": "encoder", "deberta": "encoder",
    "deberta-v2": "encoder", "distilbert": "encoder", "electra": "encoder", "modernbert": "encoder",
    "llama": "decoder", "qwen2": "decoder", "qwen3": "decoder", "mistral": "decoder", "gemma": "decoder",
    "gemma2": "decoder", "phi3": "decoder",
    "t5": "encoder-decoder", "mt5": "encoder-decoder", "umt5": "encoder-decoder",
}
# What goes before the query and before the item. Decoder tokenizers join a pair with no separator.
TEMPLATES: dict[str, tuple[str, str]] = {
    "encoder": ("", ""), "encoder-decoder": ("", ""), "decoder": ("query: ", "\nitem: "),
}


@dataclass(frozen=True)
class TextTemplate:
    item_text: ItemTextTemplate = DEFAULT_TEMPLATE   # the item fields, labels and word budgets
    query_prefix: str = ""
    item_prefix: str = ""

    def item(self, item: str | Mapping[str, object]) -> str:
        return item if isinstance(item, str) else self.item_text.render(item)


@dataclass
class TeacherMeta:
    """The `relkit.json` of a teacher."""

    base_model: str
    family: str
    scale: LabelScale
    template: TextTemplate
    max_length: int
    cutpoints: list[float] | None = None          # levels from the expected level (fit on dev); None: argmax
    prior: dict | None = None                     # the prior added to the logits (see prior.py)
    config: dict = field(default_factory=dict)    # the resolved training config
    metrics: dict = field(default_factory=dict)   # dev metrics of the saved weights
    loss: dict = field(default_factory=dict)      # the training loss's settings (TeacherLoss.config)
    kind: str = "teacher"
    relkit_version: str = ""

    def to_json(self) -> str:
        from relkit import __version__

        d = asdict(self)
        d["relkit_version"] = __version__
        d["scale"] = {"names": list(self.scale.names), "gains": list(self.scale.gains)}
        d["template"] = {"query_prefix": self.template.query_prefix, "item_prefix": self.template.item_prefix,
                         "fields": self.template.item_text.to_list()}
        return json.dumps(d, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "TeacherMeta":
        d = json.loads(text)
        if d.get("kind") != "teacher":
            raise RelkitError(f"not a teacher (kind {d.get('kind')!r})")
        d["scale"] = LabelScale(names=tuple(d["scale"]["names"]), gains=tuple(d["scale"]["gains"]))
        t = d["template"]
        d["template"] = TextTemplate(item_text=ItemTextTemplate.from_list(t["fields"]),
                                     query_prefix=t["query_prefix"], item_prefix=t["item_prefix"])
        return cls(**d)


def family_of(config) -> str:
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise RelkitError(f"relkit does not know how to read pairs with a '{model_type}' model; supported model "
                          f"types: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[model_type]


def load_tokenizer(path_or_id: str, family: str, **kwargs):
    from transformers import AutoTokenizer

    from relkit.hf import quiet

    quiet()
    tokenizer = AutoTokenizer.from_pretrained(path_or_id, **kwargs)
    if family == "decoder":
        if tokenizer.pad_token is None:
            # decoders ship without a pad token; padding is masked out, any known token serves
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        tokenizer.padding_side = "right"  # the head reads the last non-padding token
    return tokenizer


def encode_pairs(tokenizer, template: TextTemplate, queries: Sequence[str], items: Sequence[str],
                 max_length: int) -> list[list[int]]:
    """Token ids of each pair, the item side truncated first so the query is kept whole."""
    q = [template.query_prefix + query[:512] for query in queries]
    i = [template.item_prefix + text for text in items]
    enc = tokenizer(q, i, truncation="only_second", max_length=max_length, return_token_type_ids=False)
    return enc["input_ids"]


def collate(tokenizer, ids: list[list[int]]):
    """Pad a batch to its longest member."""
    return tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")


class Teacher:
    """A trained teacher.

        teacher = Teacher.load("relkit-ws/artifacts/teacher-minilm")
        teacher.predict_proba([("red chair", {"title": "Red oak chair"})])     # (1, K) level probabilities
    """

    def __init__(self, model, tokenizer, meta: TeacherMeta, path: Path | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.meta = meta
        self.path = path
        self.onnx = None   # an OnnxScorer once `use_onnx` is called
        self._forward = None  # the scoring forward (fast.logits_fn), made on first use
        self.text_vectors = None  # texts -> the prior's vectors of them (a workspace cache), if set

    def use_onnx(self, int8: bool = False, threads: int | None = None) -> "Teacher":
        """Score with ONNX Runtime from now on (the export is made once, in the teacher's folder)."""
        from relkit.teacher.export import OnnxScorer

        if self.path is None:
            raise RelkitError("only a saved teacher (Teacher.load) can be exported to ONNX")
        import torch

        param = next(self.model.parameters())
        if param.dtype != torch.float32 or param.device.type != "cpu":
            # ONNX Runtime scores on the CPU in fp32: export from the saved fp32 weights, not rounded ones
            from transformers import AutoModelForSequenceClassification

            self.model = AutoModelForSequenceClassification.from_pretrained(str(self.path), dtype=torch.float32)
            self.model.eval()
            self._forward = None
        self.onnx = OnnxScorer(self, int8=int8, threads=threads)
        return self

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto", precision: str = "auto") -> "Teacher":
        """`device`: auto (a CUDA GPU when torch sees one), cpu or cuda. `precision`: the weights'
        dtype for scoring, auto (bf16 on a GPU, fp32 on the CPU), fp32 or bf16."""
        from transformers import AutoModelForSequenceClassification

        from relkit.hf import resolve_device, resolve_dtype

        path = Path(path)
        if not (path / META_FILE).is_file():
            raise RelkitError(f"{path} is not a saved teacher (no {META_FILE})")
        meta = TeacherMeta.from_json((path / META_FILE).read_text())
        device = resolve_device(device)
        tokenizer = load_tokenizer(str(path), meta.family)
        model = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=resolve_dtype(precision, device))
        model = model.to(device)
        model.eval()
        return cls(model, tokenizer, meta, path)

    def save(self, path: str | os.PathLike) -> "Teacher":
        """Write the teacher to `path`: safetensors weights (LoRA adapters merged in), the tokenizer,
        relkit.json and a model card. The folder is replaced whole; a training checkpoint inside it is kept.

            Teacher(model, tokenizer, meta).save("artifacts/teacher-minilm")
        """
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        plain = self.model
        if hasattr(plain, "merge_and_unload"):  # a peft model: save merged weights, keep training the adapters
            plain = copy.deepcopy(plain).merge_and_unload()
        plain.save_pretrained(tmp, safe_serialization=True)
        self.tokenizer.save_pretrained(tmp)
        (tmp / META_FILE).write_text(self.meta.to_json())
        (tmp / "README.md").write_text(model_card(self.meta))
        if (path / CHECKPOINT).exists():
            (path / CHECKPOINT).rename(tmp / CHECKPOINT)
        replace_dir(tmp, path)
        self.path = path
        return self

    @property
    def scale(self) -> LabelScale:
        return self.meta.scale

    def predict_proba(self, pairs: Sequence[tuple[str, str | Mapping[str, object]]], batch_size: int = 32,
                      bar: bool = False) -> np.ndarray:
        """(n, K) probabilities for (query, item) pairs; an item is its text or its record (whose
        `language` a text-match prior reads it in). `bar`: this is long work, draw a bar over the
        batches when bars are on (see `relkit.logs`)."""
        queries = [q for q, _ in pairs]
        items = [self.meta.template.item(i) for _, i in pairs]
        titles = [item_title(i) if isinstance(i, Mapping) else t for (_, i), t in zip(pairs, items)]
        languages = [i.get("language") if isinstance(i, Mapping) else None for _, i in pairs]
        return self.predict_texts(queries, items, titles, batch_size, bar, languages=languages)

    def predict_texts(self, queries: Sequence[str], item_texts: Sequence[str], titles: Sequence[str] | None = None,
                      batch_size: int = 32, bar: bool = False, languages: Sequence[str | None] | None = None,
                      query_languages: Sequence[str | None] | None = None) -> np.ndarray:
        """(n, K) probabilities for queries and rendered item texts; `titles` feed a text-match prior's
        title coverage (the item text stands for the title where not given), which reads each text in
        its language (`languages`, `query_languages`; see `Prior.inputs`)."""
        ids = encode_pairs(self.tokenizer, self.meta.template, queries, item_texts, self.meta.max_length)
        offsets = self.prior_logits(queries, item_texts, titles, languages, query_languages)
        if self.onnx is not None:
            return self.onnx(ids, batch_size, offsets)
        if self._forward is None:
            from relkit.teacher.fast import logits_fn

            self._forward = logits_fn(self.model)
        return predict_ids(self.model, self.tokenizer, ids, batch_size, bar, offsets=offsets,
                           forward=self._forward)

    def prior_logits(self, queries: Sequence[str], item_texts: Sequence[str], titles: Sequence[str] | None = None,
                     languages: Sequence[str | None] | None = None,
                     query_languages: Sequence[str | None] | None = None) -> np.ndarray | None:
        """The prior's logits for these pairs, or None for a teacher without one."""
        from relkit.teacher.prior import Prior

        if not self.meta.prior:
            return None
        prior = Prior(**self.meta.prior)
        return prior.logits(prior.inputs(queries, item_texts, titles, text_vectors=self.text_vectors,
                                         languages=languages, query_languages=query_languages))

    def predict_levels(self, proba: np.ndarray) -> np.ndarray:
        """The teacher's level for each row of `predict_proba`'s output: its decision rule."""
        from relkit.metrics import apply_cutpoints, expected_level

        if self.meta.cutpoints is None:
            return np.asarray(proba).argmax(axis=1) + 1
        return apply_cutpoints(expected_level(proba), self.meta.cutpoints)


def predict_ids(model, tokenizer, ids: list[list[int]], batch_size: int = 32, bar: bool = False,
                offsets: np.ndarray | None = None, forward=None) -> np.ndarray:
    """Softmax of the model's logits (plus `offsets`, (n, K), when given) over encoded pairs,
    batched longest first so padding stays small. `forward(input_ids, attention_mask)` computes the
    logits when given (see fast.logits_fn); the model's own forward otherwise."""
    import torch

    from relkit.logs import progress

    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    out = np.zeros((len(ids), model.config.num_labels), dtype=np.float32)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in progress(range(0, len(order), batch_size), enabled=bar, desc="scoring", unit="batch"):
            chunk = order[start:start + batch_size]
            batch = collate(tokenizer, [ids[i] for i in chunk]).to(device)
            logits = (forward(batch["input_ids"], batch["attention_mask"]) if forward is not None
                      else model(**batch).logits).float()
            if offsets is not None:
                logits = logits + torch.as_tensor(offsets[chunk], dtype=torch.float32, device=device)
            out[chunk] = torch.softmax(logits, dim=-1).cpu().numpy()
    model.train(was_training)
    return out


def replace_dir(tmp: Path, final: Path) -> None:
    """Put `tmp` where `final` is, so a reader never sees a half-written folder."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def model_card(meta: TeacherMeta) -> str:
    """The README.md saved beside a teacher's weights."""
    metrics = "\n".join(f"| {k} | {'-' if v is None else f'{v:.4f}'} |" for k, v in meta.metrics.items()
                        if not isinstance(v, (list, dict)))
    prior = ""
    if meta.prior:
        names = ", ".join(meta.prior.get("features", ["cosine"]))
        reading = ""
        if meta.prior.get("features", ["cosine"]) != ["cosine"]:
            reading = ("; each text matched in its language" if meta.prior.get("tokenization") == "by-language"
                       else "; every text matched as English")
        frequencies = meta.prior.get("frequencies")
        if frequencies:
            reading += (f"; terms weighed by their rarity among {sum(frequencies['items'].values()):,} items of the "
                        f"catalog")
        prior = (f" Its logits add a prior: per level, weights times features of the pair ({names}; cosine under "
                 f"the bi-encoder `{meta.prior['model']}`{reading}) plus a bias (in relkit.json).")
        if (meta.config or {}).get("prior_fit") == "after":
            pairs = meta.config.get("stack_on", "train")   # a teacher saved before stack_on weighed over train
            prior += (f" The prior was fit after training, on top of the cross-encoder over the {pairs} pairs, whose "
                      f"head now weighs its logits; `cross_encoder_*` is the cross-encoder's own dev figure.")
    loss = ""
    if meta.loss:
        settings = "\n".join(f"| {k} | {v} |" for k, v in meta.loss.items())
        loss = f"\n## Training loss\n\n| setting | value |\n|---|---|\n{settings}\n"
    return f"""# relkit teacher

A {meta.family} cross-encoder fine-tuned from `{meta.base_model}` to predict search relevance on
{meta.scale.k} levels ({meta.scale.describe()}). It reads `{meta.template.query_prefix}query` and
`{meta.template.item_prefix}item text` (item fields: {meta.template.item_text.describe()}), at
most {meta.max_length} tokens.{prior} Load it with `relkit.teacher.Teacher.load(path)`; `relkit.json`
holds the scale, the text template and the training config.
{loss}
## Dev metrics of these weights

| metric | value |
|---|---|
{metrics}
"""

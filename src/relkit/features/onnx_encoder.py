"""The workspace's bi-encoder on ONNX Runtime: exported once from sentence-transformers (at `relkit
promote`), then run with `tokenizers` and `onnxruntime` alone, so a process that only encodes
queries (the service) never imports torch.

    folder = export_encoder("default", ws.artifacts)       # torch: once, when a student is promoted
    OnnxEncoder(folder).encode(["red chair"])              # no torch: in the service

An export is a folder under `artifacts/encoders/`, one per encoder name (the name the workspace's
`text_vectors` cache keys vectors by), shared by every student on that encoder:

    model.onnx       the sentence-transformers model (transformer, its pooling, any dense layers)
                     from (input_ids, attention_mask) to the sentence vector
    tokenizer.json   the tokenizer the model encodes with
    encoder.json     what the tokenizer alone does not say: the prompt `encode` puts before every text
                     (when the model's config names a default one), the prefixes relkit puts before
                     queries and item texts (e5's `query: ` and `passage: `, `EncoderSpec`), the
                     lower-casing, the longest input, the vector's width

The vectors are unit length, as `Encoder.encode` gives them; the export checks that they agree with
the torch encoder's before it is kept.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from relkit.errors import RelkitError
from relkit.onnx_export import cpu_session

ENCODERS_DIR = "encoders"
META_FILE = "encoder.json"
PROBES = ("red chair", "cordless drill 20 volt", "  Garden HOSE reel, 100 ft.  ", "oak table",
          "a much longer text about a wooden kitchen table with four chairs and a lamp beside it")
MIN_AGREEMENT = 0.999   # smallest cosine between the ONNX and torch vectors of the probes
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderExport:
    """encoder.json: how texts become the exported model's inputs."""

    encoder: str            # the name the workspace knows the encoder by (`FeatureConfig.encoder`)
    source: str             # the folder or hub id it was loaded from
    prompt: str = ""        # put before every text, as sentence-transformers' `encode` does by default
    lower_case: bool = False
    max_tokens: int = 512   # longer inputs are cut, special tokens included
    pad_id: int = 0
    dim: int = 0
    query_prefix: str = ""  # before each query, as `Encoder.encode_queries` puts it (none before relkit had them)
    text_prefix: str = ""   # before each item text, as `Encoder.encode` puts it
    strip: bool = True      # blanks around a text are dropped (sentence-transformers before 6 does; 6 keeps them)

    def __post_init__(self) -> None:
        if self.max_tokens < 2 or self.dim < 1:
            raise RelkitError(f"a broken encoder export: max_tokens={self.max_tokens}, dim={self.dim}")


def encoder_folder(artifacts: Path, encoder: str) -> Path:
    """Where the export of `encoder` lives in a workspace's artifacts: a readable name and a hash
    of the whole name (two paths ending alike stay apart).

    >>> encoder_folder(Path("ws/artifacts"), "/models/e5-small").as_posix()
    'ws/artifacts/encoders/e5-small-4b94906a'
    """
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(encoder.rstrip("/")).name or encoder).strip("-.") or "encoder"
    return Path(artifacts) / ENCODERS_DIR / f"{slug}-{hashlib.sha1(encoder.encode()).hexdigest()[:8]}"


def has_export(folder: Path) -> bool:
    return (folder / "model.onnx").is_file() and (folder / META_FILE).is_file()


def export_encoder(encoder: str, artifacts: Path, torch_encoder=None) -> Path:
    """The ONNX export of the bi-encoder `encoder` in `artifacts/encoders/` (made now unless there
    already); `torch_encoder`: a loaded `Encoder` of that name, to check the export against."""
    import torch

    from relkit.features.embeddings import Encoder
    from relkit.onnx_export import compact_embeddings, export_program, save_program

    folder = encoder_folder(artifacts, encoder)
    if has_export(folder):
        return folder
    torch_encoder = torch_encoder or Encoder(encoder, device="cpu")   # exported from the CPU, run on it
    model = torch_encoder.model
    meta = describe(model, encoder, torch_encoder.model_name)
    spec = torch_encoder.spec
    if spec.query_prefix or spec.text_prefix:   # relkit's prefixes stand in for the model's prompt
        meta = replace(meta, prompt="", query_prefix=spec.query_prefix, text_prefix=spec.text_prefix)
    tokenizer = backend_tokenizer(model)
    shutil.rmtree(folder, ignore_errors=True)    # what an interrupted export left
    folder.mkdir(parents=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    inputs = tokenize(tokenizer, meta, ["red chair", "blue oak table lamp"])   # two lengths: see export_program
    ids, mask = (torch.from_numpy(a).to(model.device) for a in inputs)
    program = export_program(sentence_vector(model), ids, mask, output="sentence_vector")
    save_program(program, folder / "model.onnx")
    compact_embeddings(folder / "model.onnx")   # the token embeddings in half their memory, same vectors
    try:
        check_agreement(OnnxEncoder(folder, meta=meta), torch_encoder)
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    # written last: a folder without it is an unfinished export (has_export)
    (folder / META_FILE).write_text(json.dumps(asdict(meta), indent=1) + "\n")
    logger.info("exported the encoder %s to %s", encoder, folder)
    return folder


def describe(model, encoder: str, source: str) -> EncoderExport:
    """The export's settings, read from a loaded SentenceTransformer; refuses what the export cannot
    reproduce."""
    names = [type(module).__name__ for module in model]
    if not names or names[0] != "Transformer" or not set(names[1:]) <= {"Pooling", "Dense", "Normalize"}:
        raise RelkitError(f"the encoder '{encoder}' has modules {names}: the ONNX export covers a transformer "
                          "followed by pooling, dense and normalize modules")
    prompt = model.prompts.get(model.default_prompt_name, "") if model.default_prompt_name else ""
    pooling = next((m for m in model if type(m).__name__ == "Pooling"), None)
    if prompt and pooling is not None and not getattr(pooling, "include_prompt", True):
        raise RelkitError(f"the encoder '{encoder}' leaves its prompt out of the pooling, which the ONNX export "
                          "does not reproduce")
    tokenizer = model.tokenizer
    # sentence-transformers 6 renamed the method; 3 to 5 know only the old name
    width = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    max_tokens = int(model.max_seq_length or getattr(tokenizer, "model_max_length", 512))
    # whether blanks around a text reach the tokenizer: a SentencePiece tokenizer (XLM-R, e5) reads them
    preprocess = getattr(model, "preprocess", None) or model.tokenize
    strip = len(preprocess(["  red  "])["input_ids"][0]) == len(preprocess(["red"])["input_ids"][0])
    return EncoderExport(encoder=encoder, source=source, prompt=prompt or "",
                         lower_case=bool(getattr(model[0], "do_lower_case", False)), max_tokens=max_tokens,
                         pad_id=int(tokenizer.pad_token_id or 0), dim=int(width()), strip=strip)


def backend_tokenizer(model):
    """The `tokenizers` tokenizer sentence-transformers encodes with (its fast tokenizer's own)."""
    from tokenizers import Tokenizer

    fast = getattr(model.tokenizer, "backend_tokenizer", None)
    if fast is not None:
        return Tokenizer.from_str(fast.to_str())
    file = Path(model[0].auto_model.name_or_path) / "tokenizer.json"
    if not file.is_file():
        raise RelkitError("the encoder has no fast tokenizer (tokenizer.json), which the ONNX export needs")
    return Tokenizer.from_file(str(file))


def sentence_vector(model):
    """A SentenceTransformer as a torch module of (input_ids, attention_mask) -> sentence vector."""
    import torch

    class SentenceVector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model({"input_ids": input_ids, "attention_mask": attention_mask})["sentence_embedding"]

    return SentenceVector().eval()


def tokenize(tokenizer, meta: EncoderExport, texts: Sequence[str], prefix: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) int64, padded to the longest: sentence-transformers' inputs for `texts`
    (the prompt and `prefix` before each, stripped where the model strips, lower-cased if the model is,
    cut at `max_tokens`)."""
    texts = [meta.prompt + prefix + (t.strip() if meta.strip else t) for t in texts]
    if meta.lower_case:
        texts = [t.lower() for t in texts]
    encodings = tokenizer.encode_batch(texts)
    width = max((len(e.ids) for e in encodings), default=0)
    ids = np.full((len(texts), width), meta.pad_id, dtype=np.int64)
    mask = np.zeros((len(texts), width), dtype=np.int64)
    for row, e in enumerate(encodings):
        ids[row, :len(e.ids)] = e.ids
        mask[row, :len(e.ids)] = 1
    return ids, mask


class OnnxEncoder:
    """A bi-encoder export (`export_encoder`) on ONNX Runtime: unit vectors of texts, as
    `Encoder.encode` gives them, without torch.

        enc = OnnxEncoder(encoder_folder(ws.artifacts, "default"))
        enc.encode(["red chair"]).shape        # (1, 384)
    """

    def __init__(self, folder: Path, batch_size: int = 64, threads: int | None = None,
                 meta: EncoderExport | None = None):
        try:
            import onnxruntime  # noqa: F401  (cpu_session's)
            from tokenizers import Tokenizer
        except ImportError as e:
            raise RelkitError(f"the ONNX encoder needs onnxruntime and tokenizers (pip install onnxruntime "
                              f"tokenizers): {e}") from None
        self.folder, self.batch_size = Path(folder), batch_size
        if meta is None:
            if not has_export(self.folder):
                raise RelkitError(f"{self.folder} holds no encoder export: run `relkit promote NAME` to make it")
            meta = EncoderExport(**json.loads((self.folder / META_FILE).read_text()))
        self.meta = meta
        self.model_name = meta.encoder
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(meta.max_tokens)
        self.session = cpu_session(self.folder / "model.onnx", threads)

    def encode(self, texts: Sequence[str], bar: bool = False) -> np.ndarray:
        """Unit vectors of item texts, (len(texts), dim) float32; `bar` is accepted as `Encoder.encode` does."""
        return self._encode(texts, self.meta.text_prefix)

    def encode_queries(self, queries: Sequence[str], bar: bool = False) -> np.ndarray:
        """Unit vectors of queries (with the encoder's query prefix), as `Encoder.encode_queries` gives them."""
        return self._encode(queries, self.meta.query_prefix)

    def _encode(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        out = np.zeros((len(texts), self.meta.dim), dtype=np.float32)
        # by length, so that a batch pads little
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            ids, mask = tokenize(self.tokenizer, self.meta, [texts[i] for i in chunk], prefix)
            vectors = self.session.run(["sentence_vector"], {"input_ids": ids, "attention_mask": mask})[0]
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            out[chunk] = vectors / np.maximum(norms, 1e-12)
        return out


def check_agreement(onnx: OnnxEncoder, torch_encoder, texts: Sequence[str] = PROBES) -> float:
    """The smallest cosine between the two encoders' vectors of `texts`, as item texts and as queries;
    raises below MIN_AGREEMENT."""
    a = np.concatenate([onnx.encode(list(texts)), onnx.encode_queries(list(texts))])
    b = np.concatenate([torch_encoder.encode(list(texts)), torch_encoder.encode_queries(list(texts))])
    worst = float(np.min(np.sum(a * b, axis=1)))
    if worst < MIN_AGREEMENT:
        raise RelkitError(f"the ONNX export of the encoder '{onnx.model_name}' disagrees with the torch encoder "
                          f"(cosine {worst:.4f} < {MIN_AGREEMENT})")
    return worst


def service_encoder(artifacts: Path, encoder: str, student: str):
    """The encoder a service uses for `encoder`: its ONNX export, or None (the torch encoder, loaded
    by the feature builder) when the workspace has none yet, said once in the log with the fix."""
    folder = encoder_folder(artifacts, encoder)
    if has_export(folder):
        # ONNX Runtime's threads as it sets them (one per core): with one, an unseen query's request
        # cost a little less CPU but waited longer (p99 86 to 304 ms against 18 to 41 ms at 200
        # requests/s on two cores, alternated runs at load 2)
        return OnnxEncoder(folder)
    logger.warning("the encoder '%s' of %s has no ONNX export in %s: encoding with torch instead (slower, and "
                   "heavier in memory); run `relkit promote %s` again to export it", encoder, student,
                   folder.parent, student.removeprefix("student-"))
    return None

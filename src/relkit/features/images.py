"""Item image vectors from an image encoder: any transformers vision model (CLIP, SigLIP, ViT,
DINOv2, ...), a local path or a hub id.

Each item's `image` (a local path or an http(s) URL, read as `relkit caption` reads it) is encoded
once per (encoder, image) and cached in the workspace table `image_vectors`; a local file is
encoded again when its size or modification time changes. An image that cannot be had (missing,
not an image, a timeout) is recorded with its reason and counts as no image (a zero vector and
`has_image` 0); it is tried again by the next command that may write the workspace.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from relkit.errors import RelkitError
from relkit.logs import progress

DEFAULT_IMAGE_ENCODER = "openai/clip-vit-base-patch32"


class ImageEncoder:
    """Unit image embeddings: the model's image features where it has them (CLIP's projection),
    else its pooled output, else the mean of its last hidden states."""

    def __init__(self, model: str = DEFAULT_IMAGE_ENCODER, batch_size: int = 16):
        from transformers import AutoImageProcessor, AutoModel

        from relkit.hf import quiet

        quiet()
        self.name, self.batch_size = model, batch_size
        try:
            self.processor = AutoImageProcessor.from_pretrained(model)
            self.model = AutoModel.from_pretrained(model).eval()
        except (OSError, ValueError) as e:
            raise RelkitError(f"cannot load the image encoder '{model}': not a local model folder, and the hub "
                              f"could not provide it (offline, or no such model): {e}") from None
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            from PIL import Image

            self._dim = self.encode([Image.new("RGB", (32, 32))]).shape[1]
        return self._dim

    def encode(self, images: list) -> np.ndarray:
        import torch

        out = []
        for start in range(0, len(images), self.batch_size):
            pixels = self.processor(images=images[start:start + self.batch_size], return_tensors="pt")["pixel_values"]
            with torch.inference_mode():
                if hasattr(self.model, "get_image_features"):
                    result = self.model.get_image_features(pixel_values=pixels)
                else:
                    result = self.model(pixel_values=pixels)
                if not isinstance(result, torch.Tensor):
                    pooled = getattr(result, "pooler_output", None)
                    result = pooled if pooled is not None else result.last_hidden_state.mean(dim=1)
            out.append(result.reshape(len(pixels), -1).float().numpy())
        vectors = np.concatenate(out) if out else np.zeros((0, self._dim or 0), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0).astype(np.float32)


def _stamp(source: str) -> str:
    """What tells a changed image under the same name: size and mtime of a local file; a URL is
    taken as unchanging."""
    if source.startswith(("http://", "https://")):
        return ""
    try:
        st = Path(source).stat()
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def item_image_vectors(ws, images: list[str | None], encoder: ImageEncoder, timeout: float = 10.0,
                       max_bytes: int = 20_000_000) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (n, d), has_image (n,)) for the items' image sources, in order."""
    from relkit.captions import ImageUnavailable, decode_image, fetch_image

    sources = sorted({s for s in images if s})
    cached: dict[str, tuple[str, list | None]] = {}
    if sources and ws.has_table("image_vectors"):
        for image, stamp, vector in ws.fetchall("SELECT image, stamp, vector FROM image_vectors WHERE model = ?",
                                                [encoder.name]):
            cached[image] = (stamp, vector)
    writable = not ws.read_only
    todo = [s for s in sources if s not in cached or cached[s][0] != _stamp(s) or (writable and cached[s][1] is None)]
    found = {s: cached[s][1] for s in sources if s not in todo}
    rows = []
    bar = progress(total=len(todo), enabled=bool(todo), desc="encoding item images", unit="image")
    for start in range(0, len(todo), encoder.batch_size):
        batch, pictures, errors = todo[start:start + encoder.batch_size], [], {}
        for source in batch:
            try:
                pictures.append((source, decode_image(fetch_image(source, timeout, max_bytes))))
            except ImageUnavailable as e:
                errors[source] = str(e)
        vectors = encoder.encode([p for _, p in pictures]) if pictures else []
        for (source, _), vector in zip(pictures, vectors):
            found[source] = vector.tolist()
            rows.append((encoder.name, source, _stamp(source), found[source], None))
        for source, error in errors.items():
            found[source] = None
            rows.append((encoder.name, source, _stamp(source), None, error))
        bar.update(len(batch))
    bar.close()
    if rows and writable:
        import pyarrow as pa

        columns = [list(c) for c in zip(*rows)]
        with ws.registered("_image_vectors", dict(zip(("model", "image", "stamp", "vector", "error"), columns)),
                           {"vector": pa.list_(pa.float32())}), ws.transaction():
            ws.run("INSERT OR REPLACE INTO image_vectors SELECT model, image, stamp, vector, error FROM _image_vectors")
    dim = encoder.dim
    out = np.zeros((len(images), dim), dtype=np.float32)
    has = np.zeros(len(images), dtype=np.float32)
    for n, source in enumerate(images):
        vector = found.get(source) if source else None
        if vector is not None:
            if len(vector) != dim:
                raise RelkitError(f"the cached vector of image {source} has {len(vector)} values, the encoder "
                                  f"'{encoder.name}' gives {dim}")
            out[n], has[n] = vector, 1.0
    return out, has

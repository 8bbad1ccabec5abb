"""Synthetic image captions: any Hugging Face image-to-text model over the items' images.

Each item's `image` is a local path (relative to the working directory) or an http(s) URL. The
bytes are read (URLs with a timeout and a size cap), hashed, and captioned once per (content,
model): the same picture under two items, or in a second run, is not captioned again. An image
that cannot be had (missing file, not an image, timeout, too large, HTTP error) is recorded with
its reason in `item_captions.error`; it never stops the run. The caption reaches the item text as
the field `caption` (the `item_records` view).
"""
from __future__ import annotations

import hashlib
import io
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from relkit.errors import RelkitError
from relkit.logs import progress
from relkit.workspace import Workspace

DEFAULT_CAPTIONER = "Salesforce/blip-image-captioning-base"


@dataclass(frozen=True)
class CaptionResult:
    items: int          # items with an image
    captioned: int      # new captions generated (distinct images)
    cached: int         # items whose image already had a caption from this model
    failed: int         # items whose image could not be read
    unchanged: int      # items skipped: same image, same model, already done

    def summary(self) -> str:
        return (f"{self.items:,} items with an image: {self.captioned:,} images captioned, {self.cached:,} from the "
                f"cache, {self.unchanged:,} already done, {self.failed:,} unreadable (see item_captions.error)")


class ImageUnavailable(Exception):
    """The image could not be had; the message says why."""


def fetch_image(source: str, timeout: float = 10.0, max_bytes: int = 20_000_000) -> bytes:
    """The bytes of a local file or an http(s) URL, or ImageUnavailable."""
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=timeout) as response:
                data = response.read(max_bytes + 1)
        except urllib.error.HTTPError as e:
            raise ImageUnavailable(f"HTTP {e.code}") from None
        except TimeoutError:
            raise ImageUnavailable(f"timed out after {timeout:g} s") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                raise ImageUnavailable(f"timed out after {timeout:g} s") from None
            raise ImageUnavailable(f"cannot fetch: {reason}") from None
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageUnavailable("no such file")
        if path.stat().st_size > max_bytes:
            raise ImageUnavailable(f"larger than {max_bytes:,} bytes")
        data = path.read_bytes()
    if len(data) > max_bytes:
        raise ImageUnavailable(f"larger than {max_bytes:,} bytes")
    return data


def decode_image(data: bytes):
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ImageUnavailable(f"not an image ({type(e).__name__})") from None
    return image.convert("RGB")


class Captioner:
    """A Hugging Face image-to-text model (BLIP, GIT, ...), local path or hub id."""

    def __init__(self, model: str = DEFAULT_CAPTIONER, device: str = "cpu", max_new_tokens: int = 30,
                 prompt: str | None = None):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from relkit.hf import quiet

        quiet()
        self.name, self.device, self.max_new_tokens, self.prompt = model, device, max_new_tokens, prompt
        try:
            self.processor = AutoProcessor.from_pretrained(model)
            self.model = AutoModelForImageTextToText.from_pretrained(model).to(device).eval()
        except (OSError, ValueError) as e:
            raise RelkitError(f"cannot load the captioning model '{model}': not a local model folder, and the hub "
                              f"could not provide it (offline, or no such model): {e}") from None

    def caption(self, images: list) -> list[str]:
        import torch

        kwargs = {"images": images, "return_tensors": "pt"}
        if self.prompt:
            kwargs["text"] = [self.prompt] * len(images)
        inputs = self.processor(**kwargs).to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return [" ".join(t.split()) for t in self.processor.batch_decode(out, skip_special_tokens=True)]


def caption_items(ws: Workspace, model: str = DEFAULT_CAPTIONER, batch_size: int = 8, timeout: float = 10.0,
                  max_bytes: int = 20_000_000, redo: bool = False,
                  captioner_factory: Callable[[str], Captioner] | None = None) -> CaptionResult:
    """Caption every item's image with `model`; items already captioned by it from the same image
    are skipped unless `redo`. Work is written batch by batch, so an interrupted run keeps what it did."""
    rows = ws.fetchall("""
        SELECT i.item_id, i.image, ic.image, ic.model, ic.error FROM items i
        LEFT JOIN item_captions ic USING (item_id)
        WHERE i.image IS NOT NULL AND trim(i.image) <> '' ORDER BY i.item_id""")
    todo = [(r[0], r[1]) for r in rows if redo or r[2] != r[1] or r[3] != model or r[4] is not None]
    known = {h for (h,) in ws.fetchall("SELECT image_hash FROM captions WHERE model = ?", [model])}
    captioner = None
    captioned = cached = failed = 0
    bar = progress(total=len(todo), desc="captioning", unit="item")
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        records, pending = [], {}  # pending: image hash -> decoded image, once per distinct image
        for item_id, source in chunk:
            try:
                data = fetch_image(source, timeout, max_bytes)
                digest = hashlib.sha256(data).hexdigest()
                if digest not in known and digest not in pending:
                    pending[digest] = decode_image(data)
                cached += digest in known
                records.append((item_id, source, digest, None))
            except ImageUnavailable as e:
                failed += 1
                records.append((item_id, source, None, str(e)))
        new = []
        if pending:
            if captioner is None:
                captioner = (captioner_factory or Captioner)(model)
            digests = list(pending)
            new = list(zip(digests, captioner.caption([pending[d] for d in digests])))
            captioned += len(new)
        with ws.transaction():
            if new:
                ws.con.executemany("INSERT OR REPLACE INTO captions VALUES (?, ?, ?)",
                                   [(d, model, text) for d, text in new])
            ws.con.executemany("INSERT OR REPLACE INTO item_captions VALUES (?, ?, ?, ?, ?, ?)",
                               [(i, s, d, model, err, datetime.now()) for i, s, d, err in records])
        known.update(d for d, _ in new)
        bar.update(len(chunk))
    bar.close()
    return CaptionResult(items=len(rows), captioned=captioned, cached=cached, failed=failed,
                         unchanged=len(rows) - len(todo))

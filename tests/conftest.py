import csv
import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from relkit import LabelScale, Workspace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture
def ws(tmp_path):
    with Workspace.create(tmp_path / "ws") as workspace:
        yield workspace


@pytest.fixture
def ws3(tmp_path):
    """A workspace with a 3-level scale, gains 0, 1, 3."""
    scale = LabelScale(names=("bad", "fair", "good"), gains=(0, 1, 3))
    with Workspace.create(tmp_path / "ws3", scale) as workspace:
        yield workspace


def write_csv(path: Path, header: list[str], rows: list[list], encoding: str = "utf-8") -> Path:
    with open(path, "w", newline="", encoding=encoding) as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def shared_file(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} is not here (the real datasets live in ../shared/data beside the project)")
    return path


def head_lines(src: Path, dst: Path, n_records: int) -> Path:
    """The header and first n records of a real CSV (records may span lines)."""
    with open(src, newline="", encoding="utf-8") as f, open(dst, "w", newline="", encoding="utf-8") as out:
        reader, writer = csv.reader(f), csv.writer(out)
        for i, row in enumerate(reader):
            if i > n_records:
                break
            writer.writerow(row)
    return dst


def write_png(path: Path, seed: int, size: tuple[int, int] = (40, 50)) -> Path:
    """A real PNG of random pixels (a different picture per seed)."""
    import numpy as np
    from PIL import Image

    pixels = (np.random.default_rng(seed).random((*size, 3)) * 255).astype("uint8")
    Image.fromarray(pixels).save(path, format="PNG")
    return path

"""The student's features and scores on a fixed workspace with every feature group, as arrays:
what tests/test_feature_groups.py compares with the copy kept in tests/data/features/ (written by
running this file, `python tests/feature_snapshot.py`), and a saved student to load there.

Only the interface that serving and saved students rely on is read here (blocks, the item table,
pairs, pair scalars, inline items, the fast scorer), so the snapshot outlives changes inside the
feature builder.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "features"
GROUPS = ("embedding", "bm25", "text_match", "engagement", "graph", "visual")
QUERIES = ["red chair", "Red Chair ", "blue lamp", "the", "", "sturdy saw painted green", "red stuff",
           "green garden hose", "black rug"]
INLINE = [{"title": "red chair", "description": "a sturdy chair painted red"},
          {"title": "Red oak chair", "item_id": "new-1"},
          {"title": "blue lamp", "description": "lamp", "board_titles": ["lamps", "blue things"]},
          {"title": "nothing here"}]


def shop_with_everything(tmp_path: Path):
    """The test shop with an engagement log (clicks, saves, several queries per item) and images for
    a third of its items; the tiny CLIP as image encoder. Returns (workspace, FeatureConfig)."""
    from PIL import Image

    from conftest import ITEMS, make_shop, write_csv
    from relkit import import_file
    from relkit.student import FeatureConfig
    from tiny_models import build_clip

    ws = make_shop(tmp_path)
    rows = []
    for n, (query, items) in enumerate((("red stuff", ["red-chair", "red-table", "red-lamp"]),
                                        ("red chair", ["red-chair", "blue-chair", "red-lamp"]),
                                        ("Red Chair ", ["red-chair"]),
                                        ("blue things", ["blue-table", "blue-lamp", "blue-drill"]),
                                        ("green saw", ["green-saw", "green-hose"]))):
        for m, item in enumerate(items):
            rows.append([query, item, str(40 + 7 * n + m), str(3 + n + m), str(m % 2), "2026-01-01"])
    rows.append(["lamp", "black-lamp", "90", "0", "0", "2026-01-02"])        # seen, never engaged with
    import_file(ws, "engagement", write_csv(tmp_path / "e.csv", ["query", "item_id", "impressions", "clicks",
                                                                 "saves", "timestamp"], rows))
    pictures = []
    for n, (item_id, title, description) in enumerate(ITEMS[::3]):
        path = tmp_path / f"{item_id}.png"
        Image.new("RGB", (32, 32), (20 * n % 256, 255 - 15 * n, 90)).save(path)
        pictures.append([item_id, title, description, str(path)])
    import_file(ws, "items", write_csv(tmp_path / "items.csv", ["item_id", "title", "description", "image"], pictures))
    return ws, FeatureConfig(groups=GROUPS, graph_dim=4, image_encoder=str(build_clip(tmp_path)))


def random_student(builder, scale, seed: int = 0):
    """A student with random weights over the builder's blocks (a trained one would tie the
    snapshot to torch's training arithmetic, which is not what is compared here)."""
    from relkit.student.model import Student, StudentMeta

    rng = np.random.default_rng(seed)
    width = sum(w for _, w in builder.blocks())
    sizes = [width, 8, scale.k]
    weights = {"mean": rng.normal(size=width).astype(np.float32),
               "std": rng.uniform(0.5, 2.0, size=width).astype(np.float32)}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        weights[f"w{i}"] = (rng.normal(size=(n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)
        weights[f"b{i}"] = rng.normal(size=n_out).astype(np.float32)
    meta = StudentMeta(scale=scale, features=builder.config.to_dict(), blocks=builder.blocks(), hidden=[8],
                       cutpoints=[1.5, 2.4], config={"product_rank": 0})
    return Student(meta, weights)


def snapshot(ws, builder, student) -> dict[str, np.ndarray]:
    from relkit.student import FastScorer

    items = builder.items
    out = {"blocks": np.array([f"{n}:{w}" for n, w in builder.blocks()]),
           "config": np.array(json.dumps(builder.config.to_dict(), sort_keys=True)),
           "item_ids": np.array(items.item_ids), "item_vectors": items.vectors, "item_extra": items.extra}
    ids = list(items.item_ids)
    queries = [q for q in QUERIES for _ in ids]
    f = builder.pairs(queries, ids * len(QUERIES))
    out.update(query_vectors=f.query_vectors, query_index=f.query_index, item_rows=f.item_rows, pair=f.pair)
    rows = np.array([5, 0, 17, 5, 31, 2])
    table = builder.inline_items(INLINE)
    out.update(inline_vectors=table.vectors, inline_extra=table.extra)
    scorer = FastScorer(student, builder)
    for n, query in enumerate(QUERIES):
        qv = builder.query_vectors([query])[0]
        out[f"scalars_{n}"] = builder.pair_scalars(query, qv, rows, cosine=False)
        out[f"inline_{n}"] = builder.pair_scalars(query, qv, np.arange(len(INLINE)), items=table)
        out[f"inline_nocos_{n}"] = builder.pair_scalars(query, qv, np.arange(len(INLINE)), items=table, cosine=False)
        out[f"fast_{n}"] = scorer.score(query, ids)
        ranked = scorer.rank(query, ["red-chair", "blue-lamp", *INLINE, "green-saw"], top_k=5)
        out[f"rank_ids_{n}"] = np.array([r.item_id for r in ranked])
        out[f"rank_scores_{n}"] = np.array([r.score for r in ranked])
        out[f"rank_levels_{n}"] = np.array([r.level for r in ranked])
    out["proba"] = student.predict_proba(f, builder)
    return out


def build(tmp_path: Path):
    from relkit.student import FeatureBuilder

    ws, config = shop_with_everything(tmp_path)
    builder = FeatureBuilder.from_workspace(ws, config)
    return ws, builder


if __name__ == "__main__":      # writes tests/data/features/ (or the folder given)
    import tempfile

    sys.path.insert(0, str(HERE))
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DATA
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        ws, builder = build(Path(tmp))
        student = random_student(builder, ws.scale)
        np.savez(target / "snapshot.npz", **snapshot(ws, builder, student))
        student.save(target / "student")
        ws.close()
    print(f"wrote {target}")

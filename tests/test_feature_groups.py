"""The feature groups against a snapshot taken from an earlier layout of the code
(tests/data/features/, written by tests/feature_snapshot.py): a saved student must keep reading
and scoring as it did.

What the text and log arithmetic gives (BM25, text match, engagement, the layout) must be equal to
the bit; what comes out of a neural network (the MiniLM and tiny CLIP vectors, the ALS graph
vectors and the scores that read them) is compared to 1e-6, as another CPU's BLAS may round them
differently.
"""
import json
import shutil

import numpy as np
import pytest

import feature_snapshot
from relkit.student import FastScorer, FeatureBuilder, FeatureConfig, Student

EXACT = {"blocks", "item_ids", "query_index", "item_rows", "inline_extra"}
NEURAL_PAIR_COLUMNS = {"cosine"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    ws, builder = feature_snapshot.build(tmp_path_factory.mktemp("snapshot"))
    yield ws, builder
    ws.close()


def compare(name: str, got: np.ndarray, want: np.ndarray, pair_names: list[str] | None = None) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype, name
    exact = name in EXACT or name.startswith(("scalars_", "inline_nocos_", "rank_ids_", "rank_levels_"))
    if got.dtype.kind in "USi" or exact:
        np.testing.assert_array_equal(got, want, err_msg=name)
    elif pair_names is not None:
        for n, column in enumerate(pair_names):
            if column in NEURAL_PAIR_COLUMNS:
                np.testing.assert_allclose(got[:, n], want[:, n], atol=1e-6, err_msg=f"{name}: {column}")
            else:
                np.testing.assert_array_equal(got[:, n], want[:, n], err_msg=f"{name}: {column}")
    else:
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6, err_msg=name)


def test_features_and_scores_match_the_snapshot(built):
    ws, builder = built
    want = dict(np.load(feature_snapshot.DATA / "snapshot.npz"))
    student = feature_snapshot.random_student(builder, ws.scale)
    got = feature_snapshot.snapshot(ws, builder, student)
    assert sorted(got) == sorted(want)
    config, saved_config = json.loads(str(got.pop("config"))), json.loads(str(want.pop("config")))
    # the snapshot predates named tokenizations (its texts were read as English): on this English shop
    # the default, each text in its language, must give the same arrays
    assert config.pop("tokenization") == "by-language" and "tokenization" not in saved_config
    # the image encoder's path is a temporary folder
    assert {**config, "image_encoder": None} == {**saved_config, "image_encoder": None}
    pair_names = builder.pair_names()
    for name, array in want.items():
        with_cosine = name == "pair" or name.startswith("inline_") and not name.startswith("inline_nocos_") \
            and name not in ("inline_vectors", "inline_extra")
        columns = pair_names if with_cosine else None
        compare(name, got[name], array, columns)


def test_a_student_saved_earlier_loads_and_scores_the_same(built, tmp_path):
    ws, builder = built
    path = shutil.copytree(feature_snapshot.DATA / "student", tmp_path / "student")
    meta = json.loads((path / "relkit.json").read_text())
    meta["features"]["image_encoder"] = builder.config.image_encoder      # where the tiny CLIP is now
    (path / "relkit.json").write_text(json.dumps(meta))
    student = Student.load(path)
    assert [tuple(b) for b in student.meta.blocks] == builder.blocks()
    rebuilt = FeatureBuilder.from_workspace(ws, student.feature_config())
    want = np.load(feature_snapshot.DATA / "snapshot.npz")
    ids = list(rebuilt.items.item_ids)
    for n, query in enumerate(feature_snapshot.QUERIES):
        np.testing.assert_allclose(FastScorer(student, rebuilt).score(query, ids), want[f"fast_{n}"], atol=1e-6)


def test_a_new_group_is_one_class_and_one_registry_entry(shop, monkeypatch):
    """A group written outside relkit, registered by name: the builder lays it out, a student's
    blocks name it, and the fast scorer and the dense path agree on it, with no other change."""
    from relkit.student.groups import REGISTRY, FeatureGroup

    class Lengths(FeatureGroup):
        name = "lengths"
        pair_names = ("query_words",)

        def __init__(self, words):
            self.words = words

        @classmethod
        def build(cls, catalog):
            return cls(np.array([[len(t.split())] for t in catalog.texts], dtype=np.float32))

        def item_blocks(self):
            return [("item_words", 1)]

        def item_columns(self):
            return self.words

        def pair_columns(self, query, query_vector, items, rows):
            return [np.full(len(rows), len(query.split()), dtype=np.float32)]

    monkeypatch.setitem(REGISTRY, "lengths", Lengths)
    builder = FeatureBuilder.from_workspace(shop, FeatureConfig(groups=("bm25", "lengths")))
    assert builder.blocks() == [("item_words", 1), ("bm25", 1), ("log1p_bm25", 1), ("query_words", 1)]
    ids = list(builder.items.item_ids)
    f = builder.pairs(["red chair"] * len(ids), ids)
    np.testing.assert_array_equal(f.pair[:, 2], 2.0)
    row = builder.items.position["red-chair"]
    assert builder.items.extra[row, 0] == 7          # "red chair" and "a sturdy chair painted red"
    student = feature_snapshot.random_student(builder, shop.scale)
    np.testing.assert_allclose(FastScorer(student, builder).score("red chair", ids), student.predict_proba(f, builder),
                               atol=1e-6)
    ranked = FastScorer(student, builder).rank("red chair", ["red-chair", {"title": "red oak chair"}])
    assert {r.item_id for r in ranked} == {"red-chair", "inline-1"}

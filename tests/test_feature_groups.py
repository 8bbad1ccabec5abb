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
from relkit.student import FastScorer, FeatureBuilder, Student

EXACT = {"blocks", "item_ids", "query_index", "item_rows", "inline_extra"}
NEURAL_PAIR_COLUMNS = {"cosine"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    ws, builder = feature_snapshot.build(tmp_path_factory.mktemp("snapshot"))
    yield ws, builder
    ws.close()


def compare(name: str, got: np.ndarray, want: np.ndarray, pair_names: list[str] | None = None) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype, name
    if got.dtype.kind in "USi" or name in EXACT or name.startswith(("scalars_", "rank_ids_", "rank_levels_")):
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
    assert {**config, "image_encoder": None} == {**saved_config, "image_encoder": None}   # its path is a temporary folder
    pair_names = [n for n, w in builder.blocks()][-len(builder.pair_names()):]
    for name, array in want.items():
        columns = pair_names if name == "pair" else pair_names if name.startswith("inline_") and array.ndim == 2 \
            and array.shape[1] == len(pair_names) else None
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

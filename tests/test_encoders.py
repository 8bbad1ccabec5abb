"""One bi-encoder per workspace: a workspace on another encoder than the default (a tiny BERT built from
a config, whose folder declares e5-style prefixes) uses it in every stage, and refuses a student made
on another encoder until it is distilled again."""
import hashlib
import json

import numpy as np
import pytest

from conftest import make_shop, relkit, write_teacher_labels
from relkit import RelkitError
from relkit.features.embeddings import (DEFAULT_ENCODER, KNOWN_ENCODERS, PREFIX_FILE, Encoder, StaleEncoder,
                                        encoder_name, encoder_spec, set_workspace_encoder, workspace_encoder)
from relkit.workspace import Workspace
from tiny_models import build

PREFIXES = {"query_prefix": "query: ", "text_prefix": "item: "}   # words of the tiny tokenizer


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A tiny BERT folder (random weights) with a relkit-encoder.json declaring its prefixes."""
    folder = build("bert", tmp_path_factory.mktemp("models"))
    (folder / PREFIX_FILE).write_text(json.dumps(PREFIXES))
    return folder


def by_hand(folder, texts):
    """Unit mean-pooled vectors of `texts` from transformers directly (what sentence-transformers does
    for a plain folder), without relkit."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(str(folder)), AutoModel.from_pretrained(str(folder)).eval()
    batch = tokenizer(list(texts), padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    vectors = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def sha(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def test_known_encoders_and_declared_prefixes(tiny_encoder, tmp_path):
    e5 = encoder_spec("multilingual-e5-small")
    assert (e5.source, e5.query_prefix, e5.text_prefix) == ("intfloat/multilingual-e5-small", "query: ", "passage: ")
    assert encoder_spec("intfloat/multilingual-e5-small").query_prefix == "query: "
    assert (encoder_spec(DEFAULT_ENCODER).query_prefix, encoder_spec(DEFAULT_ENCODER).text_prefix) == ("", "")
    # by the registry's exact names only: a hub id that merely contains 'e5' gets no prefix
    assert encoder_spec("someone/my-e5-small-copy").query_prefix == ""
    spec = encoder_spec(str(tiny_encoder))
    assert (spec.source, spec.query_prefix, spec.text_prefix) == (str(tiny_encoder), "query: ", "item: ")
    assert encoder_name(str(tiny_encoder)) == str(tiny_encoder.resolve())
    assert encoder_name("multilingual-e5-small") == "multilingual-e5-small" and set(KNOWN_ENCODERS) >= {"default"}
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / PREFIX_FILE).write_text('{"query_prefix": "q: ", "prefix": "x"}')
    with pytest.raises(RelkitError, match=f"{PREFIX_FILE}: expected an object with the strings query_prefix"):
        encoder_spec(str(broken))


def test_the_prefixes_reach_the_text_encoded(tiny_encoder):
    encoder = Encoder(str(tiny_encoder), device="cpu")
    queries, texts = ["red chair", "oak table lamp"], ["red chair", "garden hose reel"]
    np.testing.assert_allclose(encoder.encode_queries(queries), by_hand(tiny_encoder, ["query: red chair",
                                                                                       "query: oak table lamp"]),
                               atol=1e-5)
    np.testing.assert_allclose(encoder.encode(texts), by_hand(tiny_encoder, ["item: red chair",
                                                                             "item: garden hose reel"]), atol=1e-5)
    # the same words as a query and as an item text are two different vectors
    assert float(encoder.encode_queries(["red chair"])[0] @ encoder.encode(["red chair"])[0]) < 0.9999


@pytest.fixture
def multi(tmp_path, tiny_encoder):
    """The test shop, on the tiny encoder, with a rule teacher's labels."""
    ws = make_shop(tmp_path)
    assert set_workspace_encoder(ws, str(tiny_encoder)) == (DEFAULT_ENCODER, str(tiny_encoder))
    write_teacher_labels(ws)
    yield ws
    ws.close()


def test_every_stage_uses_the_workspaces_encoder(multi, tiny_encoder, tmp_path):
    from relkit import load_judged_pairs
    from relkit.annotation.queue import rank_pairs
    from relkit.audit.judges import make_judge
    from relkit.features.onnx_encoder import OnnxEncoder, encoder_folder
    from relkit.promotion import promote
    from relkit.serve.state import load_model
    from relkit.student.distill import Distiller
    from relkit.student.model import Student, StudentConfig
    from relkit.systems import make_system
    from relkit.teacher.train import TrainConfig, train_teacher
    from relkit.text import item_text
    from relkit.workspace import active_student

    ws, name = multi, str(tiny_encoder)
    assert workspace_encoder(ws) == name
    test = load_judged_pairs(ws, "test")
    item_texts = [item_text(r) for r in test.items]

    # the embedding baseline: cosines of the prefixed query and item text
    scores = make_system("embedding", ws).predict(test).scores
    q = by_hand(tiny_encoder, ["query: " + s for s in test.queries])
    t = by_hand(tiny_encoder, ["item: " + s for s in item_texts])
    np.testing.assert_allclose(scores, np.sum(q * t, axis=1), atol=1e-5)
    # its item vectors are cached under the encoder's name, keyed by the text as encoded (prefix included)
    stored = dict(ws.fetchall("SELECT text_hash, len(vector) FROM text_vectors WHERE model = ?", [name]))
    assert {sha("item: " + s) for s in item_texts} <= set(stored) and set(stored.values()) == {32}
    assert ws.count("text_vectors") == len(stored)           # nothing under the default encoder

    # the teacher's prior: fit on the workspace's encoder, and recorded with it
    teacher = train_teacher(ws, TrainConfig(model=name, name="t", epochs=1, batch_size=8, max_length=32,
                                            prior_features="cosine"), stop_after=0)
    prior = json.loads((teacher.path / "relkit.json").read_text())["prior"]
    assert prior["model"] == name

    # the student: its features on the encoder (32-wide vectors), the encoder recorded
    student = Distiller(ws, "rule").train(None, StudentConfig(epochs=2, hidden=(8,)))
    saved = Student.load(student.save(ws.artifacts / "student-multi"))
    assert saved.feature_config().encoder == name
    assert [tuple(b) for b in saved.meta.blocks][:3] == [("query_vector", 32), ("item_vector", 32),
                                                        ("query_item_product", 32)]
    assert make_system("student:multi", ws).predict(test).proba.shape == (len(test), 3)

    # the promoted service's ONNX export: the prefixes in its metadata, and in what it encodes
    assert promote(ws, "multi") == "student-multi"
    export = encoder_folder(ws.artifacts, name)
    meta = json.loads((export / "encoder.json").read_text())
    assert (meta["encoder"], meta["query_prefix"], meta["text_prefix"], meta["dim"]) == (name, "query: ", "item: ", 32)
    onnx = OnnxEncoder(export)
    np.testing.assert_allclose(onnx.encode_queries(["red chair"]), by_hand(tiny_encoder, ["query: red chair"]),
                               atol=1e-5)
    ws.release()   # the service opens the workspace read-only, as a process of its own would
    model = load_model(ws.path, active_student(ws.path))
    assert model.builder.config.encoder == name and isinstance(model.builder.encoder, OnnxEncoder)
    np.testing.assert_allclose(model.builder.query_vectors(["blue lamp"]), by_hand(tiny_encoder, ["query: blue lamp"]),
                               atol=1e-5)

    # the annotation queue's cold start: queries cached as queries (their prefix), under the encoder
    rank_pairs(ws, {"cold": 1}, seed=1)
    queries = [q for (q,) in ws.fetchall("SELECT query FROM queries")]
    stored = {h for (h,) in ws.fetchall("SELECT text_hash FROM text_vectors WHERE model = ?", [name])}
    assert {sha("query: " + q) for q in queries} <= stored and ws.count("text_vectors") == len(stored)

    # audit judges through the student, on the same encoder
    judge = make_judge("student:multi", ws)
    pairs = list(zip(test.query_ids[:3], [i["item_id"] for i in test.items[:3]]))
    np.testing.assert_allclose(judge.judge(ws, pairs).sum(axis=1), 1.0, atol=1e-6)


def test_a_changed_encoder_refuses_stale_students(multi, tiny_encoder):
    from relkit.audit.judges import make_judge
    from relkit.promotion import promote
    from relkit.serve.state import load_model
    from relkit.student.distill import Distiller
    from relkit.student.features import FeatureBuilder, FeatureConfig
    from relkit.student.model import Student, StudentConfig
    from relkit.systems import make_system
    from relkit.workspace import active_student

    ws, name = multi, str(tiny_encoder)
    Distiller(ws, "rule").train(None, StudentConfig(epochs=1, hidden=(8,))).save(ws.artifacts / "student-old")
    plain = Distiller(ws, "rule", FeatureConfig(groups=("bm25", "text_match")))
    plain.train(None, StudentConfig(epochs=1, hidden=(8,))).save(ws.artifacts / "student-plain")
    promote(ws, "old")
    assert set_workspace_encoder(ws, DEFAULT_ENCODER) == (name, DEFAULT_ENCODER)
    fix = r"distilled again \(`relkit distill`, then `relkit promote`\)"
    for refused in (lambda: make_system("student:old", ws), lambda: promote(ws, "old"),
                    lambda: make_judge("student:old", ws),
                    lambda: ws.release() or load_model(ws.path, active_student(ws.path)),
                    lambda: FeatureBuilder.from_workspace(ws, Student.load(ws.artifacts / "student-old")
                                                          .feature_config()),
                    lambda: Distiller(ws, "rule", FeatureConfig(encoder=name))):
        with pytest.raises(StaleEncoder, match=f"'{name}', but the workspace .*'s encoder is 'default'.*{fix}"):
            refused()
    with pytest.raises(StaleEncoder, match="the student student-old was made on the bi-encoder"):
        make_system("student:old", ws)
    # a student without bi-encoder features reads no vector: it goes on working
    assert make_system("student:plain", ws).name == "student:plain"
    # a new student is made on the new encoder (384-wide MiniLM vectors); going back needs no recomputing
    fresh = Distiller(ws, "rule").train(None, StudentConfig(epochs=1, hidden=(8,)))
    assert fresh.feature_config().encoder == DEFAULT_ENCODER and tuple(fresh.meta.blocks[0]) == ("query_vector", 384)
    set_workspace_encoder(ws, name)
    assert make_system("student:old", ws).name == "student:old"


def test_init_sets_and_changes_the_encoder(tmp_path, tiny_encoder):
    ws_dir = tmp_path / "ws"
    made = relkit("init", ws_dir, "--encoder", tiny_encoder)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().endswith(f"encoder {tiny_encoder.resolve()}")
    with Workspace.open(ws_dir) as ws:
        assert workspace_encoder(ws) == str(tiny_encoder.resolve())
    refused = relkit("init", ws_dir, "--encoder", "default", "--levels", "4")
    assert refused.returncode == 2 and "give --encoder alone to change its encoder" in refused.stderr
    changed = relkit("init", ws_dir, "--encoder", "multilingual-e5-small")
    assert changed.returncode == 0, changed.stderr
    assert f"is now multilingual-e5-small (was {tiny_encoder.resolve()})" in changed.stdout
    with Workspace.open(ws_dir) as ws:
        assert workspace_encoder(ws) == "multilingual-e5-small"
    again = relkit("init", tmp_path / "plain")
    assert again.returncode == 0 and "encoder" not in again.stdout
    with Workspace.open(tmp_path / "plain") as ws:
        assert workspace_encoder(ws) == DEFAULT_ENCODER and ws.get_meta("encoder") is None


def test_an_encoder_folder_whose_weights_change_is_refused(tmp_path):
    """Vectors are cached by the encoder's name: a folder retrained in place would mix old vectors
    (and the students and priors made from them) with new ones, so relkit refuses it, by name, in a
    writable and a read-only workspace, and takes the old weights back."""
    import shutil

    from relkit.features.embeddings import cached_vectors, weights_stamp

    folder = build("bert", tmp_path / "models")
    kept = tmp_path / "kept"
    shutil.copytree(folder, kept)
    assert weights_stamp("default") is None and weights_stamp("multilingual-e5-small") is None
    assert weights_stamp("someone/some-hub-model") is None
    first = weights_stamp(str(folder))
    assert first == weights_stamp(str(kept))            # the weights, not the path or the time

    ws = make_shop(tmp_path)
    texts = ["red chair", "blue lamp"]
    before = cached_vectors(ws, str(folder), texts)
    assert ws.get_meta(f"encoder_weights:{folder}") == first

    # the same folder retrained in place: other weights, same name
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(folder))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    model.save_pretrained(str(folder))
    assert weights_stamp(str(folder)) != first
    with pytest.raises(RelkitError, match=f"the encoder {folder} has other weights") as raised:
        cached_vectors(ws, str(folder), texts + ["green desk"])
    assert "--encoder NEW_FOLDER" in str(raised.value)
    ws.close()
    with Workspace.open(ws.path, read_only=True) as ro, pytest.raises(RelkitError, match="other weights"):
        cached_vectors(ro, str(folder), texts)

    # the old weights back: the cache serves again, as before
    shutil.rmtree(folder)
    shutil.copytree(kept, folder)
    with Workspace.open(ws.path) as again:
        np.testing.assert_array_equal(cached_vectors(again, str(folder), texts), before)

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import ITEMS, write_csv, write_teacher_labels
from relkit import RelkitError, Workspace, import_file, load_judged_pairs, make_system
from relkit.cli import app
from relkit.features.embeddings import Encoder, text_hash
from relkit.student import FastScorer, FeatureBuilder, FeatureConfig, Scored, Student, StudentConfig
from relkit.student.distill import Distiller, scaling_curve
from relkit.student.features import DEFAULT_GROUPS
from relkit.student.model import assemble, torch_student


class CountingEncoder(Encoder):
    def __init__(self):
        super().__init__()
        self.texts: list[str] = []

    def encode(self, texts, bar=False):
        self.texts += list(texts)
        return super().encode(texts, bar)


def by_hand(pairs, proba: np.ndarray, levels: np.ndarray) -> dict:
    """accuracy and QWK of `levels`, argmax accuracy and nDCG@10 (per query, then averaged) of a
    3-level prediction of judged pairs, by numpy and scikit-learn: what relkit's figures are checked against."""
    from sklearn.metrics import cohen_kappa_score, ndcg_score

    y, queries = np.asarray(pairs.labels), np.asarray(pairs.query_ids)
    gain = y - 1                                  # the default 3-level scale: gains 0, 1, 2
    score = proba @ np.arange(3)                  # the ranking score: the expected gain
    ndcg = [ndcg_score([gain[queries == q]], [score[queries == q]], k=10)
            for q in dict.fromkeys(pairs.query_ids) if gain[queries == q].max() > 0]
    return {"accuracy": float(np.mean(levels == y)),
            "qwk": float(cohen_kappa_score(y, levels, labels=[1, 2, 3], weights="quadratic")),
            "argmax_accuracy": float(np.mean(proba.argmax(axis=1) + 1 == y)), "ndcg@10": float(np.mean(ndcg))}


def test_features_have_known_values(shop):
    enc = CountingEncoder()
    fb = FeatureBuilder.from_workspace(shop, FeatureConfig(groups=("embedding", "bm25", "text_match")), encoder=enc)
    assert fb.blocks() == [("query_vector", 384), ("item_vector", 384), ("query_item_product", 384), ("cosine", 1),
                           ("bm25", 1), ("log1p_bm25", 1), ("title_coverage", 1), ("text_coverage", 1),
                           ("exact_phrase", 1)]
    f = fb.pairs(["red chairs", "red chairs", "red chairs", "the lamp"], ["red-chair", "blue-chair", "green-saw", "red-lamp"])
    cosine, bm, log_bm, title, text, phrase = f.pair.T
    np.testing.assert_allclose(title, [1.0, 0.5, 0.0, 1.0])    # "chairs" stems to chair; "the" is a stopword
    np.testing.assert_allclose(text, [1.0, 0.5, 0.0, 1.0])
    np.testing.assert_allclose(phrase, [0, 0, 0, 0])           # "red chairs" is not in "red chair"
    assert bm[0] > bm[1] > 0 and bm[2] == 0 and np.allclose(log_bm, np.log1p(bm))
    q = enc.encode(["red chairs"])[0]
    items = enc.encode(["red chair\na sturdy chair painted red", "green saw\na sturdy saw painted green"])
    np.testing.assert_allclose(cosine[[0, 2]], items @ q, atol=1e-5)
    assert fb.pairs(["red chair"], ["red-chair"]).pair[0, 5] == 1.0   # the whole query, as a phrase
    assert f.query_vectors.shape == (2, 384) and f.query_index.tolist() == [0, 0, 0, 1]


def test_a_teachers_text_match_features_are_the_students(shop):
    """The teacher's prior computes text match per pair, the student over the catalog's postings:
    the same values for the same pairs."""
    from relkit.features.text_match import match_features
    from relkit.text import DEFAULT_TEMPLATE, item_text
    from relkit.workspace import ITEM_RECORD_COLUMNS

    fb = FeatureBuilder.from_workspace(shop, FeatureConfig(groups=("text_match",)))
    queries = ["red chairs", "red chair", "the lamp", "sturdy saw", "painted green saw", "", "chair red"] * 2
    ids = ["red-chair", "red-chair", "red-lamp", "green-saw", "green-saw", "red-chair", "red-chair"] + \
        ["blue-chair", "green-saw", "red-chair", "red-lamp", "blue-chair", "green-saw", "red-lamp"]
    records = {r[0]: dict(zip(ITEM_RECORD_COLUMNS, r))
               for r in shop.fetchall(f"SELECT {', '.join(ITEM_RECORD_COLUMNS)} FROM item_records")}
    texts = [item_text(records[i], DEFAULT_TEMPLATE) for i in ids]
    expected = fb.pairs(queries, ids).pair
    np.testing.assert_allclose(match_features(queries, texts, [records[i]["title"] for i in ids]), expected)
    assert expected[:, 2].sum() >= 2 and (expected[:, 0] != expected[:, 1]).any()   # phrases; title != text


def test_item_vectors_are_cached_and_refreshed_when_text_changes(shop):
    first = CountingEncoder()
    FeatureBuilder.from_workspace(shop, encoder=first)
    assert len(first.texts) == len(ITEMS) and shop.count("text_vectors") == len(ITEMS)
    second = CountingEncoder()
    FeatureBuilder.from_workspace(shop, encoder=second)
    assert second.texts == []
    shop.run("UPDATE items SET title = 'red garden hose' WHERE item_id = 'red-chair'")
    third = CountingEncoder()
    fb = FeatureBuilder.from_workspace(shop, encoder=third)
    assert third.texts == ["red garden hose\na sturdy chair painted red"]
    row = fb.items.position["red-chair"]
    np.testing.assert_allclose(fb.items.vectors[row], third.encode(["red garden hose\na sturdy chair painted red"])[0],
                               atol=1e-6)
    shop.run("UPDATE items SET title = 'blue garden hose' WHERE item_id = 'red-chair'")
    shop.close()
    with Workspace.open(shop.path, read_only=True) as ro:      # encodes what is missing, writes nothing
        fourth = CountingEncoder()
        fb = FeatureBuilder.from_workspace(ro, encoder=fourth)
        assert fourth.texts[-1] == "blue garden hose\na sturdy chair painted red"
        np.testing.assert_allclose(fb.items.vectors[row], fourth.encode([fourth.texts[-1]])[0], atol=1e-6)
        assert ro.count("text_vectors") == len(ITEMS) + 1      # the first change's text was stored, not this one
        assert ro.fetchone("SELECT count(*) FROM text_vectors WHERE text_hash = ?",
                           [text_hash("red garden hose\na sturdy chair painted red")])[0] == 1


def test_engagement_rates(shop, tmp_path):
    log = write_csv(tmp_path / "e.csv", ["query", "item_id", "impressions", "clicks", "saves", "timestamp"], [
        ["red chair", "red-chair", "80", "20", "8", "2026-01-01"],
        ["Red Chair ", "red-chair", "20", "0", "2", "2026-01-02"],
        ["lamp", "blue-lamp", "100", "0", "0", "2026-01-02"],
    ])
    import_file(shop, "engagement", log)
    fb = FeatureBuilder.from_workspace(shop, FeatureConfig(groups=("engagement",), ctr_prior=20.0))
    g_ctr, g_save = 20 / 200, 10 / 200
    item = fb.items.extra[fb.items.position["red-chair"]]
    np.testing.assert_allclose(item, [(20 + 20 * g_ctr) / 120, (10 + 20 * g_save) / 120, np.log1p(100)], rtol=1e-5)
    np.testing.assert_allclose(fb.items.extra[fb.items.position["green-saw"]], [0, 0, 0])
    pair = fb.pairs(["red chair", "blue chair"], ["red-chair", "red-chair"]).pair
    np.testing.assert_allclose(pair[0], item, rtol=1e-5)      # all of red-chair's log is for "red chair"
    np.testing.assert_allclose(pair[1], [0, 0, 0])           # no log for this query


def test_item_graph_vectors_from_co_engagement(shop, tmp_path):
    rows = [[q, item, "40", "3", "2026-01-01"] for q, items in (
        ("red stuff", ["red-chair", "red-table", "red-lamp"]), ("red things", ["red-chair", "red-lamp", "red-drill"]),
        ("blue stuff", ["blue-chair", "blue-table", "blue-lamp"]), ("blue things", ["blue-table", "blue-lamp", "blue-drill"]))
        for item in items]
    rows.append(["green stuff", "green-saw", "90", "0", "2026-01-01"])      # seen, never engaged with
    import_file(shop, "engagement", write_csv(tmp_path / "e.csv", ["query", "item_id", "impressions", "clicks",
                                                                   "timestamp"], rows))
    fb = FeatureBuilder.from_workspace(shop, FeatureConfig(groups=("graph",), graph_dim=4))
    assert fb.blocks() == [("item_graph", 4)] and fb.items.extra.shape == (len(ITEMS), 4)
    v = {i: fb.items.extra[fb.items.position[i]] for i in ("red-chair", "red-lamp", "red-drill", "blue-lamp", "green-saw")}
    assert np.linalg.norm(v["red-chair"]) == pytest.approx(1.0, abs=1e-5)
    assert v["red-chair"] @ v["red-lamp"] > 0.9 and v["red-chair"] @ v["red-drill"] > 0.5   # engaged from the same queries
    assert abs(v["red-chair"] @ v["blue-lamp"]) < 0.2                                         # from none in common
    assert not v["green-saw"].any()
    key = fb.config.graph_key
    assert key and shop.fetchone("SELECT count(*) FROM graph_vectors WHERE key = ?", [key])[0] == 8

    # a model keeps the embedding it was trained with after the log grows; the new log gets another key
    import_file(shop, "engagement", write_csv(tmp_path / "e2.csv", ["query", "item_id", "impressions", "clicks",
                                                                    "timestamp"], [["red stuff", "blue-lamp", "5", "5", "2026-01-02"]]))
    again = FeatureBuilder.from_workspace(shop, fb.config)
    np.testing.assert_array_equal(again.items.extra, fb.items.extra)
    assert FeatureBuilder.from_workspace(shop, FeatureConfig(groups=("graph",), graph_dim=4)).config.graph_key != key
    with pytest.raises(RelkitError, match="graph embedding 'feedbeef' the model was trained with is not in the workspace"):
        FeatureBuilder.from_workspace(shop, FeatureConfig(groups=("graph",), graph_key="feedbeef"))


def test_graph_features_need_engaged_items(shop):
    with pytest.raises(RelkitError, match="graph features need engagement with clicks"):
        FeatureBuilder.from_workspace(shop, FeatureConfig(groups=("bm25", "graph")))


def test_item_image_vectors(shop, tmp_path):
    from PIL import Image

    from relkit.features.images import ImageEncoder
    from tiny_models import build_clip

    red, blue, broken = tmp_path / "red.png", tmp_path / "blue.jpg", tmp_path / "broken.png"
    Image.new("RGB", (40, 30), (220, 20, 20)).save(red)
    Image.new("RGB", (32, 32), (20, 20, 220)).save(blue)
    broken.write_bytes(b"not a picture")
    images = {"red-chair": red, "red-lamp": red, "blue-lamp": blue, "green-saw": broken,
              "black-rug": tmp_path / "gone.png"}
    import_file(shop, "items", write_csv(tmp_path / "items.csv", ["item_id", "title", "description", "image"], [
        [i, t, d, str(images[i])] for i, t, d in ITEMS if i in images]))

    class Counting(ImageEncoder):
        def encode(self, pictures):
            self.seen = getattr(self, "seen", 0) + len(pictures)
            return super().encode(pictures)

    encoder = Counting(str(build_clip(tmp_path)))
    config = FeatureConfig(groups=("visual",), image_encoder=encoder.name)
    fb = FeatureBuilder.from_workspace(shop, config, image_encoder=encoder)
    assert fb.blocks() == [("item_image", 16), ("has_image", 1)] and fb.config.image_dim == 16
    row = lambda i: fb.items.extra[fb.items.position[i]]  # noqa: E731
    np.testing.assert_allclose(row("red-chair")[:16], encoder.encode([Image.open(red).convert("RGB")])[0], atol=1e-5)
    np.testing.assert_array_equal(row("red-chair"), row("red-lamp"))                # one picture, one vector
    assert row("red-chair")[16] == 1 and row("blue-lamp")[16] == 1 and abs(row("blue-lamp")[:16] @ row("red-chair")[:16]) < 0.999
    for unreadable in ("green-saw", "black-rug", "green-chair"):                     # not an image, missing, none
        assert not row(unreadable).any()
    assert shop.fetchall("SELECT image, vector IS NULL, error FROM image_vectors ORDER BY image") == [
        (str(blue), False, None), (str(broken), True, "not an image (UnidentifiedImageError)"),
        (str(tmp_path / "gone.png"), True, "no such file"), (str(red), False, None)]

    # cached: a second build encodes nothing (the unreadable two are read again, and fail again);
    # a file that changed on disk is encoded again
    encoder.seen = 0
    FeatureBuilder.from_workspace(shop, fb.config, image_encoder=encoder)
    assert encoder.seen == 0
    Image.new("RGB", (32, 32), (20, 220, 20)).save(blue)
    again = FeatureBuilder.from_workspace(shop, fb.config, image_encoder=encoder)
    assert encoder.seen == 1 and not np.allclose(again.items.extra[again.items.position["blue-lamp"]], row("blue-lamp"))
    path = shop.path
    shop.close()
    with Workspace.open(path, read_only=True) as ro:                                 # as the service reads it
        served = FeatureBuilder.from_workspace(ro, fb.config, image_encoder=encoder)
        np.testing.assert_array_equal(served.items.extra, again.items.extra)
    with pytest.raises(RelkitError, match="cannot load the image encoder 'no/such-model'"):
        ImageEncoder("no/such-model")


def test_a_student_with_image_features_scores_alike_on_every_path(shop, tmp_path):
    from PIL import Image

    from tiny_models import build_clip

    rows = []
    for n, (item_id, title, description) in enumerate(ITEMS[:12]):
        path = tmp_path / f"{item_id}.png"
        Image.new("RGB", (32, 32), (20 * n, 255 - 20 * n, 90)).save(path)
        rows.append([item_id, title, description, str(path)])
    import_file(shop, "items", write_csv(tmp_path / "items.csv", ["item_id", "title", "description", "image"], rows))
    write_teacher_labels(shop)
    config = FeatureConfig(groups=("bm25", "text_match", "visual"), image_encoder=str(build_clip(tmp_path)))
    distiller = Distiller(shop, "rule", config)
    student = distiller.train(None, StudentConfig(epochs=3, hidden=(16,)))
    saved = Student.load(student.save(tmp_path / "student"))
    assert saved.feature_config().image_dim == 16 and ("has_image", 1) in [tuple(b) for b in saved.meta.blocks]
    fb = FeatureBuilder.from_workspace(shop, saved.feature_config())
    with_image = np.isin(fb.items.item_ids, [r[0] for r in rows])
    assert fb.items.extra[with_image, 16].all() and not fb.items.extra[~with_image].any()
    items = [i for i, _, _ in ITEMS]
    fast = FastScorer(saved, fb).score("red chair", items)
    np.testing.assert_allclose(fast, saved.predict_proba(fb.pairs(["red chair"] * len(items), items), fb), atol=1e-5)


def test_student_classifier_on_a_plain_matrix():
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError

    from relkit.student import StudentClassifier

    rng = np.random.default_rng(0)

    def data(n_queries):
        x = rng.normal(size=(n_queries * 10, 6)).astype(np.float32)
        levels = np.digitize(x[:, 0] + 0.5 * x[:, 1], [-0.8, 0.0, 0.8]) + 1          # levels 1..4 from two columns
        return x, levels, np.repeat([f"q{i}" for i in range(n_queries)], 10)

    x, y, _ = data(80)
    dev = data(20)
    test_x, test_y, _ = data(20)
    clf = StudentClassifier(levels=4, hidden=(16,), epochs=30, patience=30, lr=0.01).fit(x, y, eval_set=dev)
    proba = clf.predict_proba(test_x)
    assert proba.shape == (200, 4) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert (clf.predict(test_x) == test_y).mean() > 0.8 and list(clf.classes_) == [1, 2, 3, 4]
    soft = np.full((len(x), 4), 0.1, dtype=np.float32)
    soft[np.arange(len(x)), y - 1] = 0.7                                              # a teacher's soft labels
    twin = clone(clf).fit(x, soft, sample_weight=np.ones(len(x)), eval_set=dev)
    assert twin.get_params() == clf.get_params() and (twin.predict(test_x) == test_y).mean() > 0.8
    with pytest.raises(RelkitError, match="eval_set"):
        StudentClassifier(levels=4).fit(x, y)
    with pytest.raises(RelkitError, match=r"y: expected 800 levels, each a whole number 1..4"):
        StudentClassifier(levels=4).fit(x, y + 1, eval_set=dev)
    with pytest.raises(RelkitError, match="6 columns"):
        clf.predict_proba(test_x[:, :3])
    with pytest.raises(NotFittedError):
        StudentClassifier().predict(test_x)
    # the estimator contract: fit returns self and leaves the parameters as given; a clone is unfitted
    params = clf.get_params()
    fresh = StudentClassifier(levels=4, hidden=(16,), epochs=2)
    assert fresh.fit(x, y, eval_set=dev) is fresh and clf.get_params() == params
    assert clf.n_features_in_ == 6 and clf.score(test_x, test_y) == (clf.predict(test_x) == test_y).mean()
    with pytest.raises(NotFittedError):
        clone(clf).predict_proba(test_x)
    assert clone(clf).set_params(epochs=3, hidden=(8, 4)).get_params()["hidden"] == (8, 4)
    with pytest.raises(ValueError, match="Invalid parameter 'colour'"):
        clf.set_params(colour="red")


# the scikit-learn checks that apply: `fit` needs an eval_set (its early stopping) and levels 1..K,
# which the fitting checks, made for fit(X, y) with any labels, do not give
@pytest.mark.parametrize("check", [
    "check_no_attributes_set_in_init", "check_parameters_default_constructible", "check_get_params_invariance",
    "check_set_params", "check_estimators_unfitted", "check_estimator_cloneable", "check_estimator_repr",
    "check_mixin_order", "check_do_not_raise_errors_in_init_or_set_params", "check_estimator_tags_renamed",
    "check_valid_tag_types"])
def test_student_classifier_passes_the_estimator_checks(check):
    from sklearn.utils import estimator_checks

    from relkit.student import StudentClassifier

    getattr(estimator_checks, check)("StudentClassifier", StudentClassifier(levels=3, hidden=(8,), epochs=2))


def test_student_learns_the_teachers_labels(shop):
    n = write_teacher_labels(shop)
    distiller = Distiller(shop, "rule")
    assert distiller.available == n
    student = distiller.train(None, StudentConfig(human_weight=0.0, epochs=60, patience=15, seed=1))
    assert student.meta.data["teacher_pairs"] == n and student.meta.data["human_pairs"] == 0
    metrics = distiller.test(student)
    assert metrics["accuracy"] >= 0.9 and metrics["ndcg@10"] >= 0.95
    saved = Student.load(student.save(shop.artifacts / "student-rule"))
    features = distiller.builder.pairs(["green door"], ["green-door"])
    np.testing.assert_allclose(saved.predict_proba(features, distiller.builder),
                               student.predict_proba(features, distiller.builder))
    assert saved.predict_levels(saved.predict_proba(features, distiller.builder)).tolist() == [3]


def write_hedging_labels(ws: Workspace, name: str = "hedge") -> int:
    """Soft labels that put at least half the mass on level 1 (a cautious teacher, as a teacher
    trained on data where most pairs are irrelevant is): the argmax is always 1, yet the expected
    level still orders the rule's levels (1.15, 1.5, 1.7)."""
    return write_teacher_labels(ws, name, {1: [0.9, 0.05, 0.05], 2: [0.6, 0.3, 0.1], 3: [0.6, 0.1, 0.3]})


def test_student_cutpoints_fit_on_dev_where_argmax_says_the_majority(shop, tmp_path):
    write_hedging_labels(shop)
    distiller = Distiller(shop, "hedge", FeatureConfig(groups=("bm25", "text_match")))
    config = StudentConfig(human_weight=0.0, epochs=60, patience=15, seed=1)
    student = distiller.train(None, config)
    cuts = student.meta.cutpoints
    assert len(cuts) == 2 and cuts[0] < cuts[1]                     # K-1 increasing cutpoints on the expected level
    dev = student.meta.metrics["dev"]
    assert dev["argmax_qwk"] in (None, 0.0) and dev["qwk"] > 0.5     # argmax says level 1 of every pair
    saved = Student.load(student.save(tmp_path / "s"))
    assert json.loads((saved.path / "relkit.json").read_text())["cutpoints"] == cuts
    test = distiller.test(saved)
    assert test["argmax_accuracy"] == pytest.approx(np.mean(distiller.test_pairs.labels == 1))
    assert test["qwk"] > 0.5 and test["qwk"] > (test["argmax_qwk"] or 0.0) + 0.4
    proba = np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.6, 0.1, 0.3]])
    assert saved.predict_levels(proba).tolist() == [1, 2, 3]        # the teacher's three kinds of pair, told apart
    argmax = distiller.train(None, StudentConfig(human_weight=0.0, epochs=60, patience=15, seed=1, decision="argmax"))
    assert argmax.meta.cutpoints is None and argmax.predict_levels(proba).tolist() == [1, 1, 1]
    with pytest.raises(RelkitError, match="decision is cutpoints or argmax"):
        StudentConfig(decision="median")


def test_a_saved_student_has_a_model_card(shop, tmp_path):
    n = write_teacher_labels(shop)
    distiller = Distiller(shop, "rule", FeatureConfig(groups=("embedding", "bm25", "text_match")))
    student = distiller.train(None, StudentConfig(epochs=3, hidden=(16,), label_temperature=0.5, human_weight=0.5))
    card = (student.save(tmp_path / "s") / "README.md").read_text()
    flat = " ".join(card.split())
    assert card.startswith("# relkit student")
    for section in ("## Features", "## Training data", "## Dev metrics", "## Test metrics", "## Speed"):
        assert section in card
    from relkit.labels import teacher_labels

    human = len(distiller.human.targets)
    teacher_queries, human_queries = len(set(teacher_labels(shop, "rule").queries)), len(set(distiller.human.queries))
    assert student.meta.data["teacher_queries"] == teacher_queries > 1
    assert f"`rule`'s soft labels of {n:,} train-split pairs of {teacher_queries:,} queries (sharpened at " \
           f"temperature 0.5)" in flat
    assert f"{human:,} human-labeled train pairs of {human_queries:,} queries (weight 0.5 each)" in flat
    assert "query_vector (384)" in card and "bi-encoder `default`" in card
    test = student.meta.metrics["test"]
    assert f"| qwk | {test['qwk']:.4f} |" in card and f"| argmax_qwk | {test['argmax_qwk']:.4f} |" in card
    speed = student.meta.data["speed"]
    test_queries = shop.fetchone("SELECT count(*) FROM splits WHERE split = 'test'")[0]
    assert (speed["candidates"], speed["queries"]) == (len(ITEMS), min(test_queries, 20))
    assert f"scores {len(ITEMS)} candidates for a query in {speed['p50_ms']:.2f} ms" in flat


def test_speed_is_the_percentiles_of_the_scoring_times(shop, monkeypatch):
    """measure_speed times each query's scoring `repeats` times: on a clock whose calls take 1, 2, ... 6 ms,
    p50 is 3.5 ms and p99 5.95 ms (numpy's linear interpolation: 5 + 0.95 x (6 - 5))."""
    import time

    from relkit.student.fast import measure_speed

    write_teacher_labels(shop)
    distiller = Distiller(shop, "rule", FeatureConfig(groups=("bm25", "text_match")))
    student = distiller.train(None, StudentConfig(epochs=1))
    ticks = iter(t for ms in (1, 2, 3, 4, 5, 6) for t in (ms * 10.0, ms * 10.0 + ms / 1000))   # start, end
    monkeypatch.setattr(time, "perf_counter", lambda: next(ticks))
    speed = measure_speed(student, distiller.builder, ["red chair", "blue lamp"], candidates=10, repeats=3)
    monkeypatch.undo()
    assert speed == pytest.approx({"candidates": 10, "queries": 2, "p50_ms": 3.5, "p99_ms": 5.95})
    assert next(ticks, None) is None      # every tick read: one start and one end per scoring


def test_label_temperature_sharpens_the_teachers_labels():
    from relkit.student.distill import sharpen

    p = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]], dtype=np.float32)
    assert sharpen(p, 1.0) is p
    sharp, soft = sharpen(p, 0.5), sharpen(p, 2.0)
    np.testing.assert_allclose(sharp.sum(axis=1), 1.0, rtol=1e-6)
    assert (sharp.max(axis=1) > p.max(axis=1)).all() and (soft.max(axis=1) < p.max(axis=1)).all()
    assert (sharp.argmax(axis=1) == p.argmax(axis=1)).all()
    with pytest.raises(RelkitError, match="label_temperature must be positive"):
        StudentConfig(label_temperature=0)


def test_scaling_curve_rows(shop):
    write_teacher_labels(shop)
    distiller = Distiller(shop, "rule", FeatureConfig(groups=("bm25", "text_match")))
    rows = scaling_curve(distiller, [50, None], StudentConfig(epochs=5, patience=5), prefix="c")
    assert [(r.name, r.teacher_pairs) for r in rows] == [("human", 0), ("50", 50), (str(distiller.available),
                                                                                      distiller.available)]
    assert all(r.human_pairs == len(distiller.human.targets) for r in rows)
    test = load_judged_pairs(shop, "test")
    for r in rows:    # each row's test figures are its saved student's
        prediction = make_system(f"student:c-{r.name}", shop).predict(test)
        expected = by_hand(test, prediction.proba, prediction.levels)
        assert {m: r.metrics[m] for m in expected} == pytest.approx(expected, abs=1e-9)
    assert sorted(p.name for p in shop.artifacts.glob("student-c-*")) == ["student-c-50", f"student-c-{distiller.available}",
                                                                          "student-c-human"]


@pytest.mark.parametrize("rank", [0, 4])
def test_fast_scorer_equals_the_student_and_its_torch_model(shop, tmp_path, rank):
    """Also for a student whose query-item-product weights have low rank (scored through factors)."""
    import torch

    import_file(shop, "engagement", write_csv(tmp_path / "e.csv", ["query", "item_id", "impressions", "clicks", "timestamp"], [
        ["red chair", "red-chair", "50", "9", "2026-01-01"], ["blue lamp", "red-chair", "30", "1", "2026-01-01"]]))
    write_teacher_labels(shop)
    distiller = Distiller(shop, "rule", FeatureConfig(groups=(*DEFAULT_GROUPS, "graph"), graph_dim=4))
    student = distiller.train(None, StudentConfig(epochs=3, hidden=(32, 16), product_rank=rank))
    fb = distiller.builder
    assert fb.items.extra.shape[1] == 3 + 4 and fb.items.extra[:, 3:].any()   # engagement rates, graph vector
    scorer = FastScorer(student, fb)
    d = fb.dim
    product_weights = student.layers[0][0][:, 2 * d:3 * d]
    assert np.linalg.matrix_rank(product_weights, tol=1e-4) == (rank or 32)
    assert (scorer.factors is not None) == bool(rank)
    items = [i for i, _, _ in ITEMS]
    fast = scorer.score("red chair", items)
    features = fb.pairs(["red chair"] * len(items), items)
    slow = student.predict_proba(features, fb)
    net, mean, std = torch_student(student)
    with torch.no_grad():
        x = torch.from_numpy(assemble(features, fb.items.vectors, fb.items.extra))
        by_torch = torch.softmax(net((x - mean) / std), dim=-1).numpy()
    np.testing.assert_allclose(fast, slow, atol=1e-5)
    np.testing.assert_allclose(by_torch, slow, atol=1e-5)
    assert np.abs(fast - fast.mean(axis=0)).max() > 1e-3          # it tells items apart


def test_a_student_saved_before_the_newer_feature_settings_still_loads(shop, tmp_path):
    write_teacher_labels(shop)
    distiller = Distiller(shop, "rule", FeatureConfig(groups=("bm25", "text_match")))
    path = distiller.train(None, StudentConfig(epochs=2)).save(tmp_path / "old")
    meta = json.loads((path / "relkit.json").read_text())
    for key in ("graph_dim", "graph_key", "image_encoder", "image_dim"):
        del meta["features"][key]
    (path / "relkit.json").write_text(json.dumps(meta))
    old = Student.load(path)
    fb = FeatureBuilder.from_workspace(shop, old.feature_config())
    items = [i for i, _, _ in ITEMS]
    np.testing.assert_allclose(FastScorer(old, fb).score("red chair", items),
                               FastScorer(Student.load(path), distiller.builder).score("red chair", items), atol=1e-6)


def test_mismatched_features_and_bad_student_folders_are_refused(shop, tmp_path):
    write_teacher_labels(shop)
    distiller = Distiller(shop, "rule", FeatureConfig(groups=("bm25", "text_match")))
    student = distiller.train(None, StudentConfig(epochs=1))
    other = FeatureBuilder.from_workspace(shop, FeatureConfig(groups=("bm25",)))
    with pytest.raises(RelkitError, match="do not match the student's.*title_coverage"):
        FastScorer(student, other)
    path = student.save(tmp_path / "s")
    (path / "weights.npz").unlink()
    with pytest.raises(RelkitError, match="not a saved student"):
        Student.load(path)
    with pytest.raises(RelkitError, match="unknown feature group"):
        FeatureConfig(groups=("bm25", "colour"))


def test_cli_distill_and_eval(shop):
    write_teacher_labels(shop)
    runner = CliRunner()
    ws = str(shop.path)
    shop.close()
    result = runner.invoke(app, ["distill", "--teacher", "rule", "--sizes", "100,all", "--groups", "bm25,text_match",
                                 "--set", "epochs=3", "--json", "-w", ws])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows][:2] == ["human", "100"] and rows[1]["teacher_pairs"] == 100
    assert (Path(ws) / "results" / "scaling-rule.json").is_file()         # for relkit report
    result = runner.invoke(app, ["distill", "--teacher", "rule", "--groups", "bm25,text_match", "--set", "epochs=3",
                                 "-w", ws])
    assert result.exit_code == 0 and "student-rule" in result.output
    assert "cutpoints accuracy" in result.output and "(argmax: " in result.output   # both decisions on dev
    result = runner.invoke(app, ["eval", "--system", "student:rule", "--system", "bm25", "--json", "-w", ws])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [s["name"] for s in report["systems"]] == ["student:rule", "bm25"]
    student = report["systems"][0]["metrics"]
    with Workspace.open(ws, read_only=True) as opened:
        test = load_judged_pairs(opened, "test")
        prediction = make_system("student:rule", opened).predict(test)
    expected = by_hand(test, prediction.proba, prediction.levels)
    assert {m: student[m] for m in expected} == pytest.approx(expected, abs=1e-9)
    argmax = prediction.proba.argmax(axis=1) + 1
    assert student["argmax_qwk"] == pytest.approx(by_hand(test, prediction.proba, argmax)["qwk"], abs=1e-9)
    result = runner.invoke(app, ["distill", "--teacher", "nobody", "-w", ws])
    assert result.exit_code == 2 and "teacher 'nobody' has labeled no train-split pairs" in result.output
    result = runner.invoke(app, ["distill", "--sizes", "10", "-w", ws])
    assert result.exit_code == 2 and "name a --teacher" in result.output


@pytest.mark.parametrize("rank", [0, 4])
def test_inline_items_score_as_their_catalog_twins(shop, rank):
    """An item given inline (not looked up) gets the same features, so the same probabilities, as the
    identical catalog item: BM25 with the catalog's statistics, text match, a freshly encoded vector."""
    write_teacher_labels(shop)
    distiller = Distiller(shop, "rule", FeatureConfig(groups=("embedding", "bm25", "text_match")))
    student = distiller.train(None, StudentConfig(epochs=3, hidden=(16,), product_rank=rank))
    scorer = FastScorer(student, distiller.builder)
    twins = ["red-chair", "blue-lamp", "green-saw"]
    records = [{"title": t, "description": d} for i, t, d in ITEMS if i in twins]
    inline = distiller.builder.inline_items(sorted(records, key=lambda r: twins.index(r["title"].replace(" ", "-"))))
    for query in ["red chair", "lamp", "sturdy green saw"]:
        np.testing.assert_allclose(scorer.score_rows(query, np.arange(3), items=inline), scorer.score(query, twins),
                                   atol=1e-5)
        np.testing.assert_allclose(distiller.builder.bm25.score_texts(query, inline.texts),
                                   distiller.builder.bm25.score(query, twins), rtol=1e-5)


def test_cli_distill_options_and_teacher_references(shop):
    """--set reaches every student option (human_weight too, which is also a flag; hidden as numbers),
    flags win over --set, a bad value is one line with exit status 2, and the teacher may be named as
    `relkit label` names it: NAME or teacher-NAME."""
    write_teacher_labels(shop)
    runner = CliRunner()
    ws = str(shop.path)
    shop.close()
    common = ["--groups", "bm25,text_match", "--set", "epochs=2", "-w", ws]
    result = runner.invoke(app, ["distill", "--teacher", "teacher-rule", "--name", "a", "--set", "human_weight=0.5",
                                 "--set", "hidden=16,8", *common])
    assert result.exit_code == 0, result.output
    meta = json.loads((shop.path / "artifacts" / "student-a" / "relkit.json").read_text())
    assert meta["teacher"] == "rule" and meta["hidden"] == [16, 8] and meta["config"]["human_weight"] == 0.5
    result = runner.invoke(app, ["distill", "--teacher", "rule", "--name", "b", "--human-weight", "0",
                                 "--set", "human_weight=0.5", *common])
    assert result.exit_code == 0, result.output
    meta = json.loads((shop.path / "artifacts" / "student-b" / "relkit.json").read_text())
    assert meta["config"]["human_weight"] == 0 and meta["data"]["human_pairs"] == 0
    for bad, message in ((["--set", "hidden=16,x"], "--set hidden: '16,x' is not comma-separated numbers"),
                         (["--set", "human_weight=lots"], "--set human_weight: 'lots' is not a valid float"),
                         (["--set", "colour=red"], "--set takes KEY=VALUE with KEY one of hidden, epochs")):
        result = runner.invoke(app, ["distill", "--teacher", "rule", *bad, *common])
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split()) and "Traceback" not in result.output


def test_rank_answers_typed_results_best_first(shop):
    """FastScorer.rank, what the service answers: catalog ids and inline records together, a repeated
    id once, best first, each result a Scored whose numbers are the scorer's own."""
    write_teacher_labels(shop)
    distiller = Distiller(shop, "rule", FeatureConfig(groups=("embedding", "bm25", "text_match")))
    student = distiller.train(None, StudentConfig(epochs=30, patience=30, hidden=(32,), human_weight=0.0))
    scorer = FastScorer(student, distiller.builder)
    inline = {"title": "red chair", "description": "a sturdy chair painted red"}
    ranked = scorer.rank("red chair", ["blue-lamp", "red-chair", inline, "blue-chair", "red-chair"])
    assert all(isinstance(hit, Scored) for hit in ranked) and len(ranked) == 4
    assert {ranked[0].item_id, ranked[1].item_id} == {"red-chair", "inline-2"} and ranked[-1].item_id == "blue-lamp"
    assert [hit.score for hit in ranked] == sorted((hit.score for hit in ranked), reverse=True)
    gains = np.asarray(student.scale.gains)
    for hit in ranked:
        assert hit.inline == (hit.item_id == "inline-2")
        assert hit.level == int(student.predict_levels(np.array([hit.probabilities]))[0])
        assert hit.score == pytest.approx(float(np.dot(hit.probabilities, gains)), abs=1e-4)
        if not hit.inline:
            np.testing.assert_allclose(hit.probabilities, scorer.score("red chair", [hit.item_id])[0], atol=1e-5)
    twin = next(hit for hit in ranked if hit.inline)
    np.testing.assert_allclose(twin.probabilities, next(h for h in ranked if h.item_id == "red-chair").probabilities,
                               atol=1e-5)
    assert scorer.rank("red chair", ["blue-lamp", "red-chair", inline, "blue-chair"], top_k=2) == ranked[:2]
    assert scorer.rank("red chair", [{**inline, "item_id": "mine"}])[0].item_id == "mine"
    assert scorer.rank("red chair", []) == []
    with pytest.raises(RelkitError, match="not in the workspace catalog"):
        scorer.rank("red chair", ["red-chair", "nope"])
    with pytest.raises(RelkitError, match="top_k"):
        scorer.rank("red chair", ["red-chair"], top_k=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ranked[0].score = 1.0
    with pytest.raises(ValueError, match="level 4"):
        Scored("x", 1.0, 4, (0.2, 0.3, 0.5))


def test_the_kept_epoch_is_the_best_by_the_chosen_dev_figure(shop):
    write_teacher_labels(shop)
    distiller = Distiller(shop, "rule", FeatureConfig(groups=("bm25", "text_match")))
    for select, best in (("log_loss", min), ("ndcg@10", max), ("auroc", max)):
        student = distiller.train(None, StudentConfig(epochs=12, patience=12, select=select, seed=2))
        history = student.meta.metrics["history"]
        assert len(history) == 12 and {"log_loss", "auroc", "ndcg@10", "accuracy"} <= set(history[0])
        chosen = history[student.meta.metrics["best_epoch"] - 1][select]
        assert chosen == best(h[select] for h in history)
    losses = [h["log_loss"] for h in history]
    assert losses[-1] < losses[0]                       # it learns: the dev log loss falls
    with pytest.raises(RelkitError, match="select is one of log_loss"):
        StudentConfig(select="mrr")

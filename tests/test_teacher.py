import json
import logging

import numpy as np
import pytest

from conftest import write_csv
from relkit import (LabelScale, RelkitError, SplitConfig, Workspace, evaluate, import_file, load_judged_pairs,
                    make_system, split_queries)
from relkit.config import from_dict
from relkit.teacher import Teacher, TeacherMeta, TextTemplate, TrainConfig, train_teacher
from relkit.teacher.model import TEMPLATES, encode_pairs, predict_ids
from relkit.teacher.train import load_base
from tiny_models import build

FAMILIES = ["bert", "xlm-roberta", "deberta-v2", "llama", "qwen2", "t5"]
COLORS, THINGS = ["red", "blue", "green"], ["chair", "table", "lamp", "hose", "drill", "door"]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")
    return {kind: build(kind, root) for kind in FAMILIES}


@pytest.fixture
def learnable(tmp_path):
    """Three levels a small model can learn: the item names the query's thing and color (3), its thing
    only (2), or another thing (1). Queries are split train / dev / test."""
    rows = []
    for color in COLORS:
        for thing in THINGS:
            other = THINGS[(THINGS.index(thing) + 1) % len(THINGS)]
            wrong = COLORS[(COLORS.index(color) + 1) % len(COLORS)]
            q = f"{color} {thing}"
            rows += [[q, f"{color} oak {thing}", "3"], [q, f"{wrong} metal {thing}", "2"],
                     [q, f"{color} steel {other}", "1"], [q, f"{wrong} {other} cord", "1"]]
    scale = LabelScale(names=("off", "partly", "exact"), gains=(0, 1, 2))
    ws = Workspace.create(tmp_path / "ws", scale)
    import_file(ws, "judgments", write_csv(tmp_path / "j.csv", ["query", "title", "label"], rows))
    split_queries(ws, SplitConfig(seed=1, dev=0.2, test=0.2))
    yield ws
    ws.close()


def pairs():
    return [("red chair", "red oak chair"), ("blue lamp", "green garden hose reel"), ("green drill", "drill bit")]


@pytest.mark.parametrize("kind", FAMILIES)
def test_each_family_round_trips(tiny, tmp_path, kind):
    """Fresh head on a tiny base, saved and loaded: the same probabilities for the same pairs."""
    model, tokenizer, family, _ = load_base(TrainConfig(model=str(tiny[kind])), 3, "cpu")
    expected_family = {"llama": "decoder", "qwen2": "decoder", "t5": "encoder-decoder"}.get(kind, "encoder")
    assert family == expected_family
    template = TextTemplate(query_prefix=TEMPLATES[family][0], item_prefix=TEMPLATES[family][1])
    ids = encode_pairs(tokenizer, template, [q for q, _ in pairs()], [i for _, i in pairs()], 32)
    before = predict_ids(model, tokenizer, ids)
    meta = TeacherMeta(base_model=str(tiny[kind]), family=family, scale=LabelScale.default(3), template=template,
                       max_length=32)
    Teacher(model, tokenizer, meta).save(tmp_path / "teacher")
    teacher = Teacher.load(tmp_path / "teacher")
    after = teacher.predict_proba(pairs())
    assert after.shape == (3, 3) and np.allclose(after.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(after, before, atol=1e-5)
    assert (tmp_path / "teacher" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "teacher" / "relkit.json").read_text())["family"] == family


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_decoders_read_the_last_real_token_with_lora(tiny, tmp_path, kind):
    model, tokenizer, family, _ = load_base(TrainConfig(model=str(tiny[kind]), lora=True), 3, "cpu")
    assert tokenizer.pad_token is not None and model.config.pad_token_id == tokenizer.pad_token_id
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and any("score" in n for n in trainable)
    assert not any("embed_tokens" in n for n in trainable)
    template = TextTemplate(query_prefix=TEMPLATES[family][0], item_prefix=TEMPLATES[family][1])
    short = encode_pairs(tokenizer, template, ["red chair"], ["oak"], 32)
    long = encode_pairs(tokenizer, template, ["red chair", "blue lamp steel door"], ["oak", "red oak chair table"], 32)
    # padding the short pair in a batch with a longer one must not change its prediction
    np.testing.assert_allclose(predict_ids(model, tokenizer, short)[0], predict_ids(model, tokenizer, long)[0],
                               atol=1e-5)
    meta = TeacherMeta(base_model="tiny", family=family, scale=LabelScale.default(3), template=template, max_length=32)
    Teacher(model, tokenizer, meta).save(tmp_path / "t")  # LoRA merged into plain weights
    np.testing.assert_allclose(Teacher.load(tmp_path / "t").predict_proba([("red chair", "oak")]),
                               predict_ids(model, tokenizer, short), atol=1e-5)


def test_training_learns_and_evaluates(learnable, tiny):
    config = TrainConfig(model=str(tiny["bert"]), name="tiny", epochs=12, batch_size=8, lr=3e-3, warmup=0.1,
                         eval_every=6, primary="ndcg@10", max_length=32, class_weights="sqrt", ordinal_weight=0.5)
    result = train_teacher(learnable, config)
    assert result.finished and result.path == learnable.artifacts / "teacher-tiny"
    losses = [h["dev_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    meta = json.loads((result.path / "relkit.json").read_text())
    assert meta["kind"] == "teacher" and meta["scale"]["names"] == ["off", "partly", "exact"]
    assert meta["config"]["lr"] == 3e-3 and meta["max_length"] == 32 and "ndcg@10" in meta["metrics"]
    assert (result.path / "README.md").is_file() and not (result.path / "checkpoint").exists()
    report = evaluate(learnable, [make_system("teacher:tiny", learnable), make_system("bm25", learnable)], "test")
    teacher = report.results[0].metrics
    assert teacher["accuracy"] is not None and teacher["qwk"] is not None
    assert meta["cutpoints"] is not None and len(meta["cutpoints"]) == 2
    assert {m["id"] for m in learnable.models()} == {"teacher-tiny"}


def run(ws, tiny, name, **kw):
    config = TrainConfig(model=str(tiny["bert"]), name=name, epochs=2, batch_size=8, lr=1e-3, eval_every=3,
                         checkpoint_every=2, max_length=32, seed=3)
    return train_teacher(ws, config, **kw)


def weights(path):
    from safetensors.numpy import load_file

    return load_file(str(path / "model.safetensors"))


def test_resume_gives_the_same_teacher(learnable, tiny):
    straight = run(learnable, tiny, "straight")
    part = run(learnable, tiny, "parts", stop_after=5)
    assert not part.finished and (part.path / "checkpoint" / "trainer.pt").is_file()
    done = train_teacher(learnable, resume="parts")
    assert done.finished and done.steps == straight.steps
    a, b = weights(straight.path), weights(done.path)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-5, err_msg=key)


def test_ctrl_c_leaves_a_checkpoint(learnable, tiny, caplog):
    class Interrupt(logging.Handler):   # Ctrl+C as the run says it evaluated step 6
        def emit(self, record):
            if record.getMessage().startswith("step 6"):
                raise KeyboardInterrupt

    config = TrainConfig(model=str(tiny["bert"]), name="stopped", epochs=2, batch_size=8, eval_every=3,
                         max_length=32)
    with pytest.raises(RelkitError, match="interrupted at step 6 of 12.*relkit teach --resume stopped"):
        caplog.set_level(logging.INFO, logger="relkit.teacher.train")
        interrupt = Interrupt()
        logging.getLogger("relkit.teacher.train").addHandler(interrupt)
        try:
            train_teacher(learnable, config)
        finally:
            logging.getLogger("relkit.teacher.train").removeHandler(interrupt)
    path = learnable.artifacts / "teacher-stopped"
    assert (path / "checkpoint" / "trainer.pt").is_file()
    assert Teacher.load(path).predict_proba(pairs()).shape == (3, 3)  # the best weights so far are usable
    done = train_teacher(learnable, resume="stopped")
    assert done.finished


def test_bad_model_and_config_fail_before_training(learnable, tiny, tmp_path):
    with pytest.raises(RelkitError, match="cannot load the model"):
        train_teacher(learnable, TrainConfig(model=str(tmp_path / "nothing"), name="x"))
    assert not (learnable.artifacts / "teacher-x").exists()
    from transformers import AutoModelForSequenceClassification
    five = AutoModelForSequenceClassification.from_pretrained(tiny["bert"], num_labels=5)
    five.save_pretrained(tmp_path / "five-head")
    with pytest.raises(RelkitError, match="already has a classification head for 5 labels"):
        train_teacher(learnable, TrainConfig(model=str(tmp_path / "five-head")))
    with pytest.raises(RelkitError, match="unknown primary metric 'ndcg@7'"):
        train_teacher(learnable, TrainConfig(model=str(tiny["bert"]), primary="ndcg@7"))
    with pytest.raises(RelkitError, match="unknown training option.*: colour"):
        from_dict(TrainConfig, {"colour": "red"}, "training option")
    with pytest.raises(RelkitError, match="class_weights is none, sqrt or inverse"):
        TrainConfig(class_weights="log")


def test_empty_train_split_and_missing_level(tmp_path, tiny):
    with Workspace.create(tmp_path / "w", LabelScale.default(3)) as ws:
        path = write_csv(tmp_path / "j.csv", ["query", "title", "label"],
                         [["red chair", "red oak chair", "3"], ["red chair", "blue lamp", "1"]])
        import_file(ws, "judgments", path, split="test")
        split_queries(ws)
        with pytest.raises(RelkitError, match="the train split has no judged pairs"):
            train_teacher(ws, TrainConfig(model=str(tiny["bert"])))
        more = write_csv(tmp_path / "k.csv", ["query", "title", "label"],
                         [["blue lamp", "blue lamp", "3"], ["blue lamp", "red door", "1"]])
        import_file(ws, "judgments", more, split="train")
        with pytest.raises(RelkitError, match=r"the train split has no judgment at level\(s\) 2"):
            train_teacher(ws, TrainConfig(model=str(tiny["bert"])))
        import_file(ws, "judgments", write_csv(tmp_path / "l.csv", ["query", "title", "label"],
                                               [["green door", "green door", "2"]]), split="train")
        with pytest.raises(RelkitError, match="the dev split has no judged pairs"):
            train_teacher(ws, TrainConfig(model=str(tiny["bert"])))
        assert list(ws.artifacts.iterdir()) == []


def test_query_batches_keep_queries_whole():
    from relkit.teacher.train import epoch_batches

    groups = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 3])
    batches = epoch_batches(len(groups), groups, 4, seed=5)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(groups)))
    assert all(len(b) <= 4 for b in batches)
    for g in (0, 1, 3):  # queries that fit in a batch are never split
        assert sum(any(groups[i] == g for i in b) for b in batches) == 1
    assert [b.tolist() for b in epoch_batches(len(groups), groups, 4, seed=5)] == [b.tolist() for b in batches]


def test_listnet_loss_prefers_the_true_order():
    import torch

    from relkit.teacher.loss import listnet_loss

    gains = torch.tensor([2.0, 0.0, 1.0, 1.0, 1.0])
    groups = torch.tensor([0, 0, 0, 1, 1])  # query 1 has one gain: no order to learn
    right, wrong = torch.tensor([3.0, 0.0, 1.0, 5.0, 0.0]), torch.tensor([0.0, 3.0, 1.0, 0.0, 5.0])
    assert listnet_loss(right, gains, groups) < listnet_loss(wrong, gains, groups)
    # by hand for query 0 alone: target softmax(2, 0, 1), prediction softmax(3, 0, 1)
    t, p = torch.softmax(gains[:3], 0), torch.log_softmax(right[:3], 0)
    assert float(listnet_loss(right, gains, groups)) == pytest.approx(float(-(t * p).sum()))


def test_listwise_training_runs(learnable, tiny):
    """listwise_weight reaches the loss: its term is nonzero on a query's items and moves the gradient, and
    two teachers trained with the same seed and the same batches of whole queries but different listwise
    weights end apart."""
    import torch

    from relkit.teacher.loss import TeacherLoss

    logits = torch.tensor([[0.0, 0.5, 2.0], [0.0, 2.0, 0.0], [2.0, 0.5, 0.0], [0.0, 1.0, 0.0]], requires_grad=True)
    targets, groups = torch.tensor([0, 1, 2, 1]), torch.tensor([0, 0, 0, 1])
    plain, listwise = TeacherLoss(learnable.scale), TeacherLoss(learnable.scale, listwise_weight=1.0)
    term = listwise.terms(logits, targets, groups)["listwise"]
    assert term > 0.1 and listwise.config["listwise_weight"] == 1.0
    torch.testing.assert_close(listwise(logits, targets, groups) - plain(logits, targets, groups), term)
    grads = [torch.autograd.grad(loss(logits, targets, groups), logits)[0] for loss in (plain, listwise)]
    assert (grads[0] - grads[1]).abs().max() > 1e-3

    def train(name, weight):
        config = TrainConfig(model=str(tiny["bert"]), name=name, epochs=2, batch_size=8, lr=1e-3, max_length=32,
                             listwise_weight=weight, prior="none")
        return train_teacher(learnable, config)

    one, two = train("lw", 1.0), train("lw2", 3.0)
    assert one.finished and [h["step"] for h in one.history] == [h["step"] for h in two.history]
    assert json.loads((one.path / "relkit.json").read_text())["loss"]["listwise_weight"] == 1.0
    assert abs(one.history[-1]["dev_loss"] - two.history[-1]["dev_loss"]) > 1e-4


def test_dev_sample_is_whole_queries(learnable):
    from relkit import load_judged_pairs
    from relkit.teacher.train import sample_queries

    train = load_judged_pairs(learnable, "train")
    sample = sample_queries(train, 3, seed=0)
    assert len(set(sample.query_ids)) == 3
    for q in set(sample.query_ids):  # every judgment of a sampled query comes along
        rows = [i for i, x in enumerate(sample.query_ids) if x == q]
        assert len(rows) == sum(1 for x in train.query_ids if x == q)
    assert sample_queries(train, 0, seed=0) is train


def test_teacher_of_another_scale_is_refused(learnable, tiny, tmp_path):
    config = TrainConfig(model=str(tiny["bert"]), name="s", epochs=0.2, batch_size=8, max_length=32)
    result = train_teacher(learnable, config)
    with Workspace.create(tmp_path / "other", LabelScale.default(3)) as other:
        with pytest.raises(RelkitError, match="trained on another label scale"):
            make_system(f"teacher:{result.path}", other)


def test_prior_fit_orders_the_levels():
    from relkit.teacher.prior import Prior

    rng = np.random.default_rng(0)
    labels = rng.integers(1, 4, size=600)
    cosine = 0.25 * labels + rng.normal(0, 0.1, size=600)
    prior = Prior.fit("default", cosine, labels, 3)
    weight = np.asarray(prior.weight)
    assert weight.shape == (1, 3) and weight[0, 0] < weight[0, 1] < weight[0, 2]
    proba = np.exp(prior.logits(np.array([0.25, 0.5, 0.75])))
    assert (proba.argmax(axis=1) == [0, 1, 2]).all()  # each level's typical cosine is read as that level


def test_text_match_prior_reads_the_title_apart_from_the_text():
    """A level that only the title's terms tell is learned by the text-match prior; a record's
    title is read as the title, and a plain text stands for its own title."""
    from relkit.teacher.prior import FEATURE_SETS, Prior

    queries = ["red chair", "red chair", "oak table", "oak table"] * 50
    texts = ["red chair. garden hose", "garden hose. red chair", "oak table. lamp", "lamp. oak table"] * 50
    titles = ["red chair", "garden hose", "oak table", "lamp"] * 50
    labels = np.array([2, 1, 2, 1] * 50)
    prior = Prior("default", [[0.0, 0.0]] * 4, [0.0, 0.0], list(FEATURE_SETS["cosine+match"]))
    x = prior.inputs(queries, texts, titles)
    np.testing.assert_array_equal(x[:4, 1:], [[1, 1, 1], [0, 1, 1], [1, 1, 1], [0, 1, 1]])
    fitted = Prior.fit("default", x, labels, 2, prior.features)
    assert (fitted.logits(x).argmax(axis=1) + 1 == labels).all()
    np.testing.assert_array_equal(prior.inputs(queries[:2], texts[:2])[:, 1], [1, 1])  # text as title


def test_a_text_match_prior_reads_each_text_in_its_language():
    """A prior cuts texts as its recorded tokenization says: by language (each text in the one given, or
    detected), or every text as English, which is how a prior saved before it was recorded reads."""
    from relkit.teacher.prior import FEATURE_SETS, Prior

    prior = Prior("default", [[0.0, 0.0]] * 4, [0.0, 0.0], list(FEATURE_SETS["cosine+match"]), "by-language")
    query, text = ["¿Dónde duermen los gatos de la casa?"], ["El gato duerme en la cocina de la casa vieja."]
    spanish = prior.inputs(query, text, languages=["es"])[0, 1:]
    # in Spanish 'duermen' and 'duerme' are one word, 'gatos' and 'gato' too, and 'los', 'de', 'la' are stopwords
    np.testing.assert_array_equal(spanish, [0.75, 0.75, 0.0])
    np.testing.assert_array_equal(prior.inputs(query, text)[0, 1:], spanish)   # the language detected
    as_english = Prior(**{**prior.to_dict(), "tokenization": "english"})
    np.testing.assert_array_equal(as_english.inputs(query, text, languages=["es"])[0, 1:], [0.5, 0.5, 0.0])
    saved_before = {key: value for key, value in prior.to_dict().items() if key != "tokenization"}
    assert Prior(**saved_before).tokenization == "english"
    with pytest.raises(RelkitError, match="a prior with tokenization 'jieba'"):
        Prior("default", [[0.0]], [0.0], ["cosine"], "jieba")
    with pytest.raises(RelkitError, match="tokenization is one of by-language, english"):
        TrainConfig(tokenization="jieba")


def test_a_cosine_prior_saved_in_the_old_layout_loads(learnable, tiny):
    """relkit.json files written before text-match priors held one weight per level (the cosine's)."""
    config = TrainConfig(model=str(tiny["bert"]), name="old", epochs=1, batch_size=8, max_length=32,
                         prior_features="cosine")
    result = train_teacher(learnable, config, stop_after=0)
    pairs_ = pairs()
    expected = Teacher.load(result.path).predict_proba(pairs_)
    meta_file = result.path / "relkit.json"
    meta = json.loads(meta_file.read_text())
    assert meta["prior"]["features"] == ["cosine"]
    meta["prior"] = {"model": "default", "weight": meta["prior"]["weight"][0], "bias": meta["prior"]["bias"]}
    meta_file.write_text(json.dumps(meta))
    np.testing.assert_allclose(Teacher.load(result.path).predict_proba(pairs_), expected, atol=1e-6)


def test_a_teacher_starts_from_the_bi_encoder_prior(learnable, tiny):
    """Before any step, a teacher with a prior ranks as the bi-encoder does (its own head is near zero);
    the prior is saved with it, and a loaded teacher adds it back."""
    from scipy.stats import spearmanr

    from relkit import load_judged_pairs
    from relkit.baselines import EmbeddingSystem

    config = TrainConfig(model=str(tiny["bert"]), name="p", epochs=1, batch_size=8, max_length=32,
                         prior_features="cosine")
    result = train_teacher(learnable, config, stop_after=0)
    assert result.steps == 0 and [h["step"] for h in result.history] == [0]
    meta = json.loads((result.path / "relkit.json").read_text())
    assert meta["prior"]["model"] == "default" and np.asarray(meta["prior"]["weight"]).shape == (1, 3)
    test = load_judged_pairs(learnable, "test")
    teacher = Teacher.load(result.path)
    expected = teacher.predict_proba(list(zip(test.queries, test.items))) @ np.arange(3)
    cosine = EmbeddingSystem().predict(test).scores
    assert spearmanr(expected, cosine).statistic > 0.95
    plain = train_teacher(learnable, TrainConfig(model=str(tiny["bert"]), name="plain", epochs=1, batch_size=8,
                                                 max_length=32, prior="none"),
                          stop_after=0)
    assert json.loads((plain.path / "relkit.json").read_text())["prior"] is None
    assert abs(spearmanr(Teacher.load(plain.path).predict_proba(list(zip(test.queries, test.items))) @ np.arange(3),
                         cosine).statistic) < 0.9


def test_prediction_uses_the_saved_item_text_template(learnable, tiny):
    """A teacher trained on titles alone reads only the title of a full item record."""
    config = TrainConfig(model=str(tiny["bert"]), name="titles", epochs=0.5, batch_size=8, max_length=32,
                         fields="title:3", prior="none")
    result = train_teacher(learnable, config)
    teacher = Teacher.load(result.path)
    assert teacher.meta.template.item_text.to_list() == [{"name": "title", "label": "", "max_words": 3}]
    record = {"title": "red oak chair table", "description": "green garden hose", "board_titles": ["lamp"]}
    np.testing.assert_allclose(teacher.predict_proba([("red chair", record)]),
                               teacher.predict_proba([("red chair", "red oak chair")]), atol=1e-6)


@pytest.mark.parametrize("kind", FAMILIES)
def test_first_token_forward_gives_the_models_logits(tiny, kind):
    """The scoring forward that computes the last layer for the first token only is used for BERT and
    XLM-R and gives their logits on a padded batch; other architectures keep their own forward."""
    import torch

    from relkit.teacher.fast import FirstTokenClassifier, logits_fn

    model, tokenizer, family, _ = load_base(TrainConfig(model=str(tiny[kind])), 4, "cpu")
    model.eval()
    template = TextTemplate(query_prefix=TEMPLATES[family][0], item_prefix=TEMPLATES[family][1])
    queries = ["red chair", "blue lamp", "green drill door", "oak"]
    items = ["red oak chair with metal legs", "lamp", "drill bit saw blade steel cord", "wooden table"]
    batch = tokenizer.pad({"input_ids": encode_pairs(tokenizer, template, queries, items, 32)}, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()   # the batch is padded
    assert FirstTokenClassifier.supports(model) == (kind in ("bert", "xlm-roberta"))
    with torch.inference_mode():
        expected = model(**batch).logits
        got = logits_fn(model)(batch["input_ids"], batch["attention_mask"])
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["minilm", "llama"])
def test_bf16_scoring_agrees_with_fp32(learnable, tiny, kind):
    """A teacher loaded for scoring in bf16 (the default on a GPU) holds bf16 weights and gives the fp32
    probabilities up to bf16 rounding, through the first-token forward (the real MiniLM) and the model's
    own (a tiny Llama); a bf16 teacher asked for ONNX Runtime exports from fp32 weights on the CPU."""
    import torch

    base = "default" if kind == "minilm" else str(tiny[kind])
    model, tokenizer, family, _ = load_base(TrainConfig(model=base), 3, "cpu")
    with torch.no_grad():  # a head with spread (as training gives), so levels are not ties rounding decides
        for name, p in model.named_parameters():
            if p.dim() == 2 and any(h in name for h in ("classifier", "score")):
                p.mul_(20)
    template = TextTemplate(query_prefix=TEMPLATES[family][0], item_prefix=TEMPLATES[family][1])
    path = learnable.artifacts / f"teacher-{kind}"
    Teacher(model, tokenizer, TeacherMeta(base_model=base, family=family, scale=learnable.scale,
                                          template=template, max_length=32)).save(path)
    judged = load_judged_pairs(learnable, "train")
    batch = list(zip(judged.queries, judged.items))
    fp32 = Teacher.load(path, device="cpu", precision="fp32")
    bf16 = Teacher.load(path, device="cpu", precision="bf16")
    assert next(fp32.model.parameters()).dtype == torch.float32
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    expected, got = fp32.predict_proba(batch, batch_size=8), bf16.predict_proba(batch, batch_size=8)
    assert got.dtype == np.float32 and np.allclose(got.sum(axis=1), 1, atol=1e-5)
    assert expected.std(axis=0).max() > 0.05              # the pairs are told apart
    assert np.abs(got - expected).max() < 0.05
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).mean() >= 0.95
    if kind == "minilm":
        bf16.use_onnx()
        assert next(bf16.model.parameters()).dtype == torch.float32
        np.testing.assert_allclose(bf16.predict_proba(batch, batch_size=8), expected, atol=1e-4)


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_onnx_export_is_torch_export_with_dynamic_batch_and_length(tiny, tmp_path, kind):
    """The ONNX file comes from torch.export (the TorchScript exporter is deprecated: a DeprecationWarning
    on every export), with batch and length dynamic: ONNX Runtime gives the model's own logits for batches
    of other sizes and lengths than the one it was exported with."""
    import warnings

    import onnx
    import onnxruntime
    import torch

    from relkit.teacher.export import export_onnx

    model, tokenizer, family, _ = load_base(TrainConfig(model=str(tiny[kind])), 3, "cpu")
    template = TextTemplate(query_prefix=TEMPLATES[family][0], item_prefix=TEMPLATES[family][1])
    Teacher(model, tokenizer, TeacherMeta(base_model=kind, family=family, scale=LabelScale.default(3),
                                          template=template, max_length=32)).save(tmp_path / "teacher")
    teacher = Teacher.load(tmp_path / "teacher")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = export_onnx(teacher)
    assert [str(w.message) for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))] == []
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]    # nothing left of the export

    graph = onnx.load(str(path)).graph
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*graph.input, *graph.output]}
    assert shapes == {"input_ids": ["batch", "tokens"], "attention_mask": ["batch", "tokens"], "logits": ["batch", 3]}
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for queries, items in ((["red chair"], ["oak"]),
                           (["red chair", "blue lamp", "saw"], ["red oak chair with metal legs and a wooden table", "lamp",
                                                                  "saw blade steel cord drill bit door lock"])):
        batch = tokenizer([template.query_prefix + q for q in queries], [template.item_prefix + i for i in items],
                          padding=True, return_tensors="pt", return_token_type_ids=False)
        with torch.inference_mode():
            expected = teacher.model(**batch).logits.numpy()
        got = session.run(["logits"], {name: batch[name].numpy() for name in ("input_ids", "attention_mask")})[0]
        assert got.shape == (len(queries), 3)
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_device_and_precision_settings():
    """auto takes the GPU when torch sees one and scores in bf16 there, fp32 on the CPU; unknown settings and
    a GPU asked for where there is none are clear errors."""
    import torch

    from relkit.hf import resolve_device, resolve_dtype

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto") and resolve_device("cpu") == "cpu"
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16 and resolve_dtype("fp32", "cuda") == torch.float32
    with pytest.raises(RelkitError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(RelkitError, match="unknown precision 'fp8'"):
        resolve_dtype("fp8", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RelkitError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_two_processes_train_the_same_kind_of_teacher(learnable, tiny, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2 -m relkit teach` on a machine without a GPU trains on
    two CPU processes joined over gloo (accelerate's `--cpu` would start one process), each on its share of
    the batches, and saves a teacher like one process does."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import torch

    batches = -(-len(load_judged_pairs(learnable, "train")) // 8)
    learnable.close()  # the command opens the workspace itself, as it would from the shell
    if torch.cuda.is_available():
        pytest.skip("checks CPU processes; on a GPU machine `accelerate launch` would put them on the GPUs")
    options = ["--model", str(tiny["bert"]), "--epochs", "2", "--batch-size", "8", "--max-length", "32",
               "--set", "prior=none", "--set", "eval_every=2", "-w", str(learnable.path)]
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
           "ACCELERATE_CONFIG_FILE": str(tmp_path / "none.yaml")}  # no user config file
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
              "--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    done = subprocess.run([*launch, "-m", "relkit", "teach", "--name", "two", *options], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("saved ") == 1   # the main process reports, the other trains quietly
    one = subprocess.run([sys.executable, "-m", "relkit", "teach", "--name", "one", *options], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two_path, one_path = learnable.artifacts / "teacher-two", learnable.artifacts / "teacher-one"
    assert sorted(p.name for p in two_path.iterdir()) == sorted(p.name for p in one_path.iterdir())
    assert weights(two_path).keys() == weights(one_path).keys()
    two, one_meta = (json.loads((p / "relkit.json").read_text()) for p in (two_path, one_path))
    assert two.keys() == one_meta.keys() and two["config"]["name"] == "two"
    # a step takes one batch on each process: 2 epochs of B batches are 2 * ceil(B / 2) steps, not 2 * B
    two_history, one_history = (json.loads((p / "history.json").read_text()) for p in (two_path, one_path))
    assert two_history[0]["step"] == 0 and one_history[-1]["step"] == 2 * batches
    assert two_history[-1]["step"] == 2 * -(-batches // 2) and two["metrics"].keys() == one_meta["metrics"].keys()
    proba = Teacher.load(two_path).predict_proba(pairs())
    assert proba.shape == (3, 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert not (two_path / "checkpoint").exists()


@pytest.mark.parametrize("kind,lora,stack_on", [("bert", False, "dev"), ("llama", True, "train")])
def test_a_prior_fit_after_the_cross_encoder_weighs_the_two(learnable, tiny, kind, lora, stack_on):
    """`prior_fit=after` trains the plain cross-encoder (the weights `prior=none` trains), then fits the
    prior on top: the saved teacher gives, on pairs it never saw, the probabilities of a logistic
    regression of the levels on the prior's features and the cross-encoder's logits over the dev pairs
    (`stack_on=dev`, the default) or the train pairs."""
    from sklearn.linear_model import LogisticRegression

    from relkit.teacher.prior import FEATURE_SETS

    base = dict(model=str(tiny[kind]), epochs=2, batch_size=8, max_length=32, lora=lora)
    plain = train_teacher(learnable, TrainConfig(name="plain", prior="none", **base))
    settings = {} if stack_on == "dev" else {"stack_on": stack_on}
    stacked = train_teacher(learnable, TrainConfig(name="stacked", prior_fit="after", **base, **settings))
    assert stacked.best_step == plain.best_step
    meta = json.loads((stacked.path / "relkit.json").read_text())
    assert meta["prior"]["features"] == list(FEATURE_SETS["cosine+match"]) and meta["config"]["stack_on"] == stack_on
    assert f"fit after training, on top of the cross-encoder over the {stack_on} pairs" in \
        (stacked.path / "README.md").read_text()
    assert meta["metrics"]["cross_encoder_qwk"] == json.loads((plain.path / "relkit.json").read_text())["metrics"]["qwk"]
    assert [h["step"] for h in json.loads((stacked.path / "history.json").read_text())] == \
        [h["step"] for h in plain.history]

    teacher = Teacher.load(stacked.path)
    fit, x_fit = stacking_inputs(learnable, Teacher.load(plain.path), meta["prior"], stack_on)
    test, x_test = stacking_inputs(learnable, Teacher.load(plain.path), meta["prior"], "test")
    reference = LogisticRegression(C=100.0, max_iter=2000).fit(x_fit, fit.labels)
    np.testing.assert_allclose(teacher.predict_proba(list(zip(test.queries, test.items))),
                               reference.predict_proba(x_test), atol=2e-4)


def stacking_inputs(ws, cross_encoder: Teacher, prior: dict, split: str):
    """(pairs, columns) of `split` as `prior_fit=after` weighs them: the prior's features and the
    cross-encoder's log-probabilities, centred over the levels."""
    from relkit.teacher.prior import Prior
    from relkit.text import item_title

    p = load_judged_pairs(ws, split)
    log_p = np.log(cross_encoder.predict_proba(list(zip(p.queries, p.items))))
    texts = [cross_encoder.meta.template.item(i) for i in p.items]
    x = Prior(**prior).inputs(p.queries, texts, [item_title(i) for i in p.items],
                              languages=[i.get("language") for i in p.items])
    return p, np.hstack([x, log_p - log_p.mean(axis=1, keepdims=True)])


def test_a_prior_is_fit_again_on_a_saved_cross_encoder(learnable, tiny):
    """`refit_prior` gives a `prior_fit=after` teacher another prior (here one weighing terms by their
    rarity, over the dev pairs) on its saved cross-encoder: the regression of the levels on the new
    prior's features and that cross-encoder's logits; the settings are recorded. A teacher whose prior
    learned beside its cross-encoder, and a setting that is not its prior's, are refused."""
    from sklearn.linear_model import LogisticRegression

    from relkit.teacher.prior import FEATURE_SETS
    from relkit.teacher.train import refit_prior

    base = dict(model=str(tiny["bert"]), epochs=1, batch_size=8, max_length=32, prior_fit="after")
    first = train_teacher(learnable, TrainConfig(name="first", stack_on="train", **base))
    saved = Teacher.load(first.path)
    saved.meta.prior = None                 # the saved cross-encoder alone, its head as saved
    config = refit_prior(learnable, "first", prior_features="cosine+match+idf", stack_on="dev")
    meta = json.loads((first.path / "relkit.json").read_text())
    assert config.prior_features == meta["config"]["prior_features"] == "cosine+match+idf"
    assert meta["config"]["stack_on"] == "dev" and meta["config"]["epochs"] == 1
    assert meta["prior"]["features"] == list(FEATURE_SETS["cosine+match+idf"])
    assert sum(meta["prior"]["frequencies"]["items"].values()) == learnable.count("items")
    card = (first.path / "README.md").read_text()
    assert "over the dev pairs" in card and f"rarity among {learnable.count('items')} items" in card

    dev, x_dev = stacking_inputs(learnable, saved, meta["prior"], "dev")
    test, x_test = stacking_inputs(learnable, saved, meta["prior"], "test")
    reference = LogisticRegression(C=100.0, max_iter=2000).fit(x_dev, dev.labels)
    np.testing.assert_allclose(Teacher.load(first.path).predict_proba(list(zip(test.queries, test.items))),
                               reference.predict_proba(x_test), atol=2e-4)

    with pytest.raises(RelkitError, match="changes only prior, prior_features, tokenization, stack_on, not epochs"):
        refit_prior(learnable, "first", epochs=2)
    train_teacher(learnable, TrainConfig(model=str(tiny["bert"]), name="joint", epochs=1, batch_size=8,
                                         max_length=32), stop_after=0)
    with pytest.raises(RelkitError, match="trained with prior_fit=before: its prior learned beside"):
        refit_prior(learnable, "joint", prior_features="cosine+match+idf")
    with pytest.raises(RelkitError, match="no teacher 'nobody'"):
        refit_prior(learnable, "nobody")


def test_an_idf_prior_weighs_a_rare_term_above_a_common_one():
    """`idf_coverage` weighs each query term by its rarity among the catalog's items of the text's
    language: a text holding the rare term of the query scores above one holding the common term; the
    frequencies travel with the prior, which refuses the feature without them."""
    from relkit.features.text_match import DocumentFrequencies
    from relkit.teacher.prior import FEATURE_SETS, Prior

    catalog = ["Silla de madera para la cocina", "Mesa de madera de roble", "Lámpara de madera y metal",
               "Sillas plegables de jardín", "Wooden kitchen chair", "Oak wooden table"]
    languages = ["es"] * 4 + ["en"] * 2
    frequencies = DocumentFrequencies.of(catalog, languages, "by-language")
    assert frequencies.items == {"en": 2, "es": 4}
    assert frequencies.counts["es"] == {"mader": 3, "sill": 2} and frequencies.counts["en"] == {"wooden": 2}
    names = list(FEATURE_SETS["cosine+match+idf"])
    prior = Prior("default", [[0.0, 0.0]] * 5, [0.0, 0.0], names, "by-language", frequencies.to_dict())
    query = ["mesa de madera"] * 2
    x = prior.inputs(query, ["Mesa plegable de jardín", "Silla de madera"], languages=["es", "es"])
    np.testing.assert_array_equal(x[:, 2], [0.5, 0.5])        # each holds one of two terms
    assert x[0, 4] > 0.5 > x[1, 4]                            # 'mesa' is rarer than 'madera'
    np.testing.assert_array_equal(Prior(**prior.to_dict()).inputs(query, ["Mesa plegable de jardín",
                                  "Silla de madera"], languages=["es", "es"]), x)
    with pytest.raises(RelkitError, match="idf_coverage and no document frequencies"):
        Prior("default", [[0.0, 0.0]] * 5, [0.0, 0.0], names, "by-language")
    with pytest.raises(RelkitError, match="prior_features is one of cosine, cosine\\+match, cosine\\+match\\+idf"):
        TrainConfig(prior_features="idf")


def test_a_dev_split_without_every_level_weighs_the_prior_over_train(learnable, tiny, caplog):
    """`stack_on=dev` needs every level among the dev pairs to weigh them; where one is missing the
    prior is fit over the train pairs, said in the log and recorded as such."""
    learnable.con.execute("UPDATE judgments SET label = 1 WHERE label = 2 AND query_id IN "
                          "(SELECT query_id FROM splits WHERE split = 'dev')")
    with caplog.at_level(logging.WARNING):
        result = train_teacher(learnable, TrainConfig(model=str(tiny["bert"]), name="fallback", epochs=1,
                                                      batch_size=8, max_length=32, prior_fit="after"))
    assert "the dev pairs lack a level" in caplog.text
    meta = json.loads((result.path / "relkit.json").read_text())
    assert meta["config"]["stack_on"] == "train" and "over the train pairs" in (result.path / "README.md").read_text()


def test_prior_fit_is_checked():
    with pytest.raises(RelkitError, match="prior_fit is before or after"):
        TrainConfig(prior_fit="during")
    with pytest.raises(RelkitError, match="prior_fit=after fits a prior"):
        TrainConfig(prior_fit="after", prior="none")
    with pytest.raises(RelkitError, match="stack_on is dev or train"):
        TrainConfig(prior_fit="after", stack_on="test")


@pytest.mark.parametrize("kind", FAMILIES)
def test_every_family_has_a_head_to_weigh(tiny, kind):
    """prior_fit=after folds its weights into the linear layer that makes the logits: every family
    relkit trains has one, and a model without one is refused before training."""
    import torch

    from relkit.teacher.train import head_linear

    from relkit.teacher.model import collate

    model, tokenizer, family, _ = load_base(TrainConfig(model=str(tiny[kind])), 3, "cpu")
    head = head_linear(model, 3)
    with torch.no_grad():   # the head found makes the logits: zeroed, they are its bias
        head.weight.zero_()
        if head.bias is not None:
            head.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    template = TextTemplate(query_prefix=TEMPLATES[family][0], item_prefix=TEMPLATES[family][1])
    ids = encode_pairs(tokenizer, template, ["red chair", "blue lamp"], ["red oak chair", "lamp"], 32)
    model.eval()
    with torch.no_grad():
        logits = model(**collate(tokenizer, ids)).logits
    expected = torch.tensor([0.5, -1.0, 2.0]) if head.bias is not None else torch.zeros(3)
    torch.testing.assert_close(logits, expected.expand(2, 3))
    with pytest.raises(RelkitError, match="no linear head of 3 outputs"):
        head_linear(torch.nn.Sequential(torch.nn.Linear(4, 3)), 3)

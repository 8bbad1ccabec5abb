import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, write_csv
from relkit import LabelScale, SplitConfig, Workspace, import_file, split_queries
from relkit.labeling import label_pairs
from relkit.teacher import TrainConfig, train_teacher
from tiny_models import build

COLORS, THINGS = ["red", "blue", "green", "black"], ["chair", "table", "lamp", "hose", "drill", "door", "saw", "rug"]


@pytest.fixture
def labeled_ws(tmp_path):
    """A workspace with a (step-0) teacher and 256 candidate pairs, half of which repeat another's text."""
    ws = Workspace.create(tmp_path / "ws", LabelScale.default(3))
    items = [[f"{c}-{t}", f"{c} {t}"] for c in COLORS for t in THINGS]
    items += [[f"{c}-{t}-copy", f"{c} {t}"] for c in COLORS[:1] for t in THINGS]  # same text, other id
    import_file(ws, "items", write_csv(tmp_path / "i.csv", ["item_id", "title"], items))
    judgments = [[f"{c} {t}", f"{c}-{t}", "3"] for c in COLORS for t in THINGS]
    judgments += [[f"{c} {t}", f"{c}-{THINGS[THINGS.index(t) - 1]}", "1"] for c in COLORS for t in THINGS]
    judgments += [[f"{c} {t}", f"{COLORS[COLORS.index(c) - 1]}-{t}", "2"] for c in COLORS for t in THINGS]
    import_file(ws, "judgments", write_csv(tmp_path / "j.csv", ["query", "item_id", "label"], judgments))
    split_queries(ws, SplitConfig(seed=0, dev=0.25, test=0.0))
    ids = dict(ws.fetchall("SELECT query, query_id FROM queries"))
    chosen = items[:4] + items[32:36]  # four items and their copies: two ids per text
    pairs = [[ids[f"{c} {t}"], item[0]] for c in COLORS for t in THINGS for item in chosen]
    import_file(ws, "pairs", write_csv(tmp_path / "p.csv", ["query_id", "item_id"], pairs))
    model = build("bert", tmp_path)
    train_teacher(ws, TrainConfig(model=str(model), name="t", epochs=1, batch_size=8, max_length=32), stop_after=0)
    yield ws
    ws.close()


def labels(ws):
    return ws.fetchall("SELECT query_id, item_id, p1 + p2 + p3, expected_level FROM teacher_labels "
                       "ORDER BY query_id, item_id")


def test_labels_every_pair_once_and_dedupes_texts(labeled_ws):
    ws = labeled_ws
    n = ws.count("pairs")
    result = label_pairs(ws, "t", shard_size=64)  # a query's 8 pairs share a shard
    assert result.labeled == result.pending == n == 256 and result.shards == 4
    texts = ws.fetchone("""SELECT count(DISTINCT (q.query, i.title)) FROM pairs p JOIN queries q USING (query_id)
                           JOIN items i USING (item_id)""")[0]
    assert result.scored == texts == n // 2  # a repeated (query, text) is scored once
    rows = labels(ws)
    assert len(rows) == n and len({(q, i) for q, i, _, _ in rows}) == n
    assert all(abs(s - 1) < 1e-5 and 1 <= e <= 3 for _, _, s, e in rows)
    again = label_pairs(ws, "t")
    assert again.labeled == 0 and len(labels(ws)) == n


def test_sigkill_then_rerun_labels_everything_exactly_once(labeled_ws):
    ws = labeled_ws
    path, n = ws.path, ws.count("pairs")
    ws.close()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "relkit", "label", "--teacher", "t", "--shard-size", "4", "--batch-size", "2",
               "-w", str(path)]
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = path / "labels" / "t"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(shards.glob("shard-*.parquet"))) < 3:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = len(list(shards.glob("shard-*.parquet")))
    assert 3 <= written < -(-n // 4), "the run was to be killed part way"
    (shards / "shard-99999.tmp").write_bytes(b"half a shard")  # as if killed while writing
    rerun = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert not list(shards.glob("*.tmp"))
    with Workspace.open(path) as again:
        rows = labels(again)
        assert len(rows) == n and len({(q, i) for q, i, _, _ in rows}) == n
        assert {(q, i) for q, i, _, _ in rows} == set(again.fetchall("SELECT query_id, item_id FROM pairs"))


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_onnx_backend_agrees_with_torch(tmp_path, kind):
    import numpy as np

    from relkit.teacher import Teacher, TeacherMeta, TextTemplate
    from relkit.teacher.model import TEMPLATES
    from relkit.teacher.train import load_base

    model, tokenizer, family, _ = load_base(TrainConfig(model=str(build(kind, tmp_path))), 3, "cpu")
    template = TextTemplate(query_prefix=TEMPLATES[family][0], item_prefix=TEMPLATES[family][1])
    meta = TeacherMeta(base_model=kind, family=family, scale=LabelScale.default(3), template=template, max_length=32)
    Teacher(model, tokenizer, meta).save(tmp_path / "teacher")
    pairs = [("red chair", "red oak chair"), ("blue lamp", "green garden hose reel with metal cord"), ("saw", "saw")]
    torch_proba = Teacher.load(tmp_path / "teacher").predict_proba(pairs, batch_size=2)
    onnx_teacher = Teacher.load(tmp_path / "teacher").use_onnx()
    np.testing.assert_allclose(onnx_teacher.predict_proba(pairs, batch_size=2), torch_proba, atol=1e-5)
    assert (tmp_path / "teacher" / "onnx" / "model.onnx").is_file()
    int8 = Teacher.load(tmp_path / "teacher").use_onnx(int8=True).predict_proba(pairs, batch_size=2)
    np.testing.assert_allclose(int8.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(int8 - torch_proba).max() < 0.05  # quantized weights: close, not equal


def test_onnx_labels_match_torch_labels(labeled_ws):
    import numpy as np

    ws = labeled_ws
    label_pairs(ws, "t")
    torch_rows = labels(ws)
    import shutil
    shutil.rmtree(ws.path / "labels" / "t")
    result = label_pairs(ws, "t", backend="onnx")
    assert result.labeled == len(torch_rows)
    onnx_rows = labels(ws)
    assert [r[:2] for r in onnx_rows] == [r[:2] for r in torch_rows]
    np.testing.assert_allclose([r[3] for r in onnx_rows], [r[3] for r in torch_rows], atol=1e-4)
    from relkit import RelkitError
    with pytest.raises(RelkitError, match="unknown backend 'tpu'"):
        label_pairs(ws, "t", backend="tpu")


def test_ray_engine_gives_the_local_engine_output(labeled_ws):
    import numpy as np

    ws = labeled_ws
    label_pairs(ws, "t", shard_size=64)
    local = labels(ws)
    import shutil
    shutil.rmtree(ws.path / "labels" / "t")
    result = label_pairs(ws, "t", shard_size=64, engine="ray", ray_actors=1)
    assert result.labeled == len(local) and result.scored == len(local) // 2
    on_ray = labels(ws)
    assert [r[:2] for r in on_ray] == [r[:2] for r in local]
    np.testing.assert_allclose([r[3] for r in on_ray], [r[3] for r in local], atol=1e-5)
    assert not list((ws.path / "labels" / "t").glob("*.tmp"))


def test_a_teacher_reads_each_text_in_its_stored_language(tmp_path):
    """Trained, labeling and scoring, a teacher's text-match prior reads each query and item in the
    language the workspace stores for it, not in one detected again. The file says English for these
    Spanish texts (the file wins, as on import), so 'para' is a word to match, where Spanish drops it."""
    from relkit.teacher import Teacher

    ws = Workspace.create(tmp_path / "ws", LabelScale.default(3))
    things, places = ["silla", "mesa", "puerta", "lámpara"], ["jardín", "cocina", "baño", "oficina"]
    items = [[f"{t}-{w}", f"{t} para {w}", "en"] for t in things for w in places]
    import_file(ws, "items", write_csv(tmp_path / "i.csv", ["item_id", "title", "language"], items))
    judgments = [[f"{t}s para {w}", f"{t}-{w}", "3", "en"] for t in things for w in places]
    judgments += [[f"{t}s para {w}", f"{t}-{places[places.index(w) - 1]}", "2", "en"] for t in things for w in places]
    judgments += [[f"{t}s para {w}", f"{things[things.index(t) - 1]}-{w}", "1", "en"] for t in things for w in places]
    import_file(ws, "judgments", write_csv(tmp_path / "j.csv", ["query", "item_id", "label", "language"],
                                           judgments))
    assert {r[0] for r in ws.fetchall("SELECT language FROM queries UNION SELECT language FROM items")} == {"en"}
    split_queries(ws, SplitConfig(seed=0, dev=0.25, test=0.0))
    ids = dict(ws.fetchall("SELECT query, query_id FROM queries"))
    pairs = [[ids[f"{t}s para {w}"], item[0]] for t in things for w in places for item in items[::3]]
    import_file(ws, "pairs", write_csv(tmp_path / "p.csv", ["query_id", "item_id"], pairs))
    result = train_teacher(ws, TrainConfig(model=str(build("bert", tmp_path)), name="t", epochs=1, batch_size=8,
                                           max_length=32), stop_after=0)
    teacher = Teacher.load(result.path)
    assert teacher.meta.prior["tokenization"] == "by-language"
    assert "each text matched in its language" in (result.path / "README.md").read_text()

    def read_as(language: str, queries: list[str], texts: list[str]):
        n = len(queries)
        return teacher.predict_texts(queries, texts, texts, languages=[language] * n, query_languages=[language] * n)

    label_pairs(ws, "t")
    rows = ws.fetchall("""SELECT q.query, i.title, t.p1, t.p2, t.p3 FROM teacher_labels t JOIN queries q
                          USING (query_id) JOIN items i USING (item_id) ORDER BY query_id, item_id""")
    assert len(rows) == len(pairs)
    queries, titles = [r[0] for r in rows], [r[1] for r in rows]
    np.testing.assert_allclose([r[2:] for r in rows], read_as("en", queries, titles), atol=1e-5)
    assert np.abs(read_as("es", queries, titles) - read_as("en", queries, titles)).max() > 1e-3
    records = ws.item_records([f"{t}-{w}" for t in things for w in places])
    queries = [f"{t}s para {w}" for t in things for w in places]
    titles = [f"{t} para {w}" for t in things for w in places]
    scored = teacher.predict_proba(list(zip(queries, [records[f"{t}-{w}"] for t in things for w in places])))
    np.testing.assert_allclose(scored, read_as("en", queries, titles), atol=1e-5)
    ws.close()

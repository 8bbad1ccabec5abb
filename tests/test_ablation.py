import json
import logging

import numpy as np
import pytest

from conftest import write_csv
from relkit import LabelScale, RelkitError, SplitConfig, Workspace, import_file, split_queries
from relkit.ablation import ablate, fields_with_data
from relkit.config import from_dict
from relkit.teacher import Teacher, TrainConfig
from relkit.teacher.train import prepare_run
from tiny_models import build


@pytest.fixture
def described(tmp_path):
    """Items with a title and, for half of them, a description; no other field."""
    things = ["chair", "table", "lamp", "hose", "drill", "door"]
    items, judgments = [], []
    for n, thing in enumerate(things):
        for color in ("red", "blue", "green"):
            items.append([f"{color}-{thing}", f"{color} {thing}", f"oak {thing}" if n % 2 else ""])
            judgments += [[f"{color} {thing}", f"{color}-{thing}", "3"],
                          [f"{color} {thing}", f"{color}-{things[n - 1]}", "1"],
                          [f"{color} {thing}", f"{'blue' if color == 'red' else 'red'}-{thing}", "2"]]
    ws = Workspace.create(tmp_path / "ws", LabelScale.default(3))
    import_file(ws, "items", write_csv(tmp_path / "i.csv", ["item_id", "title", "description"], items))
    import_file(ws, "judgments", write_csv(tmp_path / "j.csv", ["query", "item_id", "label"], judgments))
    split_queries(ws, SplitConfig(seed=2, dev=0.25, test=0.25))
    yield ws
    ws.close()


def test_ablation_adds_the_fields_the_data_has(described, tmp_path, caplog):
    bert = build("bert", tmp_path)
    assert fields_with_data(described, ["title", "caption", "description", "board_titles"]) == ["title", "description"]
    caplog.set_level(logging.INFO, logger="relkit.ablation")
    config = TrainConfig(model=str(bert), epochs=1, batch_size=8, max_length=32, prior="none")
    rows = ablate(described, config, ["title", "caption", "description"])
    messages = [r.getMessage() for r in caplog.records if r.name == "relkit.ablation"]
    assert [r.fields for r in rows] == [("title",), ("title", "description")]
    assert "no data for caption: left out of the ablation" in messages
    described_chair = {"title": "red chair", "description": "oak chair"}
    scores = []
    for row in rows:
        path = described.artifacts / f"teacher-{row.teacher}"
        meta = json.loads((path / "relkit.json").read_text())
        assert [f["name"] for f in meta["template"]["fields"]] == list(row.fields)
        assert row.metrics["accuracy"] is not None and row.metrics["ndcg@10"] is not None
        # the inputs it was trained on: the description's words ("oak") only where the field is in
        teacher = Teacher.load(path, device="cpu")
        run = prepare_run(described, from_dict(TrainConfig, meta["config"], "training option"), teacher.tokenizer, meta["family"])
        words = {w for ids in run.train_ids for w in teacher.tokenizer.convert_ids_to_tokens(ids)}
        assert ("oak" in words) == ("description" in row.fields) and "red" in words
        # and what it reads when scoring: a title-only teacher gives the same scores whatever the
        # description says, one that reads it does not
        proba = teacher.predict_proba([("red chair", {**described_chair, "description": d})
                                       for d in ("oak chair", "", "oak oak lamp hose")])
        ignored = "description" not in row.fields
        assert np.array_equal(proba[0], proba[1]) == np.array_equal(proba[1], proba[2]) == ignored
        scores.append(proba[0])
    # taking a field away changes the model (one epoch of a tiny model: by a few millionths)
    assert not np.array_equal(scores[0], scores[1])
    with pytest.raises(RelkitError, match="unknown item text field 'colour'"):
        ablate(described, config, ["title", "colour"])
    with pytest.raises(RelkitError, match="no item judged in the train split has any of the fields"):
        ablate(described, config, ["caption"])

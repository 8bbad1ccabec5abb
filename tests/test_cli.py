import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, write_csv

SAMPLE = ROOT / "data" / "sample" / "homedepot-sample.csv"


def relkit(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "relkit", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=600)


@pytest.mark.parametrize("command", ["", "init", "import", "split", "status", "eval", "teach", "ablate", "caption",
                                     "engaged", "pairs", "audit"])
def test_every_command_has_help(command):
    result = relkit(*([command] if command else []), "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_pipeline_on_the_bundled_sample(tmp_path):
    ws = tmp_path / "ws"
    assert relkit("init", ws).returncode == 0
    imported = relkit("import", "judgments", SAMPLE, "--format", "homedepot", "-w", ws)
    assert imported.returncode == 0, imported.stderr
    assert "3,187 rows read, 3,187 judgments added" in imported.stdout
    again = relkit("import", "judgments", SAMPLE, "--format", "homedepot", "-w", ws)
    assert "0 judgments added, 3,187 already present" in again.stdout
    assert relkit("split", "--seed", "13", "--test", "0.2", "-w", ws).returncode == 0
    status = relkit("status", "-w", ws)
    assert " ".join(status.stdout.split()).count("judgments 3,187") == 1
    assert "queries per split: train" in status.stdout
    result = relkit("eval", "--system", "bm25", "--system", "embedding", "--json", "-w", ws)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [s["name"] for s in report["systems"]] == ["bm25", "embedding"]
    assert report["split"] == "test" and 70 < report["queries"] < 130
    for system in report["systems"]:
        assert 0.7 < system["metrics"]["ndcg@10"] <= 1.0
        assert system["metrics"]["accuracy"] is None
    table = relkit("eval", "--system", "bm25", "-w", ws)
    assert "ndcg@10" in table.stdout and "test split:" in table.stdout


def test_workspace_from_environment(tmp_path):
    ws = tmp_path / "env-ws"
    assert relkit("init", ws).returncode == 0
    result = relkit("status", env={"RELKIT_WORKSPACE": str(ws)})
    assert result.returncode == 0 and str(ws) in result.stdout.replace("\n", "")


def test_bad_input_is_one_clear_line_and_exit_2(tmp_path):
    ws = tmp_path / "ws"
    relkit("init", ws)
    bad = write_csv(tmp_path / "j.csv", ["query", "title", "label"], [["a", "b", "9"]])
    result = relkit("import", "judgments", bad, "-w", ws)
    assert result.returncode == 2
    assert f"{bad}, line 2, field 'label': label '9' is not on the scale" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    missing = relkit("status", "-w", tmp_path / "nowhere")
    assert missing.returncode == 2 and "relkit init" in missing.stderr


def test_init_with_custom_scale(tmp_path):
    result = relkit("init", tmp_path / "w", "--levels", "3", "--names", "bad,ok,great", "--gains", "0,1,5")
    assert result.returncode == 0, result.stderr
    assert "1 = bad, 2 = ok, 3 = great" in result.stdout
    bad = relkit("init", tmp_path / "w2", "--levels", "3", "--gains", "0,x,1")
    assert bad.returncode == 2 and "--gains" in bad.stderr
    mismatch = relkit("init", tmp_path / "w3", "--levels", "4", "--names", "bad,ok,great")
    assert mismatch.returncode == 2 and "--levels 4 but --names gives 3 names" in mismatch.stderr
    assert not (tmp_path / "w3").exists()


def tiny_bert_and_workspace(tmp_path):
    """A tiny BERT and a 3-level workspace of 27 judgments a small model can learn, split by query."""
    from tiny_models import build

    model = build("bert", tmp_path)
    ws = tmp_path / "ws"
    relkit("init", ws, "--levels", "3")
    rows = [[f"{c} {t}", f"{c} oak {t}", "3"] for c in ("red", "blue", "green") for t in ("chair", "lamp", "door")]
    rows += [[f"{c} {t}", f"metal {t}", "2"] for c in ("red", "blue", "green") for t in ("chair", "lamp", "door")]
    rows += [[f"{c} {t}", "garden hose", "1"] for c in ("red", "blue", "green") for t in ("chair", "lamp", "door")]
    relkit("import", "judgments", write_csv(tmp_path / "j.csv", ["query", "title", "label"], rows), "-w", ws)
    relkit("split", "--seed", "2", "--dev", "0.3", "--test", "0.3", "-w", ws)
    return model, ws


def test_teach_then_eval(tmp_path):
    model, ws = tiny_bert_and_workspace(tmp_path)
    bad = relkit("teach", "--model", model, "--set", "colour=red", "-w", ws)
    assert bad.returncode == 2 and "--set takes KEY=VALUE with KEY one of" in bad.stderr
    taught = relkit("teach", "--model", model, "--name", "t", "--epochs", "2", "--batch-size", "4",
                    "--max-length", "24", "--set", "lr=1e-3", "--set", "listwise_weight=0.5", "-w", ws)
    assert taught.returncode == 0, taught.stderr
    assert "saved" in taught.stdout and "teacher-t" in taught.stdout
    again = relkit("teach", "--model", model, "--name", "t", "-w", ws)
    assert again.returncode == 2 and "exists; pick another --name" in again.stderr
    report = json.loads(relkit("eval", "--system", "teacher:t", "--json", "-w", ws).stdout)
    metrics = report["systems"][0]["metrics"]
    assert report["systems"][0]["name"] == "teacher:t" and 0.0 <= metrics["accuracy"] <= 1.0
    assert "teacher-t" in relkit("status", "-w", ws).stdout


def test_item_text_commands(tmp_path):
    """engaged and caption from the command line, with their counts in status; bad input exits 2."""
    from conftest import write_png as png
    from tiny_models import build_blip

    ws = tmp_path / "ws"
    relkit("init", ws)
    png(tmp_path / "a.png", 1)
    items = write_csv(tmp_path / "items.csv", ["item_id", "title", "image"],
                      [["1", "Chair", str(tmp_path / "a.png")], ["2", "Lamp", str(tmp_path / "gone.png")]])
    assert relkit("import", "items", items, "-w", ws).returncode == 0
    log = write_csv(tmp_path / "eng.csv", ["query", "item_id", "impressions", "clicks", "timestamp"],
                    [["oak chair", "1", 9, 3, "2026-01-02"], ["desk lamp", "2", 9, 1, "2026-01-01"]])
    imported = relkit("import", "engagement", log, "-w", ws)
    assert "2 items with engaged-query tokens" in imported.stdout, imported.stderr
    assert "1 items have engaged-query tokens (top 8, 1 days)" in relkit("engaged", "--days", "1", "-w", ws).stdout
    bad = relkit("engaged", "--as-of", "soon", "-w", ws)
    assert bad.returncode == 2 and "as_of must be an ISO date" in bad.stderr
    blip = build_blip(tmp_path)
    captioned = relkit("caption", "--model", blip, "-w", ws)
    assert captioned.returncode == 0, captioned.stderr
    assert "2 items with an image: 1 images captioned" in captioned.stdout and "1 unreadable" in captioned.stdout
    status = " ".join(relkit("status", "-w", ws).stdout.split())
    assert "captioned items 1 (1 images unreadable)" in status and "items with engaged-query tokens 1" in status


def test_pairs_command_on_the_sample(tmp_path):
    ws = tmp_path / "ws"
    relkit("init", ws)
    relkit("import", "judgments", SAMPLE, "--format", "homedepot", "-w", ws)
    early = relkit("pairs", "-w", ws)
    assert early.returncode == 2 and "run `relkit split` first" in early.stderr
    relkit("split", "--seed", "13", "--test", "0.2", "-w", ws)
    made = relkit("pairs", "--k", "5", "--source", "bm25", "-w", ws)
    assert made.returncode == 0, made.stderr
    assert "train queries" in made.stdout and "new pairs" in made.stdout


def test_status_and_eval_while_label_and_teach_run(tmp_path):
    """Long jobs hold the workspace only while they read and write it: `relkit status` and `relkit
    eval` succeed while `relkit label` scores thousands of pairs and `relkit teach` trains, on the
    same workspace (DuckDB lets one process write a database at a time)."""
    import time

    from tiny_models import WORDS

    model, ws = tiny_bert_and_workspace(tmp_path)
    first = relkit("teach", "--model", model, "--name", "first", "--epochs", "1", "--set", "prior=none", "-w", ws)
    assert first.returncode == 0, first.stderr
    words = sorted(set(WORDS))
    titles = [f"{a} {b} {c}" for a in words for b in words[:12] for c in words[:4]]   # 1,440 items
    queries = [f"{c} {t}" for c in ("red", "blue", "green") for t in ("chair", "lamp", "door")]
    pairs = write_csv(tmp_path / "p.csv", ["query", "title"], [[q, t] for q in queries for t in titles])
    assert relkit("import", "pairs", pairs, "-w", ws).returncode == 0

    label = subprocess.Popen([sys.executable, "-m", "relkit", "label", "--teacher", "first", "--batch-size", "1",
                              "--shard-size", "200", "-w", str(ws)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    teach = subprocess.Popen([sys.executable, "-m", "relkit", "teach", "--model", str(model), "--name", "second",
                              "--epochs", "400", "--batch-size", "4", "--set", "prior=none", "--set", "eval_every=500",
                              "-w", str(ws)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 400
        shards, history = ws / "labels" / "first", ws / "artifacts" / "teacher-second" / "history.json"
        while not (any(shards.glob("shard-*.parquet")) and history.exists()):   # both in their long phase
            assert label.poll() is None and teach.poll() is None, (label.communicate(), teach.communicate())
            assert time.monotonic() < deadline, "label and teach did not start"
            time.sleep(0.2)
        status = relkit("status", "-w", ws)
        evaluated = relkit("eval", "--system", "bm25", "--system", "teacher:first", "--json", "-w", ws)
        assert label.poll() is None and teach.poll() is None   # both still at work meanwhile
    finally:
        for job in (label, teach):
            job.terminate()
            job.communicate(timeout=60)
    assert status.returncode == 0, status.stderr
    assert "judgments 27" in " ".join(status.stdout.split())
    assert evaluated.returncode == 0, evaluated.stderr
    assert [s["name"] for s in json.loads(evaluated.stdout)["systems"]] == ["bm25", "teacher:first"]
    # the labeling stopped part way is continued by the same command; every pair is labeled once
    rest = relkit("label", "--teacher", "first", "--batch-size", "256", "-w", ws)
    assert rest.returncode == 0, rest.stderr
    import duckdb

    con = duckdb.connect(str(ws / "relkit.duckdb"), read_only=True)
    counts = con.execute("SELECT count(*), count(DISTINCT (query_id, item_id)) FROM teacher_labels").fetchone()
    pending = con.execute("SELECT count(*) FROM pairs").fetchone()[0]
    con.close()
    assert pending > 10_000 and counts == (pending, pending)


def test_help_starts_light_and_names_stay_what_they_were():
    """`relkit --help` imports none of DuckDB, pyarrow, scikit-learn or torch; relkit's top-level names
    load on first use and keep their meaning (the function `evaluate`, not the module of that name)."""
    code = ("import sys\n"
            "import relkit.cli\n"
            "heavy = [m for m in ('duckdb', 'pyarrow', 'sklearn', 'torch') if m in sys.modules]\n"
            "import relkit.evaluate\n"
            "from relkit import Workspace, evaluate, import_file\n"
            "print(heavy, callable(evaluate) and evaluate.__module__, Workspace.__name__, import_file.__name__)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "relkit.evaluate", "Workspace", "import_file"]
    assert relkit("--help").returncode == 0


def help_text(*args) -> str:
    """`relkit ARGS --help` in this process, the table's borders and line breaks taken out."""
    import re

    from typer.testing import CliRunner

    from relkit.cli import app

    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    return re.sub(r"[│\s]+", " ", result.output)


def test_option_defaults_are_the_librarys():
    """An option whose default belongs to a config dataclass or a library function is None in the CLI
    (the library's own default applies), and its --help shows the library's value."""
    import dataclasses

    import typer.main

    from relkit.cli import LIBRARY_DEFAULTS, app, library_default
    from relkit.student.features import FeatureConfig
    from relkit.student.model import StudentConfig
    from relkit.teacher.train import TrainConfig

    commands = typer.main.get_command(app).commands
    for name, options in LIBRARY_DEFAULTS.items():
        params = {p.name: p for p in commands[name].params}
        shown = help_text(name)
        for option, spec in options.items():
            assert params[option].default is None, f"relkit {name} --{option}"
            value = library_default(*spec[:2])
            assert value is not None, f"relkit {name} --{option}"
            assert f"--{option.replace('_', '-')} " in shown
        if name == "teach":
            for option in options:
                field = next(f for f in dataclasses.fields(TrainConfig) if f.name == option)
                want = "no-lora" if field.default is False else field.default
                assert f"[default: ({want})]" in shown, option
    distill = help_text("distill")
    assert f"[default: ({','.join(map(str, StudentConfig().hidden))})]" in distill
    assert f"[default: ({','.join(FeatureConfig().groups)})]" in distill
    assert f"[default: ({FeatureConfig().graph_dim})]" in distill
    assert "[default: (4)]" in help_text("serve") and "[default: (20)]" in help_text("caption")   # MB
    from relkit.judge.core import JudgeSpec

    judge = help_text("judge")
    assert f"--key-env <str> Environment variable holding the endpoint's API key (never stored). [default: " \
           f"({JudgeSpec.key_env})]" in judge
    assert f"requests in flight. [default: ({JudgeSpec.concurrency})]" in judge
    assert "[default: (logprobs)]" in judge and f"[default: ({library_default('relkit.judge.core:Judge.run', 'shard_size')})]" in judge


def test_a_changed_dataclass_default_shows_in_help(monkeypatch):
    from relkit.features.engagement import EngagedQueriesConfig
    from relkit.student.features import FeatureConfig

    monkeypatch.setattr(FeatureConfig.__dataclass_fields__["graph_dim"], "default", 48)
    monkeypatch.setattr(EngagedQueriesConfig.__dataclass_fields__["window_days"], "default", 365)
    assert "graph embedding (graph group). [default: (48)]" in help_text("distill")
    assert "ending at --as-of. [default: (365)]" in help_text("engaged")


def test_options_not_given_leave_the_library_its_defaults(tmp_path, monkeypatch):
    import functools
    import importlib

    from typer.testing import CliRunner

    from relkit.cli import app

    candidates = importlib.import_module("relkit.candidates")
    relkit("init", tmp_path / "ws")
    calls = []
    real = candidates.make_pairs

    @functools.wraps(real)
    def make_pairs(ws, **options):
        calls.append(options)
        return type("Result", (), {"summary": lambda self: "done"})()

    monkeypatch.setattr(candidates, "make_pairs", make_pairs)
    for args in ([], ["--k", "5", "--encoder", "other"]):
        result = CliRunner().invoke(app, ["pairs", *args, "-w", str(tmp_path / "ws")])
        assert result.exit_code == 0, result.output
    assert calls == [{"sources": ("bm25", "embedding")}, {"sources": ("bm25", "embedding"), "k": 5, "encoder": "other"}]


def test_names_print_as_written():
    """A system named teacher:zero is not an emoji code: the CLI's consoles print names verbatim."""
    from relkit.cli import console, err

    for c in (console, err):
        with c.capture() as captured:
            c.print("ndcg@10 - teacher:zero :smile:", highlight=False)
        assert captured.get().strip() == "ndcg@10 - teacher:zero :smile:"

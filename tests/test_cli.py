import json
import re
import subprocess
import sys

import pytest

from conftest import ROOT, relkit, write_csv

SAMPLE = ROOT / "data" / "sample" / "homedepot-sample.csv"


COMMANDS = ["init", "import", "split", "status", "eval", "report", "teach", "ablate", "caption", "engaged", "pairs",
            "label", "judge", "distill", "promote", "serve", "agreement", "audit", "annotate"]


def click_commands() -> dict:
    """The click command objects typer builds from relkit's app: name -> command."""
    import typer.main

    from relkit.cli import app

    return typer.main.get_command(app).commands


def flat(text: str) -> str:
    """Help text without the boxes' borders and line breaks."""
    return re.sub(r"[│╭╮╰╯─\s]+", " ", text)


def test_relkit_help_lists_every_command_with_its_summary():
    assert sorted(click_commands()) == sorted(COMMANDS)
    result = relkit("--help")
    assert result.returncode == 0, result.stderr
    rows = [re.match(r"│ (\S+) ", line) for line in result.stdout.splitlines()]   # a row's first cell, not a wrapped line
    listed = [row[1] for row in rows if row and not row[1].startswith("-")]
    assert sorted(listed) == sorted(COMMANDS)
    shown = flat(result.stdout)
    for name, command in click_commands().items():
        summary = " ".join(command.help.split("\n\n")[0].split())
        assert f" {name} {summary[:60]}" in shown, name
    for option in ("--quiet", "-q", "--verbose", "-v", "--help"):
        assert f" {option} " in shown


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_help_shows_its_real_options(name):
    """Every option and argument of the click command, with its flags and its help text, is in the
    command's --help, and so is the command's description."""
    command = click_commands()[name]
    shown = help_text(name)
    assert " ".join(command.help.split("\n\n")[0].split()) in shown
    assert command.params, name
    for param in command.params:
        if param.param_type_name == "argument":
            assert f" {param.name} " in shown, f"relkit {name} {param.name.upper()}"
        for flag in [*param.opts, *param.secondary_opts]:
            assert f" {flag} " in shown or f" {flag}," in shown or f"{flag}/" in shown, f"relkit {name} {flag}"
        if param.help:
            assert " ".join(param.help.split()) in shown, f"relkit {name} {param.opts[0]}"


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


def test_a_teachers_prior_is_fit_again_from_the_command_line(tmp_path):
    """`relkit teach --refit-prior NAME --set KEY=VALUE` fits a prior_fit=after teacher's prior again with
    other prior settings; a setting that is not the prior's, or a teacher without a saved cross-encoder
    to weigh, exits 2 with what is wrong."""
    model, ws = tiny_bert_and_workspace(tmp_path)
    taught = relkit("teach", "--model", model, "--name", "t", "--epochs", "1", "--batch-size", "4",
                    "--max-length", "24", "--set", "prior_fit=after", "-w", ws)
    assert taught.returncode == 0, taught.stderr
    refit = relkit("teach", "--refit-prior", "t", "--set", "prior_features=cosine+match+idf", "-w", ws)
    assert refit.returncode == 0, refit.stderr
    assert "its prior fit again" in refit.stdout and "teacher-t" in refit.stdout
    meta = json.loads((ws / "artifacts" / "teacher-t" / "relkit.json").read_text())
    assert meta["prior"]["features"][-1] == "idf_coverage" and meta["config"]["prior_features"] == "cosine+match+idf"
    assert json.loads(relkit("eval", "--system", "teacher:t", "--json", "-w", ws).stdout)["systems"][0]["metrics"]
    bad = relkit("teach", "--refit-prior", "t", "--epochs", "3", "-w", ws)
    assert bad.returncode == 2
    assert "changes only prior, prior_features, tokenization, stack_on, not epochs" in bad.stderr
    gone = relkit("teach", "--refit-prior", "other", "-w", ws)
    assert gone.returncode == 2 and "no teacher 'other'" in gone.stderr


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
    from typer.testing import CliRunner

    from relkit.cli import app

    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    return re.sub(r"[│\s]+", " ", result.output)


def test_option_defaults_are_the_librarys():
    """An option whose default belongs to a config dataclass or a library function is None in the CLI
    (the library's own default applies), and its --help shows the library's value."""
    import dataclasses
    import inspect

    from relkit.ablation import ablate
    from relkit.captions import caption_items
    from relkit.candidates import make_pairs
    from relkit.cli import library_defaults
    from relkit.data.splits import SplitConfig
    from relkit.evaluate import evaluate
    from relkit.features.engagement import EngagedQueriesConfig
    from relkit.judge.core import Judge, JudgeSpec
    from relkit.labeling import label_pairs
    from relkit.report.data import build
    from relkit.scale import LabelScale
    from relkit.serve.app import serve
    from relkit.serve.replicas import serve_on_ray
    from relkit.serve.schemas import Limits
    from relkit.student.features import FeatureConfig
    from relkit.student.model import StudentConfig
    from relkit.teacher.config import TrainConfig

    def field(cls, name):
        found = next(f for f in dataclasses.fields(cls) if f.name == name)
        return found.default_factory() if found.default is dataclasses.MISSING else found.default

    def param(function, name):
        return inspect.signature(function).parameters[name].default

    want = {
        "init": {"levels": param(LabelScale.default, "k")},
        "split": {name: field(SplitConfig, name) for name in ("seed", "dev", "test")},
        "eval": {"split": param(evaluate, "split")},
        "report": {"split": param(build, "split")},
        "teach": {name: field(TrainConfig, name) for name in
                  ("model", "epochs", "lr", "batch_size", "max_length", "class_weights", "primary", "lora")},
        "ablate": {name: param(ablate, name) for name in ("fields", "split", "prefix")},
        "caption": {**{name: param(caption_items, name) for name in ("model", "batch_size", "timeout")},
                    "max_mb": param(caption_items, "max_bytes") / 1_000_000},
        "engaged": {"top": field(EngagedQueriesConfig, "top_n"), "days": field(EngagedQueriesConfig, "window_days")},
        "pairs": {name: param(make_pairs, name) for name in ("k", "encoder", "min_queries", "query_source")},
        "label": {name: param(label_pairs, name) for name in
                  ("shard_size", "batch_size", "backend", "engine", "ray_actors")},
        "judge": {**{name: field(JudgeSpec, name) for name in ("key_env", "shots", "concurrency", "rpm", "retries",
                                                              "timeout", "logprobs", "batch_size")},
                  "shard_size": param(Judge.run, "shard_size")},
        "distill": {**{name: field(StudentConfig, name) for name in ("hidden", "human_weight")},
                    **{name: field(FeatureConfig, name) for name in ("groups", "encoder", "graph_dim", "image_encoder")}},
        "serve": {**{name: param(serve, name) for name in ("host", "port", "poll_seconds", "warm_queries")},
                  "replicas": param(serve_on_ray, "replicas"),
                  "max_candidates": field(Limits, "max_candidates"),
                  "max_body_mb": field(Limits, "max_body_bytes") / 1_000_000},
    }
    got = {name: library_defaults(name) for name in COMMANDS}
    assert {name: options for name, options in got.items() if options} == want
    commands = click_commands()
    for name, options in want.items():
        params = {p.name: p for p in commands[name].params}
        shown = help_text(name)
        for option, value in options.items():
            assert params[option].default is None, f"relkit {name} --{option}"
            flag = option.replace("_", "-")
            if isinstance(value, bool):
                value = flag if value else f"no-{flag}"
            elif isinstance(value, tuple):
                value = ",".join(map(str, value))
            elif isinstance(value, float) and option.endswith("_mb"):
                value = f"{value:g}"
            # the first default shown after the option's flag is its own
            assert re.search(rf"--{flag} .*?\[default: \((.*?)\)\]", shown)[1] == str(value), f"relkit {name} --{flag}"
    assert "[default: (4)]" in help_text("serve") and "[default: (20)]" in help_text("caption")   # MB
    judge = help_text("judge")
    assert f"--key-env <str> Environment variable holding the endpoint's API key (never stored). [default: " \
           f"({JudgeSpec.key_env})]" in judge
    assert f"requests in flight. [default: ({JudgeSpec.concurrency})]" in judge


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


def test_settings_errors_name_the_key_and_the_valid_ones(tmp_path):
    """--set, --config and flags go through one helper: an unknown key is refused before any work,
    naming it and the keys there are; a value that does not fit its type says which type."""
    import dataclasses

    from typer.testing import CliRunner

    from relkit.cli import app
    from relkit.student.model import StudentConfig
    from relkit.teacher.config import TrainConfig

    def fails(*args) -> str:
        result = CliRunner().invoke(app, [*map(str, args), "-w", str(tmp_path / "nowhere")])
        assert result.exit_code == 2, result.output
        return " ".join(result.output.split())

    teach_keys = ", ".join(f.name for f in dataclasses.fields(TrainConfig))
    assert fails("teach", "--set", "colour=red") == \
        f"error: --set takes KEY=VALUE with KEY one of {teach_keys}; got 'colour=red'"
    assert fails("teach", "--set", "epochs=many") == "error: --set epochs: 'many' is not a valid float"
    config = tmp_path / "train.json"
    config.write_text(json.dumps({"lr": 0.001, "colour": "red"}))
    assert fails("ablate", "--config", config) == \
        f"error: unknown training option(s): colour; the training options are {teach_keys}"
    config.write_text(json.dumps({"lr": 0.001, "name": "mine"}))
    assert fails("ablate", "--config", config) == \
        "error: ablate sets each teacher's fields and name itself; use --fields and --prefix"
    config.write_text("[1]")
    assert fails("teach", "--config", config) == \
        f"error: {config}: not a readable JSON object of training options (it holds a list)"
    assert fails("teach", "--lr", "0.1", "--resume", "old") == \
        "error: --resume continues with the teacher's saved options; give no other training options"
    student_keys = ", ".join(f.name for f in dataclasses.fields(StudentConfig))
    assert fails("distill", "--set", "width=3") == \
        f"error: --set takes KEY=VALUE with KEY one of {student_keys}; got 'width=3'"
    assert fails("distill", "--set", "hidden=64,x") == "error: --set hidden: '64,x' is not comma-separated numbers"
    assert fails("distill", "--hidden", "64,x") == "error: --hidden must be whole numbers separated by commas, got '64,x'"
    # flags win over --set: the flag's human_weight is checked, not the --set one
    assert fails("distill", "--set", "human_weight=1", "--human-weight", "-1") == \
        "error: student: human_weight cannot be negative"


def test_annotate_queue_weights_are_the_librarys(tmp_path):
    from typer.testing import CliRunner

    from relkit.annotation.queue import STRATEGIES
    from relkit.cli import app

    assert relkit("init", tmp_path / "ws").returncode == 0
    for queue, message in [
        ("unsure=1", f"unknown queue strategy 'unsure'; expected some of {', '.join(STRATEGIES)}"),
        ("uncertain=lots", "queue weights: 'uncertain=lots' is not STRATEGY=NUMBER"),
        ("cold=0", "give at least one queue strategy a weight above 0 (e.g. uncertain=1)"),
        ("cold=-1", "queue strategy cold: the weight must be a number >= 0, not -1.0"),
    ]:
        result = CliRunner().invoke(app, ["annotate", "--queue", queue, "-w", str(tmp_path / "ws")])
        assert result.exit_code == 2, result.output
        assert " ".join(result.output.split()) == f"error: --queue '{queue}': {message}"


def test_distill_results_render_themselves():
    """The scaling curve's table and a student's line, from figures put in by hand."""
    from pathlib import Path

    from rich.console import Console

    from relkit.scale import LabelScale
    from relkit.student.distill import CurveRow, ScalingCurve
    from relkit.student.model import Student, StudentMeta

    dev = {"accuracy": 0.5, "qwk": 0.25, "ndcg@10": 0.875, "argmax_accuracy": 0.4, "argmax_qwk": None}
    curve = ScalingCurve((CurveRow("human", 0, 120, {"accuracy": 0.5, "qwk": 0.125, "ndcg@10": 0.75}, dev, 1.5),
                          CurveRow("5000", 5000, 120, {"accuracy": 0.625, "qwk": 0.5, "ndcg@10": 0.8125}, dev, 12.0)),
                         k=3)
    console = Console(width=200, record=True)
    console.print(curve)
    lines = [" ".join(line.replace("│", " ").replace("┃", " ").split()) for line in console.export_text().splitlines()]
    assert lines[0] == "students on the test split (3 levels)"
    assert "trained on teacher pairs human pairs accuracy qwk ndcg@10 dev ndcg@10 seconds" in lines
    assert "human labels only 0 120 0.5000 0.1250 0.7500 0.8750 1.5" in lines
    assert "teacher 5000 5,000 120 0.6250 0.5000 0.8125 0.8750 12.0" in lines
    assert [r.name for r in curve] == ["human", "5000"] and len(curve) == 2
    assert curve.to_dicts()[1] == {"name": "5000", "teacher_pairs": 5000, "human_pairs": 120,
                                   "metrics": {"accuracy": 0.625, "qwk": 0.5, "ndcg@10": 0.8125}, "dev": dev,
                                   "seconds": 12.0}

    data = {"teacher_pairs": 5000, "human_pairs": 120, "teacher_queries": 400, "human_queries": 30, "seconds": 3.5}
    meta = StudentMeta(scale=LabelScale.default(3), features={}, blocks=[], hidden=[8], cutpoints=[1.5, 2.5],
                       data=data, metrics={"dev": dev, "best_epoch": 7})
    student = Student(meta, {}, Path("ws/artifacts/student-demo"))
    assert student.to_dict() == {"student": "student-demo", **data, "cutpoints": [1.5, 2.5], "dev": dev,
                                 "best_epoch": 7}
    assert student.summary() == (
        "student-demo: 5,000 teacher-labeled pairs of 400 queries + 120 human ones of 30, best epoch 7, dev nDCG@10 "
        "0.8750, cutpoints accuracy 0.5000 QWK 0.2500 (argmax: 0.4000, -) (3.5 s); evaluate with "
        "`relkit eval --system student:demo`")

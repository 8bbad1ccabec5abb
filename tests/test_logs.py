"""One logging convention: module loggers, one handler installed by the CLI, bars that follow the
level. Commands run in a real process whose stderr is a real terminal (a pseudo-terminal), since
bars are drawn only on one."""
import fcntl
import json
import logging
import os
import pty
import struct
import subprocess
import sys
import termios
import threading

from typer.testing import CliRunner

from conftest import ROOT, make_shop, relkit_command, shared_file

ENV = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}


def on_terminal(args: list[str]) -> tuple[int, str, str]:
    """Run `args` with stderr on a pseudo-terminal; (exit status, stdout, what the terminal showed)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))   # 50 rows, 200 columns
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=slave, env=ENV)
    os.close(slave)
    shown: list[bytes] = []

    def read():
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:   # the other side closed
                return
            if not data:
                return
            shown.append(data)

    reader = threading.Thread(target=read)
    reader.start()
    stdout = proc.stdout.read()
    proc.wait(timeout=600)
    reader.join(timeout=60)
    os.close(master)
    return proc.returncode, stdout.decode(), b"".join(shown).decode(errors="replace")


def relkit(*args) -> tuple[int, str, str]:
    return on_terminal(relkit_command(*args))


def shop_path(tmp_path):
    ws = make_shop(tmp_path)
    ws.close()
    return ws.path


def test_quiet_silences_messages_and_bars(tmp_path):
    # two fresh workspaces: each run encodes the item texts (a bar) and scores (a message)
    quiet_ws, loud_ws = shop_path(tmp_path / "a"), shop_path(tmp_path / "b")
    systems = ["--system", "bm25", "--system", "embedding"]
    code, out, shown = relkit("eval", *systems, "-w", loud_ws)
    assert code == 0, shown
    assert "scoring" in shown and "pairs with embedding" in shown          # the messages
    assert "encoding item texts" in shown and "100%" in shown              # relkit's bar
    assert "ndcg@10" in out and "scoring" not in out                       # the results, on stdout

    code, quiet_out, shown = relkit("--quiet", "eval", *systems, "-w", quiet_ws)
    assert code == 0, shown
    assert "scoring" not in shown and "encoding" not in shown and "%" not in shown, shown
    assert shown.strip() == "", shown
    assert "ndcg@10" in quiet_out


def test_verbose_shows_debug_lines(tmp_path):
    ws = shop_path(tmp_path)
    code, out, shown = relkit("--verbose", "status", "-w", ws)
    assert code == 0, shown
    assert "DEBUG" in shown and "relkit.workspace: opening" in shown
    assert "judgments" in out and "DEBUG" not in out
    code, out, shown = relkit("-v", "status", "-w", ws)      # the short form
    assert "relkit.workspace: opening" in shown
    code, out, shown = relkit("status", "-w", ws)            # not by default
    assert code == 0 and "DEBUG" not in shown and "opening" not in shown
    code, out, shown = relkit("-q", "-v", "status", "-w", ws)
    assert code == 2 and "--quiet and --verbose" in shown


LIBRARY_CALL = """
import logging, sys
from relkit import Workspace, evaluate, make_system
if sys.argv[2] == "configured":
    logging.basicConfig(level=logging.INFO)
with Workspace.open(sys.argv[1]) as ws:
    report = evaluate(ws, [make_system("bm25", ws), make_system("embedding", ws)])
assert report.results[1].metrics["ndcg@10"] > 0
"""


def test_a_library_call_prints_nothing_until_logging_is_configured(tmp_path):
    code, out, shown = on_terminal([sys.executable, "-c", LIBRARY_CALL, str(shop_path(tmp_path / "a")), "plain"])
    assert code == 0, shown
    assert out == ""
    assert "scoring" not in shown and "encoding" not in shown and "%|" not in shown, shown
    # the same call after logging.basicConfig(level=INFO): messages and bars, on stderr
    code, out, shown = on_terminal([sys.executable, "-c", LIBRARY_CALL, str(shop_path(tmp_path / "b")), "configured"])
    assert code == 0, shown
    assert out == ""
    assert "scoring" in shown and "encoding item texts" in shown and "100%" in shown, shown


def test_a_command_leaves_logging_as_it_found_it(tmp_path):
    """The CLI's handler and levels are undone when a command ends (the CLI can be called in-process)."""
    from relkit.cli import app

    ws = shop_path(tmp_path)
    root, ours = logging.getLogger(), logging.getLogger("relkit")
    before = (list(root.handlers), root.level, ours.level)
    result = CliRunner().invoke(app, ["--verbose", "status", "-w", str(ws)])
    assert result.exit_code == 0, result.output
    assert "relkit.workspace: opening" in result.output
    assert (list(root.handlers), root.level, ours.level) == before


def test_off_a_terminal_long_work_logs_a_line_of_progress_now_and_then(monkeypatch, caplog):
    import time

    from relkit import logs

    monkeypatch.setattr(logs, "LOG_EVERY", 0.2)
    assert not sys.stderr.isatty()  # pytest captures it
    caplog.set_level(logging.INFO, logger="relkit")
    for _ in logs.progress(range(10), desc="scoring", unit="batch"):
        time.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records if r.name == "relkit.progress"]
    assert 2 <= len(lines) <= 5 and all(line.startswith("scoring: ") for line in lines)
    assert "batch/s" in lines[0] and lines[-1].startswith("scoring: 10/10 (100%)")  # and where it ended

    caplog.clear()
    for _ in logs.progress(range(10), desc="quick"):   # done before a line was due: says nothing
        pass
    bar = logs.progress(total=3, desc="by hand")
    for _ in range(3):
        time.sleep(0.1)
        bar.update(1)
        bar.set_postfix(loss=0.25)
    bar.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "relkit.progress"]
    assert lines and all(line.startswith("by hand: ") and "loss=0.25" in line for line in lines)
    assert lines[-1].startswith("by hand: 3/3 (100%)")

    caplog.clear()
    caplog.set_level(logging.WARNING, logger="relkit")   # --quiet: not a line
    for _ in logs.progress(range(10), desc="silent"):
        time.sleep(0.05)
    assert not [r for r in caplog.records if r.name == "relkit.progress"]


PROGRESS = """
import logging, sys, time
from relkit import logs
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s: %(message)s")
logs.LOG_EVERY = 0.05
seen = []
for i in logs.progress(range(4), desc="scoring"):
    time.sleep(0.1)
    seen.append(i)
bar = logs.progress(total=2, desc="by hand")
for _ in range(2):
    time.sleep(0.1)
    bar.update(1)
    bar.set_postfix(loss=0.25)
bar.close()
print("seen", seen)
"""


def test_tqdm_disable_in_the_environment_turns_the_progress_lines_off():
    """TQDM_DISABLE=1 (tqdm's own switch, common in CI) where the lines would show: stderr a pipe, the
    `relkit` logger at INFO. The work runs through and says no progress (tqdm reads the variable once,
    on import: a process of its own)."""
    run, without = [sys.executable, "-c", PROGRESS], {k: v for k, v in ENV.items() if k != "TQDM_DISABLE"}
    lines = subprocess.run(run, capture_output=True, text=True, env=without, timeout=120)
    assert lines.returncode == 0, lines.stderr
    said = lines.stdout.splitlines()
    assert said[-1] == "seen [0, 1, 2, 3]"
    scoring = [line for line in said if line.startswith("relkit.progress: scoring: ")]     # the lines, without it
    by_hand = [line for line in said if line.startswith("relkit.progress: by hand: ")]
    assert len(scoring) + len(by_hand) == len(said) - 1, said
    assert scoring[-1].startswith("relkit.progress: scoring: 4/4 (100%)"), said
    assert by_hand[-1].startswith("relkit.progress: by hand: 2/2 (100%)") and "loss=0.25" in by_hand[-1], said

    off = subprocess.run(run, capture_output=True, text=True, env={**without, "TQDM_DISABLE": "1"}, timeout=120)
    assert off.returncode == 0, off.stderr
    assert off.stdout == "seen [0, 1, 2, 3]\n" and off.stderr == ""


def test_gpu_check_tiny_runs_with_tqdm_disabled(tmp_path):
    """benchmarks/gpu_check.py --tiny, every part on slices of the real datasets on the CPU, with
    TQDM_DISABLE=1 (which the script sets for its plain-line log) and relkit's logger at INFO."""
    shared_file("homedepot/pairs.csv")
    shared_file("crowdflower/pairs.csv")
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--tiny", "--workdir",
                          str(tmp_path / "work"), "--out", str(tmp_path / "out")], capture_output=True, text=True,
                         env={**ENV, "TQDM_DISABLE": "1"}, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert results["env"]["tiny"] is True and results["env"]["device"] == "cpu"
    tried = {"homedepot": ["homedepot-minilm-lr5e-05-len32", "homedepot-minilm-lr0.0001-len32"],
             "crowdflower": ["crowdflower-minilm-lr5e-05-len32"]}
    for dataset, names in tried.items():
        part = results["teacher"][dataset]
        assert [t["name"] for t in part["tried"]] == names and part["skipped"] == []
        best = max(part["tried"], key=lambda t: t["dev"]["qwk"])["name"]     # the first of equals
        assert part["chosen"] == best
        assert [s["name"] for s in part["test"]["systems"]] == ["embedding", f"teacher:{best}", "bm25"]
    labeling = results["labeling"]
    assert labeling["pairs"] == 32 and [r["path"] for r in labeling["rows"]] == [
        "CrossEncoder.predict fp32", "CrossEncoder.predict bf16", "relkit torch fp32", "relkit torch bf16",
        "relkit torch bf16 + prior"]
    modes = results["decoder"]["modes"]
    assert {m: [t["name"] for t in modes[m]["tried"]] for m in modes} == {
        "lora": ["crowdflower-tiny-llama-lora-lr0.0002-len32"], "full": ["crowdflower-tiny-llama-full-lr3e-05-len32"]}
    tables = (tmp_path / "out" / "gpu_check.md").read_text()
    chosen = results["teacher"]["homedepot"]["chosen"]
    assert f"## Labeling 32 pairs with teacher-{chosen}\n" in tables and "TINY (a check of the script" in tables

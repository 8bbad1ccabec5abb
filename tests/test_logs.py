"""One logging convention: module loggers, one handler installed by the CLI, bars that follow the
level. Commands run in a real process whose stderr is a real terminal (a pseudo-terminal), since
bars are drawn only on one."""
import fcntl
import logging
import os
import pty
import struct
import subprocess
import sys
import termios
import threading

from typer.testing import CliRunner

from conftest import make_shop

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
    return on_terminal([sys.executable, "-m", "relkit", *map(str, args)])


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

import duckdb
import pytest

from relkit import LabelScale, RelkitError, Workspace


def test_create_makes_database_and_artifacts(tmp_path):
    scale = LabelScale.default(4)
    with Workspace.create(tmp_path / "w", scale):
        pass
    assert (tmp_path / "w" / "relkit.duckdb").is_file()
    assert (tmp_path / "w" / "artifacts").is_dir()
    con = duckdb.connect(str(tmp_path / "w" / "relkit.duckdb"), read_only=True)
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    con.close()
    assert {"items", "queries", "judgments", "pairs", "engagement", "splits", "meta"} <= tables
    with Workspace.open(tmp_path / "w") as ws:
        assert ws.scale == scale


def test_create_twice_is_an_error(tmp_path):
    Workspace.create(tmp_path / "w").close()
    with pytest.raises(RelkitError, match="already holds a relkit workspace"):
        Workspace.create(tmp_path / "w")


def test_open_missing(tmp_path):
    with pytest.raises(RelkitError, match="relkit init"):
        Workspace.open(tmp_path / "nothing")


def test_transaction_rolls_back(ws):
    with pytest.raises(ZeroDivisionError):
        with ws.transaction():
            ws.run("INSERT INTO queries VALUES ('q1', 'red chair', NULL, NULL)")
            1 / 0
    assert ws.count("queries") == 0


# --- the workspace as the data layer -------------------------------------------------------------

def test_registered_table_is_gone_however_the_block_ends(ws):
    with ws.registered("_ids", {"item_id": ["a", "b"]}):
        assert ws.fetchall("SELECT item_id FROM _ids ORDER BY 1") == [("a",), ("b",)]
    with pytest.raises(duckdb.CatalogException):
        ws.fetchall("SELECT * FROM _ids")
    with pytest.raises(ZeroDivisionError):
        with ws.registered("_ids", {"item_id": ["c"]}):
            1 / 0
    with pytest.raises(duckdb.CatalogException):
        ws.fetchall("SELECT * FROM _ids")


def test_an_import_that_fails_leaves_nothing_registered(ws, tmp_path):
    """A judgments file that clashes with the workspace raises inside its registration; the rows it
    registered are not left behind for the next statement to find."""
    from conftest import write_csv
    from relkit import InputError, import_file

    import_file(ws, "judgments", write_csv(tmp_path / "a.csv", ["query", "title", "label"], [["q", "t", "1"]]))
    with pytest.raises(InputError, match="conflicting judgments"):
        import_file(ws, "judgments", write_csv(tmp_path / "b.csv", ["query", "title", "label"], [["q", "t", "2"]]))
    with pytest.raises(duckdb.CatalogException):
        ws.fetchall("SELECT * FROM _new")


def test_item_records_are_one_query(ws, tmp_path):
    from conftest import write_csv
    from relkit import import_file
    from relkit.workspace import ITEM_RECORD_COLUMNS

    import_file(ws, "items", write_csv(tmp_path / "i.csv", ["item_id", "title", "description"],
                                       [["b", "Blue lamp", "a lamp"], ["a", "Red chair", ""]]))
    records = ws.item_records()
    assert list(records) == ["a", "b"] and tuple(records["b"]) == ITEM_RECORD_COLUMNS
    assert records["b"]["title"] == "Blue lamp" and records["b"]["caption"] is None
    assert list(ws.item_records(["b", "zzz", "b"])) == ["b"]


def test_artifact_references(ws):
    import json

    for kind, name in (("teacher", "demo"), ("student", "demo"), ("teacher", "other")):
        folder = ws.artifact_dir(kind, name)
        folder.mkdir(parents=True)
        (folder / "relkit.json").write_text(json.dumps({"kind": kind}))
    teacher = ws.artifacts / "teacher-demo"
    assert ws.artifact("teacher", "demo") == teacher
    assert ws.artifact("teacher", "teacher-demo") == teacher
    assert ws.artifact("teacher", str(teacher.resolve())) == teacher.resolve()
    assert ws.artifact("student", "demo") == ws.artifacts / "student-demo"
    assert ws.artifact_name("teacher", teacher) == "demo"
    with pytest.raises(RelkitError, match="is a student, not a teacher"):
        ws.artifact("teacher", "student-demo")
    with pytest.raises(RelkitError, match="no teacher 'nope'.*teachers here: teacher-demo, teacher-other"):
        ws.artifact("teacher", "nope")


def _hold_lock(db, seconds: float):
    """Another process that opens the database for writing, says so, and keeps it `seconds`."""
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, sys, time\n"
        f"con = duckdb.connect({str(db)!r})\n"
        "print('locked', flush=True)\n"
        f"time.sleep({seconds})\n"
        "con.close()\n")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_open_waits_while_another_process_writes(tmp_path, monkeypatch):
    import time

    Workspace.create(tmp_path / "w").close()
    holder = _hold_lock(tmp_path / "w" / "relkit.duckdb", 1.5)
    started = time.monotonic()
    with Workspace.open(tmp_path / "w") as ws:      # waits for the other process, then opens
        assert ws.count("items") == 0
    assert time.monotonic() - started > 0.5
    holder.wait(timeout=30)

    monkeypatch.setenv("RELKIT_LOCK_WAIT", "0.3")
    holder = _hold_lock(tmp_path / "w" / "relkit.duckdb", 10)
    try:
        with pytest.raises(RelkitError, match=r"is in use by another process .*PID.* stayed busy for 0.3 s.*"
                                              r"RELKIT_LOCK_WAIT"):
            Workspace.open(tmp_path / "w", read_only=True)
    finally:
        holder.kill()
        holder.wait()


def test_a_released_workspace_lets_another_process_write(tmp_path):
    import subprocess
    import sys

    ws = Workspace.create(tmp_path / "w")
    ws.set_meta("mine", "1")
    ws.release()
    writer = subprocess.run([sys.executable, "-c", (
        "from relkit import Workspace\n"
        f"ws = Workspace.open({str(tmp_path / 'w')!r})\n"
        "ws.set_meta('theirs', '2')\n"
        "ws.close()\n")], capture_output=True, text=True, timeout=120)
    assert writer.returncode == 0, writer.stderr
    assert ws.get_meta("theirs") == "2" and ws.get_meta("mine") == "1"   # reopened on demand
    with ws.transaction():
        with pytest.raises(RelkitError, match="inside a transaction"):
            ws.release()
    ws.close()


# --- what `relkit status` shows ------------------------------------------------------------------

def test_summary_counts_what_the_workspace_holds(ws3):
    """Every figure of the summary, counted by hand from the rows put in."""
    from rich.console import Console

    from relkit.workspace import ACTIVE_FILE, Summary

    ws = ws3
    ws.run("INSERT INTO items (item_id, title) VALUES ('i1', 'oak chair'), ('i2', 'lamp'), ('i3', 'door')")
    ws.run("""INSERT INTO queries VALUES ('q1', 'chair', NULL, NULL), ('q2', 'lamp', NULL, NULL),
              ('q3', 'door', NULL, '{"source": "log"}'), ('q4', 'desk', NULL, '{"source": "titles"}'),
              ('q5', 'rug', NULL, '{"source": "log"}'), ('q6', 'bed', NULL, '{"source": "elsewhere"}')""")
    ws.run("""INSERT INTO judgments VALUES ('q1', 'i1', 3, NULL), ('q1', 'i2', 1, NULL), ('q2', 'i2', 3, NULL),
              ('q2', 'i3', 2, NULL), ('q6', 'i1', 1, NULL)""")
    ws.run("INSERT INTO splits VALUES ('q1', 'train', false), ('q2', 'test', true), ('q3', 'train', false)")
    ws.run("INSERT INTO pairs VALUES ('q3', 'i1', 'bm25')")
    ws.run("""INSERT INTO item_captions VALUES ('i1', 'a.png', 'h', 'm', NULL, now()),
              ('i2', 'b.png', NULL, 'm', 'not an image', now()), ('i3', 'c.png', NULL, 'm', 'gone', now())""")
    ws.run("INSERT INTO engaged_queries VALUES ('i1', 'oak')")
    for name in ("student-b", "teacher-a"):
        (ws.artifacts / name).mkdir()
        (ws.artifacts / name / "relkit.json").write_text("{}")
    (ws.path / ACTIVE_FILE).write_text('{"student": "student-b", "path": "x"}')
    summary = ws.summary()
    assert summary.rows == {"items": 3, "queries": 6, "judgments": 5, "pairs": 1, "engagement": 0}
    assert (summary.captioned, summary.unreadable, summary.engaged) == (1, 2, 1)
    assert summary.annotations is None and summary.models == ("student-b", "teacher-a")
    assert summary.active_student == "student-b"
    assert summary.judgments == {(3, "train"): 1, (1, "train"): 1, (3, "test"): 1, (2, "test"): 1,
                                 (1, "unassigned"): 1}
    assert summary.queries == {"train": 2, "test": 1, "unassigned": 3}
    assert summary.added_queries == {"log": 2, "titles": 1}     # an unknown source is not relkit's

    ws.run("""CREATE TABLE annotations (annotator VARCHAR, query_id VARCHAR, item_id VARCHAR, label INTEGER,
              note VARCHAR, created_at TIMESTAMP, seconds DOUBLE)""")
    ws.run("""INSERT INTO annotations VALUES ('ann', 'q1', 'i1', 3, NULL, now(), 1), ('bob', 'q1', 'i1', 2, NULL, now(), 1),
              ('ann', 'q2', 'i2', 1, NULL, now(), 1), ('bob', 'q2', 'i2', 1, NULL, now(), 1),
              ('ann', 'q2', 'i3', 2, NULL, now(), 1)""")
    (ws.path / ACTIVE_FILE).unlink()
    summary = ws.summary()
    assert (summary.annotations, summary.annotators, summary.disagreements) == (5, 2, 1)
    assert summary.active_student is None
    assert isinstance(summary, Summary)

    console = Console(width=200, record=True)
    console.print(summary)
    text = [" ".join(line.replace("│", " ").split()) for line in console.export_text().splitlines()]
    assert text[0] == f"{ws.path} scale: {ws.scale.describe()}"
    for line in ("captioned items 1 (2 images unreadable)", "items with engaged-query tokens 1",
                 "annotations 5 by 2 annotators (1 pairs they disagree on)", "models 2 (student-b, teacher-a)",
                 "active student none (relkit promote NAME)",
                 # level, train, dev, test, unassigned, total
                 "1 bad 1 0 0 1 2", "2 fair 0 0 1 0 1", "3 good 1 0 1 0 2",
                 "queries per split: train 2, dev 0, test 1, unassigned 3",
                 "train queries nobody judged, added by relkit pairs: 2 from the engagement log, 1 from item titles"):
        assert line in text, line


def test_summary_counts_queries_and_items_per_language(ws, tmp_path):
    """Languages from the files' `language` column, and a query without a letter, which has none."""
    from rich.console import Console

    from conftest import write_csv
    from relkit import import_file

    import_file(ws, "items", write_csv(tmp_path / "items.csv", ["item_id", "title", "language"],
                                       [["i1", "oak chair", "en"], ["i2", "Eichenstuhl", "de"],
                                        ["i3", "Stehlampe", "de"]]))
    import_file(ws, "queries", write_csv(tmp_path / "queries.csv", ["query_id", "query", "language"],
                                         [["q1", "chair", "en"], ["q2", "lamp", "en-US"], ["q3", "Stuhl", "de"],
                                          ["q4", "3/4", ""]]))
    summary = ws.summary()
    assert summary.languages == {"queries": {"en": 2, "de": 1, "none": 1}, "items": {"de": 2, "en": 1}}

    console = Console(width=200, record=True)
    console.print(summary)
    text = [" ".join(line.replace("│", " ").split()) for line in console.export_text().splitlines()]
    assert "languages of queries en 2, de 1, none 1" in text
    assert "languages of items de 2, en 1" in text

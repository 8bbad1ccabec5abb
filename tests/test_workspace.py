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

"""A workspace: one directory holding `relkit.duckdb` (every table) and `artifacts/` (models)."""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from relkit import __version__
from relkit.errors import RelkitError
from relkit.scale import LabelScale
from relkit.text import normalize_space

if TYPE_CHECKING:
    import duckdb

logger = logging.getLogger(__name__)

DB_NAME = "relkit.duckdb"
SCHEMA_VERSION = 1
DEFAULT_WORKSPACE = "relkit-ws"
SPLITS = ("train", "dev", "test")
ARTIFACT_KINDS = ("teacher", "student")
ENCODER_KEY = "encoder"          # meta: the bi-encoder every stage uses (relkit.features.embeddings); unset: default
ACTIVE_FILE = "active-student"   # beside the database: the student `relkit serve` serves (relkit.promotion)
# queries.extra's `source` of the train queries nobody judged that `relkit pairs` adds -> where they came from
ADDED_QUERIES = {"log": "the engagement log", "titles": "item titles"}
# DuckDB lets one process write a database at a time: a command that finds the workspace busy
# waits this long for it (seconds; the environment variable RELKIT_LOCK_WAIT overrides)
LOCK_WAIT = 30.0

SCHEMA = """
CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
CREATE TABLE items (
    item_id VARCHAR PRIMARY KEY,
    title VARCHAR,
    description VARCHAR,
    image VARCHAR,              -- a local path or a URL
    board_titles VARCHAR[],     -- titles of the boards / collections the item was saved to
    link_title VARCHAR,
    link_description VARCHAR,
    language VARCHAR,
    extra JSON                  -- every other column of the imported file
);
CREATE TABLE queries (
    query_id VARCHAR PRIMARY KEY,
    query VARCHAR NOT NULL,
    language VARCHAR,
    extra JSON
);
CREATE TABLE judgments (
    query_id VARCHAR NOT NULL,
    item_id VARCHAR NOT NULL,
    label INTEGER NOT NULL,     -- level 1..K of the workspace scale
    extra JSON,
    PRIMARY KEY (query_id, item_id)
);
CREATE TABLE pairs (            -- unlabeled candidates for the teacher to label
    query_id VARCHAR NOT NULL,
    item_id VARCHAR NOT NULL,
    source VARCHAR,
    PRIMARY KEY (query_id, item_id)
);
CREATE TABLE engagement (       -- aggregated logs, one row per (query, item, timestamp)
    query VARCHAR NOT NULL,
    item_id VARCHAR NOT NULL,
    impressions BIGINT NOT NULL,
    clicks BIGINT NOT NULL,
    saves BIGINT NOT NULL,
    long_clicks BIGINT NOT NULL,
    timestamp TIMESTAMP NOT NULL,
    PRIMARY KEY (query, item_id, timestamp)
);
CREATE TABLE splits (
    query_id VARCHAR PRIMARY KEY,
    split VARCHAR NOT NULL CHECK (split IN ('train', 'dev', 'test')),
    pinned BOOLEAN NOT NULL     -- set by the user, never reassigned by `relkit split`
);
"""

# Derived item text, added to workspaces of any age when they are opened for writing.
DERIVED = """
CREATE TABLE IF NOT EXISTS captions (         -- synthetic captions, by image content and model
    image_hash VARCHAR NOT NULL,              -- sha256 of the image file's bytes
    model VARCHAR NOT NULL,
    caption VARCHAR NOT NULL,
    PRIMARY KEY (image_hash, model)
);
CREATE TABLE IF NOT EXISTS item_captions (    -- the last captioning of each item's image
    item_id VARCHAR PRIMARY KEY,
    image VARCHAR NOT NULL,
    image_hash VARCHAR,                       -- NULL when the image could not be read
    model VARCHAR NOT NULL,
    error VARCHAR,                            -- why there is no caption (missing file, not an image, timeout)
    updated TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS engaged_queries (  -- top tokens of the queries that led to engagement
    item_id VARCHAR PRIMARY KEY,
    tokens VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS text_vectors (     -- cached embeddings of item texts, by encoder
    model VARCHAR NOT NULL,                   -- the encoder as the user named it
    text_hash VARCHAR NOT NULL,               -- of the text: an item whose text changes is encoded again
    vector FLOAT[] NOT NULL,
    PRIMARY KEY (model, text_hash)
);
CREATE TABLE IF NOT EXISTS graph_vectors (    -- item embeddings from co-engagement (features/graph.py)
    key VARCHAR NOT NULL,                     -- of the engagement log and parameters they were fit on
    item_id VARCHAR NOT NULL,
    vector FLOAT[] NOT NULL,
    PRIMARY KEY (key, item_id)
);
CREATE TABLE IF NOT EXISTS image_vectors (    -- item image embeddings, by encoder and image (features/images.py)
    model VARCHAR NOT NULL,
    image VARCHAR NOT NULL,                   -- the item's image: path or URL
    stamp VARCHAR NOT NULL,                   -- size and mtime of a local file: a changed file is encoded again
    vector FLOAT[],                           -- NULL when the image could not be read
    error VARCHAR,
    PRIMARY KEY (model, image)
);
CREATE OR REPLACE VIEW item_records AS        -- every field an item text can use
SELECT i.item_id, i.title, i.description, c.caption, e.tokens AS engaged_queries, i.board_titles,
       i.link_title, i.link_description, i.image, i.language
FROM items i
LEFT JOIN item_captions ic USING (item_id)
LEFT JOIN captions c ON c.image_hash = ic.image_hash AND c.model = ic.model
LEFT JOIN engaged_queries e USING (item_id);
"""
ITEM_RECORD_COLUMNS = ("item_id", "title", "description", "caption", "engaged_queries", "board_titles",
                       "link_title", "link_description", "image", "language")


def lock_wait() -> float:
    value = os.environ.get("RELKIT_LOCK_WAIT")
    try:
        return LOCK_WAIT if value is None else max(0.0, float(value))
    except ValueError:
        raise RelkitError(f"RELKIT_LOCK_WAIT must be a number of seconds, not {value!r}") from None


def connect(db: Path, read_only: bool = False, wait: float | None = None) -> duckdb.DuckDBPyConnection:
    """A connection to the database file, waiting (with backoff) while another process holds its lock."""
    import duckdb   # here, not at the top: the service reads no workspace and loads no DuckDB

    wait = lock_wait() if wait is None else wait
    deadline, delay = time.monotonic() + wait, 0.05
    logger.debug("opening %s%s", db, " read-only" if read_only else "")
    while True:
        try:
            return duckdb.connect(str(db), read_only=read_only)
        except duckdb.IOException as e:
            if "lock" not in str(e).lower():
                raise RelkitError(f"cannot open {db}: {e}") from None
            if time.monotonic() >= deadline:
                holder = str(e).split("Conflicting lock is held in", 1)[-1].split(". See also")[0].strip()
                raise RelkitError(f"the workspace {db.parent} is in use by another process ({holder}) and stayed "
                                  f"busy for {wait:g} s; DuckDB lets one process write at a time. Try again when it "
                                  f"is done, or wait longer with RELKIT_LOCK_WAIT=SECONDS") from None
            logger.debug("%s is locked by another process: trying again in %.2f s", db, delay)
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


@dataclass
class Workspace:
    """An open workspace. Use `Workspace.create(path)` or `Workspace.open(path)`; close it, or use
    it as a context manager.

    The database is opened when a statement needs it and stays open until `release()` or
    `close()`: long jobs (training, labeling) read what they need, release it while they work, and
    reopen it briefly to write, so other relkit commands can use the workspace meanwhile. Opening a
    workspace another process is writing waits for it (`RELKIT_LOCK_WAIT`, 30 s) before giving up.

    >>> import tempfile
    >>> folder = tempfile.TemporaryDirectory()
    >>> ws = Workspace.create(f"{folder.name}/my-ws")
    >>> ws.fetchone("SELECT count(*) FROM items")
    (0,)
    >>> ws.close(); folder.cleanup()
    """

    path: Path
    scale: LabelScale
    read_only: bool = False
    _con: duckdb.DuckDBPyConnection | None = field(default=None, repr=False)
    _in_transaction: bool = field(default=False, repr=False)

    @classmethod
    def create(cls, path: str | os.PathLike, scale: LabelScale | None = None,
               encoder: str | None = None) -> "Workspace":
        """A new workspace at `path` with the label `scale` and the bi-encoder `encoder` (a name
        `relkit.features.embeddings.encoder_spec` knows; None: the default one)."""
        path = Path(path)
        if (path / DB_NAME).exists():
            raise RelkitError(f"{path} already holds a relkit workspace")
        if path.exists() and not path.is_dir():
            raise RelkitError(f"{path} exists and is not a directory")
        scale = scale or LabelScale.default()
        path.mkdir(parents=True, exist_ok=True)
        (path / "artifacts").mkdir(exist_ok=True)
        tmp = path / (DB_NAME + ".creating")
        tmp.unlink(missing_ok=True)
        import duckdb

        con = duckdb.connect(str(tmp))
        try:
            con.execute(SCHEMA)
            con.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("schema_version", str(SCHEMA_VERSION)),
                ("relkit_version", __version__),
                ("scale", scale.to_json()),
                *([(ENCODER_KEY, encoder)] if encoder else []),
            ])
            con.close()
        except BaseException:
            con.close()
            tmp.unlink(missing_ok=True)
            raise
        tmp.rename(path / DB_NAME)  # a workspace appears whole or not at all
        return cls.open(path)

    @classmethod
    def open(cls, path: str | os.PathLike, read_only: bool = False) -> "Workspace":
        path = Path(path)
        db = path / DB_NAME
        if not db.exists():
            raise RelkitError(f"no relkit workspace at {path} (create one with `relkit init {path}`)")
        con = connect(db, read_only)
        rows = dict(con.execute("SELECT key, value FROM meta").fetchall())
        version = int(rows.get("schema_version", 0))
        if version != SCHEMA_VERSION:
            con.close()
            raise RelkitError(f"{db} has schema version {version}; this relkit reads version {SCHEMA_VERSION}")
        (path / "artifacts").mkdir(exist_ok=True)
        if not read_only:
            con.execute(DERIVED)
        return cls(path=path, scale=LabelScale.from_json(rows["scale"]), read_only=read_only, _con=con)

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The database connection, opened again (waiting for the lock) if it was released."""
        if self._con is None:
            self._con = connect(self.path / DB_NAME, self.read_only)
        return self._con

    def release(self) -> None:
        """Close the database until the next statement, so other processes can open the workspace."""
        if self._in_transaction:
            raise RelkitError("the workspace cannot be released inside a transaction")
        if self._con is not None:
            self._con.close()
            self._con = None

    @property
    def artifacts(self) -> Path:
        return self.path / "artifacts"

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """All or nothing: commits when the block ends, rolls back if it raises."""
        con = self.con
        con.begin()
        self._in_transaction = True
        try:
            yield con
        except BaseException:
            con.rollback()
            raise
        else:
            con.commit()
        finally:
            self._in_transaction = False

    # DuckDB wants every result read to the end before the connection does anything else, so
    # statements go through these three.
    def run(self, sql: str, params: list | None = None) -> None:
        self.con.execute(sql, params).fetchall()

    def fetchall(self, sql: str, params: list | None = None) -> list[tuple]:
        return self.con.execute(sql, params).fetchall()

    def fetchone(self, sql: str, params: list | None = None) -> tuple | None:
        rows = self.fetchall(sql, params)
        return rows[0] if rows else None

    def has_table(self, name: str) -> bool:
        """Whether the database has the table (a derived table is missing from a workspace made by an
        older relkit until it is opened for writing)."""
        return bool(self.fetchone("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name])[0])

    @contextmanager
    def memory_limit(self, limit: str) -> Iterator[None]:
        """DuckDB's memory limit set to `limit` (e.g. '256MB') inside the block: a sort or a join past
        it goes to DuckDB's temporary files instead of growing the process."""
        (before,) = self.fetchone("SELECT current_setting('memory_limit')")
        self.run(f"SET memory_limit = '{limit}'")
        try:
            yield
        finally:
            self.run(f"SET memory_limit = '{before}'")

    @contextmanager
    def registered(self, name: str, data, types: dict | None = None) -> Iterator[str]:
        """Expose data as a table `name` to SQL inside the block, and unregister it however the block
        ends. `data` is a pyarrow table or a dict of column lists (strings unless `types` says
        otherwise).

        >>> import tempfile
        >>> folder = tempfile.TemporaryDirectory()
        >>> ws = Workspace.create(f"{folder.name}/ws")
        >>> with ws.registered("_ids", {"item_id": ["a", "b"]}):
        ...     ws.fetchall("SELECT count(*) FROM _ids")
        [(2,)]
        >>> ws.has_table("_ids")
        False
        >>> ws.close(); folder.cleanup()
        """
        import pyarrow as pa

        if isinstance(data, dict):
            types = types or {}
            data = pa.table({k: pa.array(v, type=types.get(k, pa.string())) for k, v in data.items()})
        con = self.con
        con.register(name, data)
        try:
            yield name
        finally:
            con.unregister(name)

    def item_records(self, item_ids: list[str] | None = None) -> dict[str, dict]:
        """item_id -> the item's record (every field an item text can use, `ITEM_RECORD_COLUMNS`), in
        item_id order; only the items of `item_ids` when given."""
        cols = ", ".join(f"i.{c}" for c in ITEM_RECORD_COLUMNS)
        if item_ids is None:
            rows = self.fetchall(f"SELECT {cols} FROM item_records i ORDER BY item_id")
        else:
            with self.registered("_wanted_items", {"item_id": list(dict.fromkeys(item_ids))}):
                rows = self.fetchall(f"SELECT {cols} FROM item_records i JOIN _wanted_items USING (item_id) "
                                     f"ORDER BY item_id")
        return {r[0]: dict(zip(ITEM_RECORD_COLUMNS, r)) for r in rows}

    def artifact(self, kind: str, ref: str) -> Path:
        """The folder of a saved model of `kind` (teacher or student) that `ref` names: its name
        (`demo` for artifacts/teacher-demo), its folder in artifacts/ (`teacher-demo`), or a path."""
        if kind not in ARTIFACT_KINDS:
            raise ValueError(f"unknown artifact kind {kind!r}")
        for path in (self.artifact_dir(kind, ref), self.artifacts / ref, Path(ref)):
            meta = path / "relkit.json"
            if meta.is_file():
                found = json.loads(meta.read_text()).get("kind")
                if found != kind:
                    raise RelkitError(f"{path} is a {found}, not a {kind}")
                return path
        here = [m["id"] for m in self.models() if m["kind"] == kind]
        raise RelkitError(f"no {kind} '{ref}' in {self.artifacts} (and no such folder); {kind}s here: "
                          f"{', '.join(here) or 'none'}")

    def scaled_artifact(self, kind: str, ref: str) -> Path:
        """`artifact(kind, ref)`, refused when that model was trained on another label scale than
        this workspace's: its distributions would be over other levels."""
        path = self.artifact(kind, ref)
        saved = json.loads((path / "relkit.json").read_text())["scale"]
        scale = LabelScale(names=tuple(saved["names"]), gains=tuple(saved["gains"]))
        if scale != self.scale:
            raise RelkitError(f"{path} was trained on another label scale ({scale.describe()}) than this "
                              f"workspace's ({self.scale.describe()})")
        return path

    def artifact_dir(self, kind: str, name: str) -> Path:
        """Where the model of `kind` called `name` is saved: artifacts/KIND-NAME."""
        return self.artifacts / f"{kind}-{name}"

    @staticmethod
    def artifact_name(kind: str, path: Path) -> str:
        """The name of a saved model from its folder: teacher-demo -> demo."""
        return Path(path).name.removeprefix(f"{kind}-")

    def get_meta(self, key: str) -> str | None:
        row = self.fetchone("SELECT value FROM meta WHERE key = ?", [key])
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self.run("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])

    def models(self) -> list[dict]:
        """Saved models: every artifacts/*/relkit.json."""
        found = []
        for meta in sorted(self.artifacts.glob("*/relkit.json")):
            info = json.loads(meta.read_text())
            found.append({"id": meta.parent.name, "kind": info.get("kind", "?"), "path": str(meta.parent)})
        return found

    def save_result(self, kind: str, name: str, payload: object) -> Path:
        """Keep the figures of a study (`scaling`, `ablation`) as results/KIND-NAME.json, for `relkit
        report`; a study run again under the same name replaces its file."""
        folder = self.path / "results"
        folder.mkdir(exist_ok=True)
        path = folder / f"{kind}-{name}.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        tmp.replace(path)
        return path

    def results(self, kind: str) -> list[dict]:
        """The saved studies of one kind, by name: [{"name": ..., **payload}]."""
        out = []
        for path in sorted((self.path / "results").glob(f"{kind}-*.json")):
            try:
                payload = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise RelkitError(f"{path}: not readable JSON ({e}); delete it or run the study again") from None
            out.append({"name": path.stem.removeprefix(f"{kind}-"), **payload})
        return out

    def query_ids_by_text(self) -> dict[str, str]:
        """Each query text (spacing normalised) -> the id of the first query with that text."""
        by_text: dict[str, str] = {}
        for qid, text in self.fetchall("SELECT query_id, query FROM queries ORDER BY query_id"):
            by_text.setdefault(normalize_space(text), qid)
        return by_text

    def count(self, table: str) -> int:
        return self.fetchone(f"SELECT count(*) FROM {table}")[0]

    def summary(self) -> "Summary":
        """What the workspace holds, as `relkit status` shows it (`rich.print(ws.summary())`)."""
        captioned, unreadable = self.fetchone("SELECT count(*) FILTER (WHERE error IS NULL), count(*) FILTER "
                                              "(WHERE error IS NOT NULL) FROM item_captions")
        annotations = annotators = disagreements = None
        if self.has_table("annotations"):
            annotations, annotators = self.fetchone("SELECT count(*), count(DISTINCT annotator) FROM annotations")
            disagreements = self.fetchone("SELECT count(*) FROM (SELECT 1 FROM annotations GROUP BY query_id, "
                                          "item_id HAVING min(label) <> max(label))")[0]
        active = active_student(self.path)
        judgments = self.fetchall("""
            SELECT j.label, coalesce(s.split, 'unassigned'), count(*) FROM judgments j
            LEFT JOIN splits s USING (query_id) GROUP BY ALL""")
        queries = self.fetchall("""
            SELECT coalesce(s.split, 'unassigned'), count(*) FROM queries LEFT JOIN splits s USING (query_id)
            GROUP BY ALL""")
        added = self.fetchall("""
            SELECT extra->>'source' AS source, count(*) FROM queries
            WHERE extra->>'source' IS NOT NULL GROUP BY ALL ORDER BY source""")
        languages = {table: dict(self.fetchall(f"""
            SELECT coalesce(language, 'none') AS language, count(*) AS n FROM {table}
            GROUP BY ALL ORDER BY n DESC, language""")) for table in ("queries", "items")}
        return Summary(
            path=self.path, scale=self.scale,
            rows={table: self.count(table) for table in ("items", "queries", "judgments", "pairs", "engagement")},
            captioned=captioned, unreadable=unreadable, engaged=self.count("engaged_queries"),
            annotations=annotations, annotators=annotators, disagreements=disagreements,
            models=tuple(m["id"] for m in self.models()), active_student=active["student"] if active else None,
            judgments={(level, split): n for level, split, n in judgments}, queries=dict(queries),
            added_queries={source: n for source, n in added if source in ADDED_QUERIES}, languages=languages)


@dataclass(frozen=True)
class Summary:
    """What a workspace holds (`Workspace.summary()`); rich renders it as `relkit status` shows it."""

    path: Path
    scale: LabelScale
    rows: dict[str, int]                       # rows of each main table
    captioned: int                             # items whose image has a caption
    unreadable: int                            # items whose image could not be read
    engaged: int                               # items with engaged-query tokens
    annotations: int | None                    # judgments made in `relkit annotate`; None: never annotated
    annotators: int | None
    disagreements: int | None                  # pairs whose annotators disagree
    models: tuple[str, ...]                    # artifacts folders of saved models
    active_student: str | None
    judgments: dict[tuple[int, str], int]      # (level, split or 'unassigned') -> judgments
    queries: dict[str, int]                    # split or 'unassigned' -> queries
    added_queries: dict[str, int]              # source (ADDED_QUERIES) -> queries `relkit pairs` added
    languages: dict[str, dict[str, int]] = field(default_factory=dict)   # queries/items -> language -> rows

    def __rich__(self):
        from rich.console import Group
        from rich.table import Table

        counts = Table(show_header=False, box=None)
        for table, n in self.rows.items():
            counts.add_row(table, f"{n:,}")
        counts.add_row("captioned items", f"{self.captioned:,}"
                       + (f" ({self.unreadable:,} images unreadable)" if self.unreadable else ""))
        counts.add_row("items with engaged-query tokens", f"{self.engaged:,}")
        if self.annotations is not None:
            counts.add_row("annotations", f"{self.annotations:,} by {self.annotators:,} annotator"
                           f"{'' if self.annotators == 1 else 's'}"
                           + (f" ({self.disagreements:,} pairs they disagree on)" if self.disagreements else ""))
        counts.add_row("models", f"{len(self.models):,}" + (f" ({', '.join(self.models)})" if self.models else ""))
        counts.add_row("active student", self.active_student or "none (relkit promote NAME)")
        for table, by_language in self.languages.items():
            if by_language:   # 'none': texts without a letter, which have no language
                counts.add_row(f"languages of {table}", ", ".join(f"{lang} {n:,}" for lang, n in by_language.items()))
        columns = [*SPLITS, "unassigned"]
        judged = Table(title="judgments per level and split")
        judged.add_column("level")
        for column in [*columns, "total"]:
            judged.add_column(column, justify="right")
        for level, name in enumerate(self.scale.names, start=1):
            values = [self.judgments.get((level, column), 0) for column in columns]
            judged.add_row(f"{level} {name}", *(f"{v:,}" for v in values), f"{sum(values):,}")
        parts = [f"[bold]{self.path}[/]  scale: {self.scale.describe()}", counts, judged,
                 "queries per split: " + ", ".join(f"{c} {self.queries.get(c, 0):,}" for c in columns)]
        if self.added_queries:
            parts.append("train queries nobody judged, added by relkit pairs: "
                         + ", ".join(f"{n:,} from {ADDED_QUERIES[s]}" for s, n in self.added_queries.items()))
        return Group(*parts)


def active_student(workspace: str | os.PathLike) -> dict | None:
    """The record `relkit promote` wrote (`student`, `path`, `promoted`), or None when no student is
    active or the file is unreadable."""
    file = Path(workspace) / ACTIVE_FILE
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def default_workspace() -> Path:
    return Path(os.environ.get("RELKIT_WORKSPACE") or DEFAULT_WORKSPACE)

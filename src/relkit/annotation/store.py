"""Where people's judgments are kept.

The annotation app writes every action (a judgment, a skip, an undo) to a journal it owns,
`annotations.sqlite` next to the workspace database: SQLite commits each action to disk before
the browser hears back, and lets several processes write it in turn. DuckDB lets one process write
the workspace at a time, so the journal is merged into the workspace in short transactions
(`merge`) by whoever holds the workspace: the app every few seconds when it can get it, and every
relkit command that opens the workspace. A merge applies the journal's actions past the last one
merged and records how far it got in the same transaction, so an action is applied exactly once
even when a process is killed mid-merge.

The workspace then holds

- `annotations`: one row per live judgment (annotator, query_id, item_id, label, note,
  created_at, seconds); an undone judgment's row is gone and skips are not there;
- `judgments`: the resolved label of every annotated pair, marked `{"source": "annotation"}` in
  its `extra`. A judgment that came from anywhere else (an imported file) is never replaced or
  removed by annotation: people's judgments of that pair stay in `annotations` only.

    journal = Journal(ws.path / JOURNAL_NAME)
    journal.record("ana", "judge", "q1", "i7", label=3, seconds=4.2)
    merge(ws)
    # -> 1
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import sqlite3
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from relkit.errors import RelkitError

logger = logging.getLogger(__name__)

JOURNAL_NAME = "annotations.sqlite"
RESOLVE_RULES = ("median", "majority", "review")
SOURCE = "annotation"              # judgments.extra->>'source' of the labels annotation wrote
META_SEQ = "annotation_journal_seq"
META_JOURNAL = "annotation_journal_id"
META_RESOLVE = "annotation_resolve"
ACTIONS = ("judge", "skip", "undo")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,39}$")

ANNOTATIONS_DDL = """
CREATE TABLE IF NOT EXISTS annotations (      -- one row per live judgment by a person (relkit annotate)
    annotator VARCHAR NOT NULL,
    query_id VARCHAR NOT NULL,
    item_id VARCHAR NOT NULL,
    label INTEGER NOT NULL,                   -- level 1..K
    note VARCHAR,
    created_at TIMESTAMP NOT NULL,            -- UTC
    seconds DOUBLE,                           -- from showing the pair to the judgment
    PRIMARY KEY (annotator, query_id, item_id)
)"""

JOURNAL_DDL = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,            -- the client's id for the action: a retry is the same action
    annotator TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('judge', 'skip', 'undo')),
    query_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    label INTEGER,
    note TEXT,
    created_at TEXT NOT NULL,
    seconds REAL,
    undoes INTEGER UNIQUE REFERENCES events (seq)
);
CREATE INDEX IF NOT EXISTS events_by_annotator ON events (annotator, seq);
CREATE TABLE IF NOT EXISTS annotators (
    name TEXT PRIMARY KEY,
    token_hash TEXT,                          -- sha256 of the token; the token itself is never kept
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Event:
    """One action in the journal."""

    seq: int
    event_id: str
    annotator: str
    action: str
    query_id: str
    item_id: str
    label: int | None
    note: str | None
    created_at: str
    seconds: float | None
    undoes: int | None

    @property
    def pair(self) -> tuple[str, str]:
        return self.query_id, self.item_id


class Conflict(RelkitError):
    """An action that contradicts the journal (judging a pair twice, undoing with nothing to undo)."""


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise RelkitError(f"annotator name {name!r}: expected 1 to 40 letters, digits or . _ @ -, "
                          f"starting with a letter or digit")
    return name


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Journal:
    """The app's append-only record of annotation actions (SQLite, one file, safe across processes
    and threads)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._con = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=FULL")   # committed means on disk: a killed app loses nothing
        self._con.executescript(JOURNAL_DDL)
        with self._write() as con:
            con.execute("INSERT OR IGNORE INTO settings VALUES ('journal_id', ?)", [uuid.uuid4().hex])
            con.execute("INSERT OR IGNORE INTO settings VALUES ('secret', ?)", [secrets.token_hex(32)])
        self.journal_id = self.setting("journal_id")

    def close(self) -> None:
        self._con.close()

    def _write(self):
        journal = self

        class _Tx:
            def __enter__(self):
                journal._lock.acquire()
                try:
                    journal._con.execute("BEGIN IMMEDIATE")
                except BaseException:
                    journal._lock.release()
                    raise
                return journal._con

            def __exit__(self, exc_type, *exc):
                try:
                    journal._con.execute("ROLLBACK" if exc_type else "COMMIT")
                finally:
                    journal._lock.release()
        return _Tx()

    def _read(self, sql: str, params: list | tuple = ()) -> list[tuple]:
        with self._lock:
            return self._con.execute(sql, params).fetchall()

    def setting(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM settings WHERE key = ?", [key])
        return rows[0][0] if rows else None

    # -- annotators -------------------------------------------------------------------------
    def add_annotator(self, name: str) -> str:
        """Register `name` (or give it a new token) and return the token; only its hash is kept."""
        check_name(name)
        token = secrets.token_urlsafe(24)
        with self._write() as con:
            con.execute("INSERT INTO annotators VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                        "token_hash = excluded.token_hash", [name, hash_token(token), _now()])
        return token

    def annotator_for_token(self, token: str) -> str | None:
        rows = self._read("SELECT name FROM annotators WHERE token_hash = ?", [hash_token(token or "")])
        return rows[0][0] if rows else None

    def annotators(self) -> list[str]:
        return [r[0] for r in self._read("SELECT name FROM annotators ORDER BY name")]

    # -- actions ----------------------------------------------------------------------------
    def record(self, annotator: str, action: str, query_id: str, item_id: str, label: int | None = None,
               note: str | None = None, seconds: float | None = None, event_id: str | None = None) -> Event:
        """Append a judgment or a skip. The same `event_id` again returns the first one's event (a
        retried request is not a second judgment); judging or skipping a pair the annotator already
        has a live judgment or skip of raises Conflict."""
        if action not in ("judge", "skip"):
            raise ValueError(f"record takes judge or skip, not {action!r}")
        if action == "judge" and label is None:
            raise ValueError("a judgment needs a label")
        event_id = event_id or uuid.uuid4().hex
        with self._write() as con:
            same = con.execute("SELECT * FROM events WHERE event_id = ?", [event_id]).fetchone()
            if same:
                return self._same(Event(*same), annotator, action, query_id, item_id)
            if self._live_on(con, annotator, query_id, item_id):
                raise Conflict(f"{annotator} has already judged or skipped query '{query_id}' and item '{item_id}'")
            cur = con.execute("INSERT INTO events (event_id, annotator, action, query_id, item_id, label, note, "
                              "created_at, seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              [event_id, annotator, action, query_id, item_id, label, note or None, _now(), seconds])
            row = con.execute("SELECT * FROM events WHERE seq = ?", [cur.lastrowid]).fetchone()
        return Event(*row)

    def undo(self, annotator: str, event_id: str | None = None) -> Event:
        """Undo the annotator's last live judgment or skip; returns the undone event. Retried with
        the same `event_id`, it returns the same event and undoes nothing more."""
        event_id = event_id or uuid.uuid4().hex
        with self._write() as con:
            same = con.execute("SELECT undoes FROM events WHERE event_id = ?", [event_id]).fetchone()
            if same:
                undone = Event(*con.execute("SELECT * FROM events WHERE seq = ?", [same[0]]).fetchone())
                if undone.annotator != annotator:
                    raise Conflict("that action id belongs to another annotator")
                return undone
            last = con.execute(f"{_LIVE} AND e.annotator = ? ORDER BY e.seq DESC LIMIT 1", [annotator]).fetchone()
            if last is None:
                raise Conflict(f"{annotator} has nothing to undo")
            undone = Event(*last)
            con.execute("INSERT INTO events (event_id, annotator, action, query_id, item_id, created_at, undoes) "
                        "VALUES (?, ?, 'undo', ?, ?, ?, ?)",
                        [event_id, annotator, undone.query_id, undone.item_id, _now(), undone.seq])
        return undone

    @staticmethod
    def _same(event: Event, annotator: str, action: str, query_id: str, item_id: str) -> Event:
        if (event.annotator, event.action, event.query_id, event.item_id) != (annotator, action, query_id, item_id):
            raise Conflict("that action id was already used for another action")
        return event

    @staticmethod
    def _live_on(con, annotator: str, query_id: str, item_id: str) -> bool:
        return con.execute(f"{_LIVE} AND e.annotator = ? AND e.query_id = ? AND e.item_id = ? LIMIT 1",
                           [annotator, query_id, item_id]).fetchone() is not None

    def live(self, annotator: str | None = None) -> list[Event]:
        """Judgments and skips not undone, oldest first (one annotator's, or everyone's)."""
        if annotator is None:
            rows = self._read(f"{_LIVE} ORDER BY e.seq")
        else:
            rows = self._read(f"{_LIVE} AND e.annotator = ? ORDER BY e.seq", [annotator])
        return [Event(*r) for r in rows]

    def find(self, event_id: str | None) -> Event | None:
        rows = self._read("SELECT * FROM events WHERE event_id = ?", [event_id]) if event_id else []
        return Event(*rows[0]) if rows else None

    def events_after(self, seq: int) -> list[Event]:
        return [Event(*r) for r in self._read("SELECT * FROM events WHERE seq > ? ORDER BY seq", [seq])]

    def event(self, seq: int) -> Event:
        return Event(*self._read("SELECT * FROM events WHERE seq = ?", [seq])[0])

    def last_seq(self) -> int:
        return self._read("SELECT coalesce(max(seq), 0) FROM events")[0][0]


_LIVE = ("SELECT e.* FROM events e WHERE e.action IN ('judge', 'skip') "
         "AND NOT EXISTS (SELECT 1 FROM events u WHERE u.undoes = e.seq)")


def _now() -> str:
    return datetime.now(timezone.utc).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def resolve(labels: list[int], rule: str) -> int | None:
    """The label a pair gets from its annotators' labels.

    median: the middle level (the lower of the two middle ones for an even count);
    majority: the most frequent level, the median when several tie;
    review: the level all annotators gave, None (left out of `judgments`) when they differ.

    >>> resolve([2, 3], "median"), resolve([1, 3, 3], "majority"), resolve([2, 3], "review")
    (2, 3, None)
    """
    if rule not in RESOLVE_RULES:
        raise RelkitError(f"--resolve must be one of {', '.join(RESOLVE_RULES)}, not {rule!r}")
    if not labels:
        return None
    ordered = sorted(labels)
    median = ordered[(len(ordered) - 1) // 2]
    if rule == "median":
        return median
    if rule == "review":
        return ordered[0] if ordered[0] == ordered[-1] else None
    counts = Counter(ordered).most_common()
    winners = [level for level, n in counts if n == counts[0][1]]
    return winners[0] if len(winners) == 1 else median


def ensure_tables(ws) -> None:
    ws.run(ANNOTATIONS_DDL)


def merge(ws) -> int:
    """Apply the journal's actions not merged yet to `annotations` and `judgments`, in one
    transaction; returns how many were applied (0 without a journal)."""
    path = ws.path / JOURNAL_NAME
    if not path.exists():
        return 0
    journal = Journal(path)
    try:
        return _merge(ws, journal)
    finally:
        journal.close()


def _merge(ws, journal: Journal, rule: str | None = None) -> int:
    with ws.transaction():
        ws.run(ANNOTATIONS_DDL)
        known = ws.get_meta(META_JOURNAL)
        if known is not None and known != journal.journal_id:
            raise RelkitError(f"{journal.path} is not the annotation journal this workspace was merged from "
                              f"(it was replaced or recreated); restore the original file")
        done = int(ws.get_meta(META_SEQ) or 0)
        events = journal.events_after(done)
        old_rule = ws.get_meta(META_RESOLVE) or "median"
        rule = rule or old_rule
        if not events and rule == old_rule:
            return 0
        final: dict[tuple[str, str, str], Event | None] = {}   # (annotator, query, item) -> live judgment or None
        for e in events:
            if e.action == "judge":
                final[(e.annotator, e.query_id, e.item_id)] = e
            elif e.action == "undo":
                undone = journal.event(e.undoes)
                if undone.action == "judge":
                    final[(undone.annotator, undone.query_id, undone.item_id)] = None
        if final:
            keys = list(final)
            with ws.registered("_touched", {"annotator": [k[0] for k in keys], "query_id": [k[1] for k in keys],
                                            "item_id": [k[2] for k in keys]}):
                ws.run("DELETE FROM annotations a USING _touched t WHERE a.annotator = t.annotator "
                       "AND a.query_id = t.query_id AND a.item_id = t.item_id")
            put = [e for e in final.values() if e is not None]
            import pyarrow as pa

            with ws.registered("_put", {
                "annotator": [e.annotator for e in put], "query_id": [e.query_id for e in put],
                "item_id": [e.item_id for e in put], "label": [e.label for e in put],
                "note": [e.note for e in put], "created_at": [e.created_at for e in put],
                "seconds": [e.seconds for e in put]}, {"label": pa.int32(), "seconds": pa.float64()}):
                ws.run("INSERT INTO annotations SELECT annotator, query_id, item_id, label, note, "
                       "CAST(created_at AS TIMESTAMP), seconds FROM _put")
        pairs = None if rule != old_rule else sorted({(k[1], k[2]) for k in final})
        _resolve_pairs(ws, rule, pairs)
        ws.set_meta(META_JOURNAL, journal.journal_id)
        ws.set_meta(META_SEQ, str(events[-1].seq if events else done))
        ws.set_meta(META_RESOLVE, rule)
    logger.info("merged %d annotation actions into %s", len(events), ws.path)
    return len(events)


def _resolve_pairs(ws, rule: str, pairs: list[tuple[str, str]] | None) -> None:
    """Write the resolved label of `pairs` (every annotated pair when None) into `judgments`,
    leaving judgments that did not come from annotation alone."""
    if pairs is None:
        pairs = ws.fetchall("SELECT DISTINCT query_id, item_id FROM annotations UNION "
                            "SELECT query_id, item_id FROM judgments WHERE extra->>'source' = ?", [SOURCE])
    if not pairs:
        return
    import pyarrow as pa

    with ws.registered("_pairs", {"query_id": [p[0] for p in pairs], "item_id": [p[1] for p in pairs]}):
        labels: dict[tuple[str, str], list[int]] = {}
        for qid, iid, label in ws.fetchall("SELECT a.query_id, a.item_id, a.label FROM annotations a "
                                           "JOIN _pairs USING (query_id, item_id)"):
            labels.setdefault((qid, iid), []).append(label)
        ws.run("DELETE FROM judgments j USING _pairs p WHERE j.query_id = p.query_id AND j.item_id = p.item_id "
               "AND j.extra->>'source' = ?", [SOURCE])
    rows = {"query_id": [], "item_id": [], "label": [], "extra": []}
    for (qid, iid), given in labels.items():
        level = resolve(given, rule)
        if level is not None:
            for key, value in zip(rows, (qid, iid, level, json.dumps({"source": SOURCE, "annotators": len(given),
                                                                       "rule": rule}))):
                rows[key].append(value)
    if rows["label"]:
        with ws.registered("_resolved", rows, {"label": pa.int32()}):
            # OR IGNORE: a pair someone imported a judgment of keeps that judgment
            ws.run("INSERT OR IGNORE INTO judgments SELECT query_id, item_id, label, CAST(extra AS JSON) "
                   "FROM _resolved")


def set_rule(ws, journal: Journal, rule: str) -> int:
    """Merge the journal and resolve every annotated pair again under `rule` if it changed."""
    resolve([1], rule)   # validates the name
    return _merge(ws, journal, rule)


def review_pairs(ws) -> list[tuple[str, str, list[int]]]:
    """Pairs whose annotators disagree, with their labels (what `--resolve review` leaves out)."""
    if not ws.has_table("annotations"):
        return []
    return [(q, i, sorted(ls)) for q, i, ls in ws.fetchall(
        "SELECT query_id, item_id, list(label) FROM annotations GROUP BY ALL HAVING min(label) <> max(label) "
        "ORDER BY 1, 2")]

"""Import items, queries, judgments, pairs and engagement into a workspace.

One entry point, `import_file`. Every file goes through the same steps: read (readers.py), map
columns (an adapter's or the user's `--map`), validate row by row with errors that name the file,
line and field, then write everything in one transaction. Rows are keyed (items by item_id,
judgments by (query_id, item_id), ...), so importing the same data twice changes nothing.

Every query and item gets a language (an ISO 639-1 code): the file's `language` (or `lang`) column
where it has one (for a file of judgments or pairs, the language of the row's query and item), else
detected in the same transaction (`fill_languages`, relkit.languages): items weighed by the
catalog's languages, queries by the items'.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa

from relkit.data.adapters import ADAPTERS, Adapter
from relkit.data.readers import Records, detect_format, read_records, whitespace_rows
from relkit.data.splits import pin_queries
from relkit.errors import InputError, RelkitError
from relkit.languages import detect_languages, language_among, normalize_code
from relkit.text import normalize_space
from relkit.workspace import SPLITS, Workspace

KINDS = ("items", "queries", "judgments", "pairs", "engagement")
ITEM_FIELDS = ("title", "description", "image", "board_titles", "link_title", "link_description", "language")
QUERY_FIELDS = ("query_id", "query", "language")
ENGAGEMENT_COUNTS = ("impressions", "clicks", "saves", "long_clicks")


@dataclass(frozen=True)
class ImportResult:
    """What one import did. `added`/`updated`/`unchanged` count rows of the imported kind."""

    kind: str
    file: str
    rows: int
    added: int
    updated: int = 0
    unchanged: int = 0
    new_queries: int = 0
    new_items: int = 0
    pinned: int = 0
    merged: int = 0
    respaced: int = 0        # rows describing an item again with other spacing (the first kept)
    engaged_items: int = 0   # items with engaged-query tokens after an engagement import
    detected: dict[str, int] = field(default_factory=dict)   # language -> queries and items it was detected for

    def summary(self) -> str:
        parts = [f"{self.rows:,} rows read", f"{self.added:,} {self.kind} added"]
        if self.updated:
            parts.append(f"{self.updated:,} updated")
        if self.unchanged:
            parts.append(f"{self.unchanged:,} already present")
        if self.merged:
            parts.append(f"{self.merged:,} repeated rows merged")
        if self.respaced:
            parts.append(f"{self.respaced:,} item descriptions that differ only in spacing merged (the first kept)")
        if self.new_queries and self.kind != "queries":
            parts.append(f"{self.new_queries:,} new queries")
        if self.new_items and self.kind != "items":
            parts.append(f"{self.new_items:,} new items")
        if self.pinned:
            parts.append(f"{self.pinned:,} queries pinned")
        if self.kind == "engagement":
            parts.append(f"{self.engaged_items:,} items with engaged-query tokens")
        if self.detected:
            parts.append(f"language detected for {sum(self.detected.values()):,} queries and items ("
                         + ", ".join(f"{code} {n:,}" for code, n in self.detected.items()) + ")")
        return f"{self.file}: " + ", ".join(parts)


def query_id_for(text: str) -> str:
    """The id relkit gives a query known only by its text (stable across imports)."""
    return "q-" + hashlib.sha1(normalize_space(text).encode()).hexdigest()[:16]


def item_id_for(title: str | None, description: str | None) -> str:
    """The id relkit gives an item known only by its text (stable across imports)."""
    key = normalize_space(title or "") + "\x1f" + normalize_space(description or "")
    return "i-" + hashlib.sha1(key.encode()).hexdigest()[:16]


def import_file(ws: Workspace, kind: str, path: str | Path, *, format: str | None = None,
                mapping: dict[str, str] | None = None, encoding: str | None = None,
                split: str | None = None) -> ImportResult:
    """Import one file of `kind` into the workspace, all or nothing.

    `format` names a dataset adapter (data/adapters.py: `homedepot`, `crowdflower`, `xquad-r`,
    `multicpr`) that reads a known file as it is; without one the file's columns are relkit's
    field names, renamed first by `mapping` (`{file column: field}`). `split` pins every query of
    the file to that split.

        import_file(ws, "judgments", "pairs.csv", format="homedepot")
    """
    if kind not in KINDS:
        raise RelkitError(f"unknown kind '{kind}'; expected one of {', '.join(KINDS)}")
    if split is not None and split not in SPLITS:
        raise RelkitError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
    if split is not None and kind in ("items", "engagement"):
        raise RelkitError(f"--split pins queries; a file of {kind} has none to pin")
    adapter: Adapter | None = None
    if format is not None:
        if format not in ADAPTERS:
            raise RelkitError(f"unknown format '{format}'; expected one of {', '.join(ADAPTERS)}")
        adapter = ADAPTERS[format]
        if adapter.kind != kind:
            raise RelkitError(f"--format {format} reads {adapter.kind}, not {kind}")
        adapter.check_scale(ws.scale)
    if kind == "judgments" and adapter is None and _is_qrels(path):
        records = read_qrels(path, ws.scale.k)
    else:
        records = read_records(path, encoding=encoding or (adapter.encoding if adapter else "utf-8"))
    if adapter is not None:
        records.rename({source: target for source, target in adapter.columns.items()
                        if source in records.columns or source not in adapter.optional},
                       origin=f"--format {adapter.name}")
    if mapping:
        records.rename(mapping)
    if "lang" in records.columns and "language" not in records.columns:
        records.rename({"lang": "language"})
    importer = {"items": _import_items, "queries": _import_queries, "judgments": _import_judgments,
                "pairs": _import_pairs, "engagement": _import_engagement}[kind]
    with ws.transaction():
        result = importer(ws, records, adapter)
        query_ids = list(dict.fromkeys(result.pop("query_ids", [])))
        pinned = pin_queries(ws, query_ids, split) if split else 0
        if kind == "engagement":
            from relkit.features.engagement import refresh_engaged_queries

            result["engaged_items"] = refresh_engaged_queries(ws)
        else:
            result["detected"] = fill_languages(ws)
    return ImportResult(**{**result, "kind": kind, "file": str(path), "rows": len(records), "pinned": pinned})


def _is_qrels(path: str | Path) -> bool:
    """A file of judgments whose name is not a table's (.csv, .jsonl, .parquet...) is TREC qrels."""
    try:
        detect_format(Path(path))
    except InputError:
        return True
    return False


def read_qrels(path: str | Path, k: int) -> Records:
    """TREC qrels (`query_id iteration item_id relevance`, whitespace-separated, no header) as
    judgments: relevance r, from 0 (not relevant) to k - 1, is level r + 1 of a k-level scale."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", file=path)
    columns: dict[str, list] = {"query_id": [], "item_id": [], "label": []}
    lines = []
    for line, parts in whitespace_rows(path, 4, "TREC qrels: query_id iteration item_id relevance"):
        if not re.fullmatch(r"-?\d+", parts[3]) or not 0 <= int(parts[3]) < k:
            raise InputError(f"relevance {parts[3]!r} is not a grade 0..{k - 1} (grade r is level r + 1 of the "
                             f"workspace's {k} levels)", file=path, line=line, field="label")
        columns["query_id"].append(parts[0])
        columns["item_id"].append(parts[2])
        columns["label"].append(int(parts[3]) + 1)
        lines.append(line)
    if not lines:
        raise InputError("the qrels file has no judgments", file=path)
    return Records(path, columns, lines)


# --- values -----------------------------------------------------------------------------------

def _str(records: Records, name: str, row: int, required: bool = False) -> str | None:
    values = records.columns.get(name)
    value = None if values is None else values[row]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if required:
            raise records.error("a value is required here", row, name)
        return None
    if isinstance(value, (dict, list)):
        raise records.error(f"expected text, found {type(value).__name__}", row, name)
    text = str(value).strip()
    if not text and required:
        raise records.error("a value is required here", row, name)
    return text or None


def _language(records: Records, row: int) -> str | None:
    value = _str(records, "language", row)
    if value is None:
        return None
    try:
        return normalize_code(value)
    except ValueError as e:
        raise records.error(str(e), row, "language") from None


def _count(records: Records, name: str, row: int, default: int | None = None) -> int:
    values = records.columns.get(name)
    value = None if values is None else values[row]
    if value is None:
        if default is None:
            raise records.error("a count is required here", row, name)
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise records.error(f"expected a whole number, found {value!r}", row, name) from None
    if not number.is_integer() or number < 0:
        raise records.error(f"expected a whole number >= 0, found {value!r}", row, name)
    return int(number)


def _timestamp(records: Records, name: str, row: int) -> datetime:
    value = records.columns[name][row]
    if value is None:
        raise records.error("a timestamp is required here", row, name)
    if isinstance(value, datetime):
        stamp = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        stamp = datetime.fromtimestamp(value, tz=timezone.utc)
    else:
        text = str(value).strip()
        try:
            stamp = datetime.fromtimestamp(float(text), tz=timezone.utc) if re.fullmatch(r"\d+(\.\d+)?", text) \
                else datetime.fromisoformat(text.replace("Z", "+00:00"))
        except (ValueError, OverflowError):
            raise records.error(f"expected an ISO 8601 time or Unix seconds, found {value!r}", row, name) from None
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(timezone.utc).replace(tzinfo=None)
    return stamp


def _board_titles(records: Records, row: int) -> list[str] | None:
    values = records.columns.get("board_titles")
    value = None if values is None else values[row]
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise records.error("starts with '[' but is not a JSON list", row, "board_titles") from None
        else:
            value = text.split("|")  # CSV: titles separated by '|'
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise records.error("expected a list of titles (JSON list, or titles separated by '|')", row, "board_titles")
    titles = [v.strip() for v in value if v.strip()]
    return titles or None


def _extra(records: Records, row: int, known: set[str]) -> str | None:
    extra = {}
    for name, values in records.columns.items():
        if name not in known and values[row] is not None:
            value = values[row]
            extra[name] = value if isinstance(value, (str, int, float, bool, list, dict)) else str(value)
    return json.dumps(extra, ensure_ascii=False, sort_keys=True, default=str) if extra else None


class _FirstOfEach:
    """Rows of one file keyed by id: a repeat of a key must say the same as its first row, else it
    is an error naming both lines (or, with `strict=False`, the first row wins)."""

    def __init__(self, records: Records, field: str, what: str, strict: bool = True, same=None):
        self.records, self.field, self.what, self.strict = records, field, what, strict
        self.same = same              # (first, values) -> whether a differing repeat says the same
        self.seen: dict[object, tuple[int, object]] = {}
        self.alike = 0                # repeats that differ, but say the same by `same`

    def is_new(self, key: object, values: object, row: int) -> bool:
        if key not in self.seen:
            self.seen[key] = (row, values)
            return True
        first_row, first = self.seen[key]
        if first != values:
            if self.same is not None and self.same(first, values):
                self.alike += 1
            elif self.strict:
                raise self.records.error(f"{self.what(key)} differently on {self.records.unit} "
                                         f"{self.records.lines[first_row]}", row, self.field)
        return False


def _same_but_spacing(a: dict, b: dict) -> bool:
    """Two item descriptions that differ only in runs of whitespace ("Keurig  Coffee", "Keurig Coffee")."""
    def norm(value):
        if isinstance(value, str):
            return normalize_space(value)
        return [norm(v) for v in value] if isinstance(value, list) else value
    return all(norm(a[k]) == norm(b[k]) for k in a.keys() | b.keys())


def _require(records: Records, *alternatives: str | tuple[str, ...]) -> None:
    """Each argument is a field, or a tuple of fields of which one suffices."""
    for need in alternatives:
        options = need if isinstance(need, tuple) else (need,)
        if not any(o in records.columns for o in options):
            wanted = " or ".join(f"'{o}'" for o in options)
            raise InputError(f"missing required column {wanted} (the file has: {', '.join(records.columns)}; "
                             f"rename columns with --map SOURCE=FIELD)", file=records.path)


# --- languages --------------------------------------------------------------------------------

def fill_languages(ws: Workspace) -> dict[str, int]:
    """Detect the language of every item and query of the workspace that has none (relkit.languages),
    and store it; returns how many got each language, most first. Items are weighed by the languages
    of the catalog, queries by those of the items (an English catalog's queries are English, however
    Dutch 'screen door' looks) or, with no item language known, by those of the queries.
    """
    detected: Counter[str] = Counter()
    known = dict(ws.fetchall("SELECT language, count(*) FROM items WHERE language IS NOT NULL GROUP BY ALL"))
    rows = ws.fetchall("""SELECT item_id, concat_ws(' ', title, description, link_title, link_description)
                          FROM items WHERE language IS NULL ORDER BY item_id""")
    if rows:
        codes = detect_languages([text for _, text in rows], known)
        _store_languages(ws, "items", "item_id", [i for i, _ in rows], codes)
        detected.update(code for code in codes if code is not None)
    catalog = dict(ws.fetchall("SELECT language, count(*) FROM items WHERE language IS NOT NULL GROUP BY ALL"))
    rows = ws.fetchall("SELECT query_id, query FROM queries WHERE language IS NULL ORDER BY query_id")
    if rows:
        if catalog:
            codes = [language_among(text, catalog) for _, text in rows]
        else:
            known = dict(ws.fetchall("SELECT language, count(*) FROM queries WHERE language IS NOT NULL GROUP BY ALL"))
            codes = detect_languages([text for _, text in rows], known)
        _store_languages(ws, "queries", "query_id", [q for q, _ in rows], codes)
        detected.update(code for code in codes if code is not None)
    return dict(detected.most_common())


def _store_languages(ws: Workspace, table: str, key: str, ids: list[str], codes: list[str | None]) -> None:
    found = [(i, code) for i, code in zip(ids, codes) if code is not None]
    if found:
        with ws.registered("_languages", {key: [i for i, _ in found], "language": [c for _, c in found]}):
            ws.run(f"UPDATE {table} SET language = l.language FROM _languages l WHERE {table}.{key} = l.{key}")


# --- writing ----------------------------------------------------------------------------------

def _first_unknown(ws: Workspace, records: Records, field: str, table: str, ids: list[str], rows: list[int]) -> None:
    """Fail on the first id (in file order) that the workspace's `table` does not have."""
    with ws.registered("_refs", {field: ids, "_row": rows}, {"_row": pa.int64()}):
        missing = ws.fetchone(f"SELECT r.{field}, r._row FROM _refs r ANTI JOIN {table} t ON t.{field} = r.{field} "
                              f"ORDER BY r._row LIMIT 1")
    if missing:
        noun = "item" if field == "item_id" else "query"
        raise records.error(f"unknown {noun} '{missing[0]}': not in the workspace and not described in this file "
                            f"(import the {noun} first, or add its text to this file)", missing[1], field)


def _import_items(ws: Workspace, records: Records, adapter: Adapter | None) -> dict:
    _require(records, "item_id")
    rows, respaced = _item_rows(records, range(len(records)), with_extra=True, conflicts="error")
    before = ws.count("items")
    # a field the file has no column for keeps the workspace's value: a file of ids and images adds
    # the images and leaves the titles alone (a column that is there, even empty, is the new value)
    known = {"item_id", *ITEM_FIELDS}
    present = {f for f in ITEM_FIELDS if f in records.columns}
    if any(c not in known for c in records.columns):
        present.add("extra")
    fields = (*ITEM_FIELDS, "extra")
    with ws.registered("_new", rows, {"board_titles": pa.list_(pa.string())}):
        ws.run(f"""CREATE OR REPLACE TEMP TABLE _merged AS
                   SELECT n.item_id, {", ".join(f"{'n' if f in present else 'i'}.{f} AS {f}" for f in fields)}
                   FROM _new n LEFT JOIN items i USING (item_id)""")
    unchanged = ws.fetchone(f"""
        SELECT count(*) FROM _merged n JOIN items i USING (item_id)
        WHERE {" AND ".join(f"n.{f} IS NOT DISTINCT FROM i.{f}" for f in fields)}""")[0]
    ws.run(f"INSERT OR REPLACE INTO items (item_id, {', '.join(fields)}) SELECT item_id, {', '.join(fields)} FROM _merged")
    ws.run("DROP TABLE _merged")
    added = ws.count("items") - before
    n = len(rows["item_id"])
    return {"added": added, "updated": n - added - unchanged, "unchanged": unchanged, "new_items": added,
            "respaced": respaced}


def _item_rows(records: Records, indices, *, with_extra: bool, conflicts: str) -> tuple[dict[str, list], int]:
    """Item records of the given rows, deduplicated by item_id, and how many repeats differed only in
    spacing (the first is kept); a repeated id with other fields is an error (conflicts='error') or
    keeps its first version (conflicts='first')."""
    known = {"item_id", *ITEM_FIELDS}
    out: dict[str, list] = {k: [] for k in ("item_id", *ITEM_FIELDS, "extra")}
    unique = _FirstOfEach(records, "item_id", lambda key: f"item '{key}' is described", strict=conflicts == "error",
                          same=_same_but_spacing)
    for row in indices:
        item_id = _str(records, "item_id", row, required=True) if "item_id" in records.columns \
            else item_id_for(_str(records, "title", row), _str(records, "description", row))
        item = {f: _board_titles(records, row) if f == "board_titles" else _language(records, row) if f == "language"
                else _str(records, f, row) for f in ITEM_FIELDS}
        item["extra"] = _extra(records, row, known) if with_extra else None
        if not unique.is_new(item_id, item, row):
            continue
        out["item_id"].append(item_id)
        for name, value in item.items():
            out[name].append(value)
    return out, unique.alike


def _import_queries(ws: Workspace, records: Records, adapter: Adapter | None) -> dict:
    _require(records, "query_id", "query")
    unique = _FirstOfEach(records, "query_id", lambda key: f"query '{key}' is given")
    out: dict[str, list] = {"query_id": [], "query": [], "language": [], "extra": []}
    for row in range(len(records)):
        qid = _str(records, "query_id", row, required=True)
        values = (_str(records, "query", row, required=True), _language(records, row),
                  _extra(records, row, set(QUERY_FIELDS)))
        if not unique.is_new(qid, values, row):
            continue
        for name, value in zip(out, (qid, *values)):
            out[name].append(value)
    before = ws.count("queries")
    with ws.registered("_new", out, {}):
        unchanged = ws.fetchone("""
            SELECT count(*) FROM _new n JOIN queries q USING (query_id)
            WHERE n.query = q.query AND n.language IS NOT DISTINCT FROM q.language
              AND n.extra IS NOT DISTINCT FROM q.extra""")[0]
        ws.run("INSERT OR REPLACE INTO queries SELECT * FROM _new")
    added = ws.count("queries") - before
    return {"added": added, "updated": len(out["query_id"]) - added - unchanged, "unchanged": unchanged,
            "new_queries": added, "query_ids": out["query_id"]}


def _resolve_queries(ws: Workspace, records: Records) -> tuple[list[str], int]:
    """The query_id of every row, creating the queries a file describes inline by their text."""
    _require(records, ("query_id", "query"))
    n = len(records)
    inline: dict[str, tuple[str, str | None]] = {}      # query_id -> text and language
    if "query_id" in records.columns:
        ids = [_str(records, "query_id", row, required=True) for row in range(n)]
        if "query" in records.columns:
            for row, qid in enumerate(ids):
                text = _str(records, "query", row)
                if text is not None:
                    inline.setdefault(qid, (text, _language(records, row)))
    else:
        existing = ws.query_ids_by_text()
        ids = []
        for row in range(n):
            text = _str(records, "query", row, required=True)
            qid = existing.get(normalize_space(text)) or query_id_for(text)
            ids.append(qid)
            inline.setdefault(qid, (text, _language(records, row)))
    before = ws.count("queries")
    if inline:
        with ws.registered("_newq", {"query_id": list(inline), "query": [t for t, _ in inline.values()],
                                     "language": [code for _, code in inline.values()]}, {}):
            ws.run("INSERT OR IGNORE INTO queries SELECT query_id, query, language, NULL FROM _newq")
    _first_unknown(ws, records, "query_id", "queries", ids, list(range(n)))
    return ids, ws.count("queries") - before


def _resolve_items(ws: Workspace, records: Records, conflicts: str) -> tuple[list[str], int, int]:
    """The item_id of every row, creating the items a file describes inline (title, description...);
    also how many new items and how many rows described an item again with other spacing."""
    _require(records, ("item_id", "title", "description"))
    n = len(records)
    inline_fields = [f for f in ITEM_FIELDS if f in records.columns]
    described = [row for row in range(n) if any(records.columns[f][row] is not None for f in inline_fields)]
    if "item_id" in records.columns:
        ids = [_str(records, "item_id", row, required=True) for row in range(n)]
    else:
        if len(described) < n:
            row = sorted(set(range(n)) - set(described))[0]
            raise records.error("the item has no id and no text: give item_id, or a title or description",
                                row, "title")
        ids = [item_id_for(_str(records, "title", row), _str(records, "description", row)) for row in range(n)]
    before = ws.count("items")
    respaced = 0
    if described:
        rows, respaced = _item_rows(records, described, with_extra=False, conflicts=conflicts)
        with ws.registered("_newi", rows, {"board_titles": pa.list_(pa.string())}):
            ws.run("INSERT OR IGNORE INTO items SELECT * FROM _newi")  # the catalog, if imported, wins
    _first_unknown(ws, records, "item_id", "items", ids, list(range(n)))
    return ids, ws.count("items") - before, respaced


def _import_judgments(ws: Workspace, records: Records, adapter: Adapter | None) -> dict:
    _require(records, "label")
    qids, new_queries = _resolve_queries(ws, records)
    iids, new_items, respaced = _resolve_items(ws, records, conflicts=adapter.item_conflicts if adapter else "error")
    known = {"query_id", "query", "item_id", "label", *ITEM_FIELDS}
    labels: list[int] = []
    for row in range(len(records)):
        raw = records.columns["label"][row]
        level = adapter.label(raw) if adapter else ws.scale.parse(raw)
        if level is None or not 1 <= level <= ws.scale.k:
            raise records.error(f"label {raw!r} is not on the scale ({ws.scale.describe()})"
                                + (f"; {adapter.label_rule}" if adapter else ""), row, "label")
        labels.append(level)
    groups: dict[tuple[str, str], list[int]] = {}
    for row, key in enumerate(zip(qids, iids)):
        groups.setdefault(key, []).append(row)
    out: dict[str, list] = {"query_id": [], "item_id": [], "label": [], "extra": [], "_row": []}
    merged = 0
    for (qid, iid), rows in groups.items():
        levels = {labels[r] for r in rows}
        if len(levels) > 1 and not (adapter and adapter.merge_label):
            other = next(r for r in rows if labels[r] != labels[rows[0]])
            raise records.error(f"conflicting judgments of query '{qid}' and item '{iid}': label "
                                f"{labels[other]} here, {labels[rows[0]]} on {records.unit} "
                                f"{records.lines[rows[0]]}", other, "label")
        label = adapter.merge_label([labels[r] for r in rows]) if len(levels) > 1 else labels[rows[0]]
        merged += len(rows) - 1
        for name, value in zip(out, (qid, iid, label, _extra(records, rows[0], known), rows[0])):
            out[name].append(value)
    with ws.registered("_new", out, {"label": pa.int32(), "_row": pa.int64()}):
        clash = ws.fetchone("""
            SELECT n._row, n.label, j.label FROM _new n JOIN judgments j USING (query_id, item_id)
            WHERE n.label <> j.label ORDER BY n._row LIMIT 1""")
        if clash:
            raise records.error(f"conflicting judgments: label {clash[1]} here, but the workspace already has "
                                f"label {clash[2]} for this query and item", clash[0], "label")
        before = ws.count("judgments")
        ws.run("INSERT OR IGNORE INTO judgments SELECT query_id, item_id, label, extra FROM _new")
    added = ws.count("judgments") - before
    return {"added": added, "unchanged": len(out["label"]) - added, "new_queries": new_queries,
            "new_items": new_items, "merged": merged, "respaced": respaced, "query_ids": qids}


def _import_pairs(ws: Workspace, records: Records, adapter: Adapter | None) -> dict:
    qids, new_queries = _resolve_queries(ws, records)
    iids, new_items, respaced = _resolve_items(ws, records, conflicts="error")
    sources = [_str(records, "source", row) for row in range(len(records))]
    unique: dict[tuple[str, str], str | None] = {}
    for key, source in zip(zip(qids, iids), sources):
        unique.setdefault(key, source)  # a pair found by several sources keeps the first
    out = {"query_id": [k[0] for k in unique], "item_id": [k[1] for k in unique], "source": list(unique.values())}
    before = ws.count("pairs")
    with ws.registered("_new", out, {}):
        ws.run("INSERT OR IGNORE INTO pairs SELECT * FROM _new")
    added = ws.count("pairs") - before
    return {"added": added, "unchanged": len(unique) - added, "new_queries": new_queries, "new_items": new_items,
            "respaced": respaced, "query_ids": qids}


def _import_engagement(ws: Workspace, records: Records, adapter: Adapter | None) -> dict:
    _require(records, "query", "item_id", "impressions", "timestamp")
    out: dict[str, list] = {k: [] for k in ("query", "item_id", *ENGAGEMENT_COUNTS, "timestamp", "_row")}
    unique = _FirstOfEach(records, "timestamp", lambda key: "the same query, item and timestamp are counted")
    for row in range(len(records)):
        key = (_str(records, "query", row, required=True), _str(records, "item_id", row, required=True),
               _timestamp(records, "timestamp", row))
        counts = tuple(_count(records, c, row, default=None if c == "impressions" else 0) for c in ENGAGEMENT_COUNTS)
        if not unique.is_new(key, counts, row):
            continue
        for name, value in zip(out, (key[0], key[1], *counts, key[2], row)):
            out[name].append(value)
    _first_unknown(ws, records, "item_id", "items", out["item_id"], out["_row"])
    types = {c: pa.int64() for c in (*ENGAGEMENT_COUNTS, "_row")} | {"timestamp": pa.timestamp("us")}
    with ws.registered("_new", out, types):
        clash = ws.fetchone("""
            SELECT n._row FROM _new n JOIN engagement e USING (query, item_id, timestamp)
            WHERE (n.impressions, n.clicks, n.saves, n.long_clicks) <> (e.impressions, e.clicks, e.saves, e.long_clicks)
            ORDER BY n._row LIMIT 1""")
        if clash:
            raise records.error("the workspace already has other counts for this query, item and timestamp",
                                clash[0], "timestamp")
        before = ws.count("engagement")
        ws.run("INSERT OR IGNORE INTO engagement SELECT * EXCLUDE (_row) FROM _new")
    added = ws.count("engagement") - before
    return {"added": added, "unchanged": len(out["query"]) - added}

"""What an engine returns: one ranked list of item ids per query, read from a run file or asked of a
live engine over HTTP."""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from relkit.data.readers import whitespace_rows
from relkit.errors import InputError, RelkitError
from relkit.text import normalize_space

RUN_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet", ".csv.gz", ".tsv.gz", ".jsonl.gz")
SEARCH_PATH = "/v1/search"          # relkit's own service: POST {query, k}
SEARCH_ITEMS = "results[].item_id"


@dataclass(frozen=True)
class ResultLists:
    """One system's ranked item ids per query id, best first; `source` says where they came from."""
    name: str
    source: str
    lists: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for q, items in self.lists.items():
            if len(set(items)) != len(items):
                raise ValueError(f"{self.name}: query {q} lists an item twice")


def parse_named(spec: str, what: str) -> tuple[str, str]:
    """`NAME=VALUE` -> (NAME, VALUE); a bare VALUE (a run file, `what` "run") is named after itself,
    a file by its stem.

    >>> parse_named("new=runs/new.trec", "run"), parse_named("runs/bm25.trec", "run")
    (('new', 'runs/new.trec'), ('bm25', 'runs/bm25.trec'))
    """
    name, sep, value = spec.partition("=")
    if sep and name and "/" not in name and ":" not in name:
        return name, value
    if what == "engine":
        raise RelkitError(f"--engine is NAME=URL (e.g. prod='http://host/search?q={{query}}'), got '{spec}'")
    return Path(spec).name.split(".")[0], spec


def parse_headers(lines: list[str]) -> tuple[tuple[str, str], ...]:
    """HTTP headers for an engine from `Name: value` lines.

    >>> parse_headers(["Authorization: Bearer x"])
    (('Authorization', 'Bearer x'),)
    """
    headers = []
    for line in lines:
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            raise RelkitError(f"--header is 'Name: value', got '{line}'")
        headers.append((key.strip(), value.strip()))
    return tuple(headers)


def _query_lookup(query_ids: set[str], by_text: dict[str, str]) -> Callable[[str], str | None]:
    def find(value: str) -> str | None:
        if value in query_ids:
            return value
        return by_text.get(normalize_space(value))
    return find


def read_run(path: str | Path, name: str, query_ids: set[str], by_text: dict[str, str]) -> ResultLists:
    """A run file: TREC (`qid Q0 docno rank score tag`, whitespace-separated, no header) or a
    CSV / TSV / JSONL / Parquet with columns `query_id` (or `query`, the query's text), `item_id`
    and `rank` (1 = best). Each query's items are ordered by rank; a query or rank that is not
    what relkit expects is an error naming the line.

        read_run("bm25.trec", "bm25", {"q1"}, {}).lists["q1"][:2]
        # -> ['item-7', 'item-3']
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such run file", file=path)
    find = _query_lookup(query_ids, by_text)
    if any(str(path).lower().endswith(s) for s in RUN_SUFFIXES):
        rows = _table_rows(path)
    else:
        rows = _trec_rows(path)
    ranked: dict[str, list[tuple[int, int, str]]] = {}
    seen: dict[tuple[str, str], int] = {}
    for line, query, item, rank in rows:
        qid = find(query)
        if qid is None:
            raise InputError(f"unknown query '{query}': not a query id or query text of the workspace",
                             file=path, line=line, field="query_id")
        try:
            r = int(rank)
        except (TypeError, ValueError):
            raise InputError(f"expected an integer rank, got '{rank}'", file=path, line=line, field="rank") from None
        if (qid, item) in seen:
            raise InputError(f"item '{item}' is listed twice for query '{query}' (first on line {seen[qid, item]})",
                             file=path, line=line, field="item_id")
        seen[qid, item] = line
        ranked.setdefault(qid, []).append((r, line, item))
    if not ranked:
        raise InputError("the run file has no results", file=path)
    return ResultLists(name, str(path), {q: [item for _, _, item in sorted(v)] for q, v in ranked.items()})


def _trec_rows(path: Path):
    for line, parts in whitespace_rows(path, 6, "qid Q0 docno rank score tag"):
        yield line, parts[0], parts[2], parts[3]


def _table_rows(path: Path):
    from relkit.data.readers import read_records

    records = read_records(path)
    cols = records.columns
    query_col = "query_id" if "query_id" in cols else "query" if "query" in cols else None
    for needed, present in (("query_id or query", query_col), ("item_id", "item_id" in cols or None),
                            ("rank", "rank" in cols or None)):
        if present is None:
            raise InputError(f"a run file needs the column {needed} (columns: {', '.join(cols)})", file=path)
    for i in range(len(records)):
        query, item, rank = cols[query_col][i], cols["item_id"][i], cols["rank"][i]
        if query is None or item is None:
            raise records.error("empty value", i, query_col if query is None else "item_id")
        if isinstance(rank, float) and rank.is_integer():
            rank = int(rank)
        yield records.lines[i], str(query), str(item), rank


# --- live engines ---

@dataclass(frozen=True)
class Engine:
    """A search engine over HTTP. `url` either holds `{query}` (GET, the query URL-encoded in its
    place; the item ids found in the JSON reply at `items_path`) or is relkit's own `/v1/search`
    (POST `{"query": ..., "k": ...}`, ids at `results[].item_id`)."""
    name: str
    url: str
    items_path: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if not re.match(r"https?://", self.url):
            raise RelkitError(f"engine '{self.name}': expected an http(s) URL, got '{self.url}'")
        if "{query}" not in self.url and not self.is_relkit:
            raise RelkitError(f"engine '{self.name}': the URL needs a {{query}} placeholder "
                              f"(e.g. http://host/search?q={{query}}) or must be relkit's {SEARCH_PATH}")
        if "{query}" in self.url and not self.items_path:
            raise RelkitError(f"engine '{self.name}': say where the item ids are in its JSON reply with "
                              f"--items-path (e.g. hits[].id)")

    @property
    def is_relkit(self) -> bool:
        return "{query}" not in self.url and urllib.parse.urlsplit(self.url).path.rstrip("/").endswith(SEARCH_PATH)

    def search(self, query: str, k: int) -> list[str]:
        """The engine's top `k` item ids for `query`, best first."""
        if self.is_relkit:
            body = json.dumps({"query": query, "k": k}).encode()
            request = urllib.request.Request(self.url, data=body, method="POST",
                                             headers={"content-type": "application/json", **dict(self.headers)})
            path = SEARCH_ITEMS
        else:
            url = self.url.replace("{query}", urllib.parse.quote(query, safe=""))
            request = urllib.request.Request(url, headers=dict(self.headers))
            path = self.items_path
        where = f"engine '{self.name}' ({self.url}), query '{query}'"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                raw = reply.read()
        except urllib.error.HTTPError as e:
            detail = e.read(300).decode("utf-8", "replace").strip()
            raise RelkitError(f"{where}: HTTP {e.code} {e.reason}{': ' + detail if detail else ''}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise RelkitError(f"{where}: cannot reach the engine ({reason})") from None
        try:
            payload = json.loads(raw)
        except ValueError:
            raise RelkitError(f"{where}: the reply is not JSON ({raw[:80]!r})") from None
        ids = extract(payload, path, where)
        return list(dict.fromkeys(ids))[:k]


def extract(payload, path: str, where: str = "the reply") -> list[str]:
    """The values at a dotted path in JSON, `[]` stepping into each element of a list.

    >>> extract({"hits": [{"id": 1}, {"id": "b"}]}, "hits[].id")
    ['1', 'b']
    """
    values = [payload]
    for step in path.split("."):
        each = step.endswith("[]")
        key = step.removesuffix("[]")
        nxt = []
        for v in values:
            if key:
                if not isinstance(v, dict) or key not in v:
                    raise RelkitError(f"{where}: the reply has no '{key}' at '{path}'")
                v = v[key]
            if each:
                if not isinstance(v, list):
                    raise RelkitError(f"{where}: '{key or path}' in the reply is not a list ('{path}')")
                nxt.extend(v)
            else:
                nxt.append(v)
        values = nxt
    if len(values) == 1 and isinstance(values[0], list):
        values = values[0]
    bad = [v for v in values if not isinstance(v, (str, int)) or isinstance(v, bool)]
    if bad:
        raise RelkitError(f"{where}: '{path}' holds {type(bad[0]).__name__} values, not item ids")
    return [str(v) for v in values]


def ask_engine(engine: Engine, queries: dict[str, str], k: int, concurrency: int = 4,
               progress: Callable[[int], None] | None = None) -> ResultLists:
    """Each query (query_id -> text) sent to the engine; the first failure ends the audit."""
    lists: dict[str, list[str]] = {}
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for qid, ids in zip(queries, pool.map(lambda text: engine.search(text, k), queries.values())):
            lists[qid] = ids
            if progress:
                progress(1)
    return ResultLists(engine.name, engine.url, lists)

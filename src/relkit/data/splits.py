"""Assign whole queries to train / dev / test.

A query's split is a pure function of its id and the seed (a hash bucket), so assignments never
move when new queries arrive, and every machine computes the same split. Queries the user pins
(`--split` on import, or `relkit split --assign FILE --to SPLIT`) are never reassigned.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from relkit.errors import InputError, RelkitError
from relkit.text import normalize_space
from relkit.workspace import SPLITS, Workspace


@dataclass(frozen=True)
class SplitConfig:
    seed: int = 0
    dev: float = 0.1     # fraction of queries for dev (model selection)
    test: float = 0.1    # fraction of queries for test (reporting only)

    def __post_init__(self) -> None:
        for name in ("dev", "test"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise RelkitError(f"--{name} must be a fraction in [0, 1), got {value}")
        if self.dev + self.test >= 1.0:
            raise RelkitError(f"dev + test must leave queries for train, got {self.dev} + {self.test}")

    def assign(self, query_id: str) -> str:
        digest = hashlib.sha256(f"{self.seed}\x1f{query_id}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2.0**64
        return "test" if u < self.test else "dev" if u < self.test + self.dev else "train"


@dataclass(frozen=True)
class SplitSummary:
    assigned: int          # queries that got a split in this call
    counts: dict[str, int]  # queries per split after it
    config: SplitConfig


def split_queries(ws: Workspace, config: SplitConfig | None = None, reset: bool = False) -> SplitSummary:
    """Give every query without a split one. The first call records the config; later calls use
    it (so new queries join without moving old ones), and a different config needs `reset=True`,
    which reassigns every query that is not pinned.
    """
    stored = ws.get_meta("split_config")
    stored_config = SplitConfig(**json.loads(stored)) if stored else None
    if config is None:
        config = stored_config or SplitConfig()
    elif stored_config is not None and config != stored_config and not reset:
        raise RelkitError(f"this workspace was split with {asdict(stored_config)}; splitting again with "
                          f"{asdict(config)} would move queries between splits. Pass --reset to do so "
                          f"(models trained before then were tuned on queries that may now be in test).")
    with ws.transaction():
        if reset:
            ws.run("DELETE FROM splits WHERE NOT pinned")
        todo = [r[0] for r in ws.fetchall(
            "SELECT query_id FROM queries ANTI JOIN splits USING (query_id) ORDER BY query_id")]
        with ws.registered("_new", {"query_id": todo, "split": [config.assign(q) for q in todo]}):
            ws.run("INSERT INTO splits SELECT query_id, split, false FROM _new")
        ws.set_meta("split_config", json.dumps(asdict(config)))
    return SplitSummary(assigned=len(todo), counts=split_counts(ws), config=config)


def split_counts(ws: Workspace) -> dict[str, int]:
    counts = dict(ws.fetchall("SELECT split, count(*) FROM splits GROUP BY split"))
    return {s: counts.get(s, 0) for s in SPLITS}


def pin_queries(ws: Workspace, query_ids: list[str], split: str) -> int:
    """Pin queries to `split` (inside the caller's transaction, if any). Returns how many."""
    if split not in SPLITS:
        raise RelkitError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
    with ws.registered("_pin", {"query_id": query_ids}):
        ws.run("INSERT OR REPLACE INTO splits SELECT query_id, ?, true FROM _pin", [split])
    return len(query_ids)


def pin_from_file(ws: Workspace, path: str | Path, split: str) -> int:
    """Pin the queries listed in a text file, one query id or query text per line."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", file=path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise InputError(f"not valid utf-8 ({e.reason})", file=path) from None
    by_id = {q for (q,) in ws.fetchall("SELECT query_id FROM queries")}
    by_text = ws.query_ids_by_text()
    ids = []
    for number, line in enumerate(lines, start=1):
        ref = normalize_space(line)
        if not ref:
            continue
        qid = ref if ref in by_id else by_text.get(ref)
        if qid is None:
            raise InputError(f"'{ref}' is neither a query id nor the text of a query in the workspace",
                             file=path, line=number)
        ids.append(qid)
    if not ids:
        raise InputError("the file is empty", file=path)
    with ws.transaction():
        return pin_queries(ws, list(dict.fromkeys(ids)), split)

"""Who judges which pair next: the queue's order, each annotator's history, and overlap.

A campaign holds in memory what the app shows (the queue's pairs, their queries and items), read
from the workspace once when the app starts, so the app answers while another relkit command
holds the workspace. Which pairs an annotator has seen comes from the journal, which is always
there to read.

Each annotator holds two pairs: the one on screen and the next one, already in the page. A pair
goes to one annotator, or to two for the `overlap` share of pairs (picked by a hash of the pair,
so the same pairs whatever the order of requests); a pair someone holds is not handed to a third
person meanwhile. A pair is never shown twice to one annotator, except the pair they undo.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass

from relkit.annotation.store import Event, Journal
from relkit.errors import RelkitError

logger = logging.getLogger(__name__)

HOLD_SECONDS = 15 * 60      # a pair held by someone who went away is handed on after this
AHEAD = 2                   # pairs an annotator holds: the one on screen and the next


@dataclass(frozen=True)
class Pair:
    """What the page shows of one (query, item) pair."""

    query_id: str
    item_id: str
    query: str
    item: dict                  # the item's record (ITEM_RECORD_COLUMNS) plus `extra`, a dict

    @property
    def key(self) -> tuple[str, str]:
        return self.query_id, self.item_id


def overlap_share(query_id: str, item_id: str, seed: int = 0) -> float:
    """A number in [0, 1) fixed for the pair: pairs under `overlap` go to two annotators."""
    digest = hashlib.sha256(f"{seed}\x1f{query_id}\x1f{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def rank_pairs(ws, weights: dict[str, float], model: str | None = None, seed: int = 0) -> list[tuple[str, str]]:
    """The queue's order of the candidate pairs, keeping those only annotators judged (a pair judged
    once may still be owed a second annotator: the campaign counts who judged what). The pairs of
    audits' people slices (`relkit audit --people N`) come first, oldest audit first, in the order
    drawn; with them, a queue with nothing to propose leaves the campaign to the slices."""
    from relkit.annotation.queue import rank_pairs as ranked

    first = slice_pairs(ws)
    try:
        rest = ranked(ws, weights, model=model, seed=seed, annotated=True)
    except RelkitError as e:
        if not first:
            raise
        logger.warning("annotating the audit slices only: %s", e)
        rest = []
    seen = set(first)
    return first + [p for p in rest if p not in seen]


def slice_pairs(ws) -> list[tuple[str, str]]:
    """The pairs of audits' people slices (table audit_slice, relkit.audit.people) not judged but by
    annotators."""
    if not ws.has_table("audit_slice"):
        return []
    rows = ws.fetchall("""
        SELECT s.query_id, s.item_id FROM audit_slice s
        WHERE NOT EXISTS (SELECT 1 FROM judgments j WHERE j.query_id = s.query_id AND j.item_id = s.item_id
                          AND coalesce(j.extra->>'source', '') <> 'annotation')
        ORDER BY s.created, s.audit, s.position""")
    return list(dict.fromkeys(rows))


class Campaign:
    """The pairs to judge and who holds which. Thread-safe."""

    def __init__(self, pairs: list[Pair], journal: Journal, overlap: float = 0.0, seed: int = 0):
        if not 0.0 <= overlap <= 1.0:
            raise RelkitError(f"--overlap is the share of pairs two annotators judge, between 0 and 1, not {overlap}")
        self.pairs = pairs
        self.index = {p.key: n for n, p in enumerate(pairs)}
        self.images = {p.item_id: p.item.get("image") for p in pairs if p.item.get("image")}
        self.need = [2 if overlap_share(p.query_id, p.item_id, seed) < overlap else 1 for p in pairs]
        self.journal = journal
        self._lock = threading.Lock()
        self._judged_by: dict[tuple[str, str], set[str]] = {}
        self._seen: dict[str, set[tuple[str, str]]] = {}
        self._held: dict[str, tuple[list[tuple[str, str]], float]] = {}   # annotator -> (pairs, since)
        self._cursor: dict[str, int] = {}
        for e in journal.live():
            self._add(e)

    @classmethod
    def load(cls, ws, journal: Journal, weights: dict[str, float], model: str | None = None, overlap: float = 0.0,
             seed: int = 0) -> "Campaign":
        """Read the queue's pairs with their queries and items from the workspace."""
        keys = rank_pairs(ws, weights, model=model, seed=seed)
        if not keys:
            raise RelkitError(f"{ws.path} has no candidate pairs to judge: import some (`relkit import pairs`) or "
                              f"find them (`relkit pairs`)")
        queries = dict(ws.fetchall("SELECT query_id, query FROM queries"))
        records = ws.item_records(sorted({i for _, i in keys}))
        extras = dict(ws.fetchall("SELECT item_id, extra FROM items WHERE extra IS NOT NULL"))
        pairs = []
        for qid, iid in keys:
            if qid in queries and iid in records:
                item = dict(records[iid])
                item["extra"] = json.loads(extras[iid]) if extras.get(iid) else {}
                pairs.append(Pair(qid, iid, queries[qid], item))
        return cls(pairs, journal, overlap, seed)

    def _add(self, e: Event) -> None:
        self._seen.setdefault(e.annotator, set()).add(e.pair)
        if e.action == "judge":
            self._judged_by.setdefault(e.pair, set()).add(e.annotator)

    def _remove(self, e: Event) -> None:
        self._seen.get(e.annotator, set()).discard(e.pair)
        if e.action == "judge":
            self._judged_by.get(e.pair, set()).discard(e.annotator)
        n = self.index.get(e.pair)
        if n is not None:
            for name in self._cursor:
                self._cursor[name] = min(self._cursor[name], n)

    def _holders(self, key: tuple[str, str], other_than: str) -> set[str]:
        now = time.monotonic()
        return {name for name, (held, since) in self._held.items()
                if name != other_than and key in held and now - since < HOLD_SECONDS}

    def _find(self, annotator: str, exclude: list[tuple[str, str]]) -> tuple[str, str] | None:
        seen = self._seen.get(annotator, set())
        n = self._cursor.get(annotator, 0)
        # the cursor passes only pairs this annotator can never get again (seen, or judged by enough people);
        # an undo moves it back
        while n < len(self.pairs) and (self.pairs[n].key in seen
                                       or len(self._judged_by.get(self.pairs[n].key, ())) >= self.need[n]):
            n += 1
        self._cursor[annotator] = n
        for m in range(n, len(self.pairs)):
            key = self.pairs[m].key
            if key in seen or key in exclude:
                continue
            judged = self._judged_by.get(key, set())
            if len(judged | self._holders(key, annotator)) < self.need[m]:
                return key
        return None

    def hand_out(self, annotator: str, first: tuple[str, str] | None = None) -> list[Pair]:
        """The pairs the annotator holds now (on screen, then next), topped up from the queue;
        `first` goes on screen (the pair just undone)."""
        with self._lock:
            held = [k for k in self._held.get(annotator, ([], 0))[0]
                    if k not in self._seen.get(annotator, set())]
            if first is not None and first in self.index:
                held = [first] + [k for k in held if k != first]
            held = held[:AHEAD]
            while len(held) < AHEAD:
                key = self._find(annotator, held)
                if key is None:
                    break
                held.append(key)
            self._held[annotator] = (held, time.monotonic())
            return [self.pairs[self.index[k]] for k in held]

    def knows(self, query_id: str, item_id: str) -> bool:
        return (query_id, item_id) in self.index

    def record(self, annotator: str, action: str, query_id: str, item_id: str, **kwargs) -> Event:
        """Journal a judgment or skip of a pair of this campaign."""
        if not self.knows(query_id, item_id):
            done = self.journal.find(kwargs.get("event_id"))
            if done is not None:       # recorded before a restart that dropped the pair from the queue
                return self.journal._same(done, annotator, action, query_id, item_id)
            raise RelkitError(f"query '{query_id}' and item '{item_id}' are not a pair of this campaign")
        event = self.journal.record(annotator, action, query_id, item_id, **kwargs)
        with self._lock:
            self._add(event)
        return event

    def undo(self, annotator: str, event_id: str | None = None) -> Event:
        undone = self.journal.undo(annotator, event_id)
        with self._lock:
            self._remove(undone)
        return undone

    def progress(self, annotator: str) -> int:
        """The annotator's live judgments."""
        with self._lock:
            return sum(1 for names in self._judged_by.values() if annotator in names)

    def remaining(self) -> int:
        with self._lock:
            return sum(max(0, need - len(self._judged_by.get(p.key, ()))) for p, need in zip(self.pairs, self.need))

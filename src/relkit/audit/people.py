"""An audit's people slice (`relkit audit --people N`): a random sample of the audited queries whose
results, about N in all, people judge, so that the audit's figures can be made valid whatever the
judge's errors (`relkit audit --combine NAME`, combined.py).

The slice is drawn from the audited queries at random: a simple random sample when the audit has
one stratum, else a stratified one (the audit's strata, queries in proportion to those audited,
at least two in each). Its members are the results of those queries that no person had judged when
the audit ran; results people had judged before are known values, used as such. It is kept three
ways: its design in the stored audit (`people`), its pairs, in the order drawn, in the workspace
table `audit_slice` (which `relkit annotate` serves before its queue), and a CSV of query_id,
item_id and an empty label (with the query and the item's title to judge by) to fill and import
with `relkit import judgments`. Queries are served in a random order, whole: a slice judged in part
leaves a random sample of complete queries.
"""
from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from relkit.audit.estimates import ideal_dcg, ndcg_by_query, share_by_query
from relkit.audit.judges import item_exists
from relkit.audit.judging import people_labels
from relkit.audit.sampling import Sample, allocate
from relkit.errors import RelkitError
from relkit.workspace import Workspace

Pair = tuple[str, str]
SLICE_TABLE = "audit_slice"
SLICE_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {SLICE_TABLE} (    -- the results an audit's people slice asks people to judge
    audit VARCHAR NOT NULL,                  -- the stored audit (results/audit-NAME.json)
    position INTEGER NOT NULL,               -- the order to judge them in: query by query, queries at random
    query_id VARCHAR NOT NULL,
    item_id VARCHAR NOT NULL,
    created TIMESTAMP NOT NULL,              -- the audit's time: older slices are served first
    PRIMARY KEY (audit, query_id, item_id)
)"""
CSV_COLUMNS = ("query_id", "item_id", "label", "query", "title")
MEASURES = ("ndcg", "share")


@dataclass(frozen=True)
class PeopleSlice:
    """The design of a people slice, as the stored audit keeps it."""
    requested: int                          # N: about how many results people judge
    seed: int
    method: str                             # simple (one stratum) or stratified (the audit's strata)
    allocation: dict[str, int]              # stratum -> slice queries
    query_ids: list[str]                    # in the order they are served
    pairs: list[Pair]                       # the members: results no person had judged, in the order served
    known: int                              # results of the slice's queries people had judged before the audit
    open_per_query: float                   # results per audited query no person had judged: a query's cost
    lists: dict[str, dict[str, list[str]]]  # system -> slice query -> its top K, to score people's labels
    judge_proba: list[list[float] | None]   # the judge's distribution of each member (None: it gave no answer)
    judge_values: dict[str, dict[str, list[float | None]]]  # system -> measure -> per audited query (None: no value)
    csv: str                                # the file to fill

    def to_dict(self) -> dict:
        return {**asdict(self), "pairs": [list(p) for p in self.pairs]}

    @classmethod
    def from_dict(cls, d: dict) -> "PeopleSlice":
        return cls(**{**d, "pairs": [tuple(p) for p in d["pairs"]]})

    def summary(self, audit: str) -> str:
        how = "a simple random sample" if self.method == "simple" else \
            f"stratified over {len([h for h, n in self.allocation.items() if n])} strata"
        return (f"people slice: {len(self.query_ids)} audited queries ({how}, seed {self.seed}) with "
                f"{len(self.pairs):,} results for people to judge ({self.known:,} more were judged by people before). `relkit annotate` "
                f"serves them first; or fill the label column of {self.csv} and `relkit import judgments` it. Then "
                f"`relkit audit --combine {audit}`.")


def draw_slice(ws: Workspace, sample: Sample, tops: dict[str, dict[str, list[str]]], proba: dict[Pair, np.ndarray],
               ndcg: dict[str, dict[str, float]], share: dict[str, dict[str, float]], n: int, seed: int,
               csv_path: str) -> PeopleSlice:
    """Draw the slice of about `n` results from the audited queries of `sample`; `proba` is the
    judge's distribution of each judged pair, `ndcg` and `share` each system's per-query values
    as the audit measured them (the judge's, with people's where they had judged)."""
    if n < 1:
        raise RelkitError(f"--people must be at least 1, got {n}")
    queries = sample.query_ids
    pool = {q: list(dict.fromkeys(i for top in tops.values() for i in top[q])) for q in queries}
    pairs = [(q, i) for q in queries for i in pool[q]]
    known = people_labels(ws, pairs)
    catalog = item_exists(ws, [i for _, i in pairs])
    open_ = {q: [(q, i) for i in pool[q] if (q, i) not in known and i in catalog] for q in queries}
    total = sum(len(v) for v in open_.values())
    if not total:
        raise RelkitError("people have judged every audited result already: the audit's figures are people's own")
    audited: dict[str, list[str]] = {}
    for q in queries:
        audited.setdefault(sample.strata[q], []).append(q)
    small = [h for h, qs in audited.items() if len(qs) < 2]
    if small:
        raise RelkitError(f"--people: the stratum {small[0]!r} has {len(audited[small[0]])} audited query; a people "
                          f"slice needs two in each stratum (audit more queries, or fewer strata with --strata)")
    per_query = total / len(queries)
    size = min(len(queries), max(2 * len(audited), round(n / per_query)))
    allocation = allocate({h: len(qs) for h, qs in sorted(audited.items())}, size)
    rng = np.random.default_rng([seed, 1])      # a stream of its own: the audit's sample used the seed itself
    chosen = [qs[j] for h, qs in sorted(audited.items()) for j in sorted(rng.choice(len(qs), allocation[h],
                                                                                     replace=False).tolist())]
    order = [chosen[j] for j in rng.permutation(len(chosen))]
    members = [p for q in order for p in open_[q]]
    return PeopleSlice(
        requested=n, seed=seed, method="simple" if len(audited) == 1 else "stratified", allocation=allocation,
        query_ids=order, pairs=members, known=sum(len(pool[q]) - len(open_[q]) for q in order),
        open_per_query=per_query, lists={s: {q: top[q] for q in order} for s, top in tops.items()},
        judge_proba=[[float(x) for x in proba[p]] if p in proba else None for p in members],
        judge_values={s: {"ndcg": [ndcg[s].get(q) for q in queries], "share": [share[s].get(q) for q in queries]}
                      for s in tops},
        csv=csv_path)


def write_slice(ws: Workspace, audit: str, time: str, people: PeopleSlice) -> None:
    """Keep the slice's pairs in `audit_slice` (replacing those of an audit stored under the same
    name) and write its CSV to fill."""
    with ws.transaction() as con:
        con.execute(SLICE_SCHEMA)
        con.execute(f"DELETE FROM {SLICE_TABLE} WHERE audit = ?", [audit])
        con.executemany(f"INSERT INTO {SLICE_TABLE} VALUES (?, ?, ?, ?, ?)",
                        [[audit, n, q, i, time] for n, (q, i) in enumerate(people.pairs)])
    texts = dict(ws.fetchall("SELECT query_id, query FROM queries"))
    records = ws.item_records(sorted({i for _, i in people.pairs}))
    path = Path(people.csv)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        writer.writerows([q, i, "", texts.get(q, ""), records.get(i, {}).get("title") or ""] for q, i in people.pairs)


@dataclass(frozen=True)
class PeopleValues:
    """What people's judgments of a slice give: their labels of its results, the slice queries they
    judged completely (in the order served), and each system's nDCG@K and share on those."""
    labels: dict[Pair, int]
    complete: list[str]
    values: dict[str, dict[str, np.ndarray]]    # system -> measure -> per complete query (NaN: no value)


def people_values(ws: Workspace, people: PeopleSlice, k: int, threshold: int) -> PeopleValues:
    """People's nDCG@K (their gains, the ideal of the query's pooled results by their labels) and
    share at level >= `threshold` of each system on the slice queries every result of which people
    have judged (the workspace's judgments: imported, or resolved by `relkit annotate`)."""
    pool = {q: list(dict.fromkeys(i for top in people.lists.values() for i in top[q])) for q in people.query_ids}
    pairs = [(q, i) for q, items in pool.items() for i in items]
    labels = people_labels(ws, pairs)
    catalog = item_exists(ws, [i for _, i in pairs])
    complete = [q for q in people.query_ids if all((q, i) in labels for i in pool[q] if i in catalog)]
    gains = np.asarray(ws.scale.gains, dtype=np.float64)
    gain = {p: float(gains[label - 1]) for p, label in labels.items()}
    at_least = {p: float(label >= threshold) for p, label in labels.items()}
    tops = {s: {q: top[q] for q in complete} for s, top in people.lists.items()}
    ideal = ideal_dcg(complete, tops, gain, k)
    values = {}
    for s, top in tops.items():
        ndcg, share = ndcg_by_query(top, gain, ideal), share_by_query(top, at_least)
        values[s] = {"ndcg": np.array([ndcg.get(q, np.nan) for q in complete]),
                     "share": np.array([share.get(q, np.nan) for q in complete])}
    return PeopleValues(labels, complete, values)


def slice_csv(ws: Workspace, audit: str) -> str:
    """Where an audit's slice CSV goes: beside the stored audit (a path that holds from anywhere)."""
    return str(ws.path.resolve() / "results" / f"audit-{audit}-people.csv")

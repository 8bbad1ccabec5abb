"""An audit: the top K results of each system for a sample of queries, judged, and turned into
nDCG@K and the share of results at level >= t, per system and per stratum, with intervals; for two
systems the paired difference and the minimum detectable effect. Stored in the workspace."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import NamedTuple

from relkit.audit.estimates import (MDE_FACTOR, PairedDifference, SystemAudit, ideal_dcg, measure_system,
                                    ndcg_by_query, paired_difference, share_by_query, spread)
from relkit.audit.judges import PairJudge, make_judge
from relkit.audit.judging import JudgedCounts, JudgedPool, judge_pool, pool_of, top_k
from relkit.audit.lists import Engine, ResultLists, ask_engine, parse_named, read_run
from relkit.audit.people import PeopleSlice, draw_slice, slice_csv, write_slice
from relkit.audit.sampling import FREQUENCY, Sample, draw, query_strata
from relkit.audit.storage import pilot_spread, save_audit
from relkit.errors import RelkitError
from relkit.intervals import RESAMPLES, Interval
from relkit.logs import progress
from relkit.scale import LabelScale
from relkit.workspace import SPLITS, Workspace


def default_threshold(k: int) -> int:
    """The level from which a result counts as relevant by default: the upper half of the scale."""
    return k // 2 + 1


def _stored(interval: Interval) -> dict:
    # a stored audit's intervals are all 95%: they keep the keys audits have always had
    return {"mean": interval.estimate, "low": interval.low, "high": interval.high, "queries": interval.n}


@dataclass(frozen=True)
class AuditResult:
    name: str
    time: str
    judge: str
    judge_version: str
    k: int
    threshold: int
    sample: Sample
    systems: list[SystemAudit]
    comparison: PairedDifference | None
    counts: JudgedCounts
    ndcg_queries: int      # sampled queries with a relevant item in the pool (those nDCG is defined for)
    seconds: float = 0.0
    spread: dict[str, float] = field(default_factory=dict)
    human: bool = True     # people's judgments stood in for the judge's where the workspace has them
    people: PeopleSlice | None = None   # the slice of results people are asked to judge (--people N)

    @property
    def metric(self) -> str:
        return f"ndcg@{self.k}"

    def to_dict(self) -> dict:
        """What the workspace keeps of the audit (results/audit-NAME.json) and `--json` prints."""
        c = self.comparison
        slice_ = {"people": self.people.to_dict()} if self.people else {}
        return {
            "time": self.time, "judge": self.judge, "judge_version": self.judge_version, "k": self.k,
            "threshold": self.threshold, "human_judgments": self.human, "sample": self.sample.to_dict(),
            "query_ids": self.sample.query_ids,
            "strata": self.sample.strata, "ndcg_queries": self.ndcg_queries, "judged": asdict(self.counts),
            "seconds": round(self.seconds, 2), "spread": self.spread,
            "systems": [{"name": s.name, "source": s.source, "ndcg": _stored(s.ndcg),
                         "share": _stored(s.share) if s.share else None, "strata": s.strata, "results": s.results,
                         "empty": s.empty, "per_query": s.per_query} for s in self.systems],
            "comparison": None if c is None else {
                "a": c.a, "b": c.b, "difference": _stored(c.difference), "standard_error": c.standard_error,
                "mde": c.mde, "mde_relative": c.mde_relative, "strata": c.strata},
            **slice_,
        }

    def summary(self) -> str:
        c = self.counts
        return (f"audit {self.name}: {len(self.sample.query_ids):,} queries ({self.sample.method}"
                f"{'' if self.sample.method == 'all' else ' allocation'} over {len(self.sample.population)} "
                f"{self.sample.by} strata), top {self.k} of {len(self.systems)} system(s); {c.pairs:,} distinct "
                f"results: {c.human:,} judged by people, {c.judge:,} by {self.judge} ({c.judged_now:,} now, "
                f"{c.judge - c.judged_now:,} from the cache), {c.unjudged:,} unjudged (counted as gain 0); nDCG over "
                f"the {self.ndcg_queries:,} queries with a relevant result")

    def __rich__(self):
        from rich.console import Group
        from rich.text import Text

        parts = [Text(self.summary()), self.table()]
        if self.people:
            parts.append(Text(self.people.summary(self.name)))
        return Group(*parts)

    def table(self):
        """Systems down; their nDCG@K and share with intervals, then each stratum's mean nDCG."""
        from rich.table import Table

        strata = [h for h, n in self.sample.allocation.items() if n > 0]
        table = Table(caption=self.caption())
        for col in ("system", f"ndcg@{self.k} [95%]", f"share >= {self.threshold} [95%]", "empty"):
            table.add_column(col, justify="left" if col == "system" else "right")
        for h in strata:
            table.add_column(f"{h} ({self.sample.allocation[h]}/{self.sample.population[h]})", justify="right")
        for s in self.systems:
            table.add_row(s.name, str(s.ndcg), str(s.share) if s.share else "-", str(s.empty),
                          *(_fmt(s.strata.get(h, {}).get("ndcg")) for h in strata))
        c = self.comparison
        if c:
            table.add_row(f"{c.a} - {c.b}", f"{c.difference:+.4f}", "", "",
                          *(_fmt(c.strata.get(h), signed=True) for h in strata), style="bold")
        return table

    def caption(self) -> str:
        ndcg = self.systems[0].ndcg
        text = (f"nDCG@{self.k} on the judge's expected gains, ideal from the pool of every system's judged top "
                f"{self.k}; stratified means (strata weighted by their share of the queries), {ndcg.level:.0%} "
                f"intervals: {ndcg.method}")
        if self.comparison:
            c = self.comparison
            rel = f" ({c.mde_relative:.1%} of {c.b})" if c.mde_relative is not None else ""
            text += (f". Minimum detectable effect at {len(self.sample.query_ids)} queries: {c.mde:.4f}{rel} "
                     f"= {MDE_FACTOR:.2f} x the standard error of the paired difference ({c.standard_error:.4f}), "
                     f"two-sided test at 5% with 80% power")
        return text


def _fmt(value: float | None, signed: bool = False) -> str:
    return "-" if value is None else f"{value:+.4f}" if signed else f"{value:.4f}"


def _threshold(scale: LabelScale, systems: list[ResultLists], k: int, threshold: int | None) -> int:
    """The checked threshold (the scale's default when None), once the other arguments are checked."""
    t = threshold or default_threshold(scale.k)
    if not 1 <= t <= scale.k:
        raise RelkitError(f"--threshold must be a level 1..{scale.k}, got {t}")
    if k < 1:
        raise RelkitError(f"--k must be at least 1, got {k}")
    if not systems:
        raise RelkitError("nothing to audit: give a run file (--run) or an engine (--engine)")
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise RelkitError(f"two systems are called the same: {', '.join(names)} (name them NAME=...)")
    return t


def run_audit(ws: Workspace, systems: list[ResultLists], judge: PairJudge, sample: Sample, k: int = 10,
              threshold: int | None = None, name: str | None = None, resamples: int = RESAMPLES, seed: int = 0,
              save: bool = True, human: bool = True, people: int | None = None) -> AuditResult:
    """Judge each system's top `k` for the sampled queries and measure them; the audit is saved in
    the workspace as results/audit-NAME.json (NAME defaults to the time) unless `save` is False.
    People's judgments stand in for the judge's where the workspace has them, unless `human` is False
    (then the judge judges everything: how far it moves the figures is a check of the judge).
    `people`: draw a slice of about that many results for people to judge (people.py), kept with the
    audit, in the workspace for `relkit annotate` and as a CSV.

        lists = read_run("bm25.trec", "bm25", ids, by_text)
        run_audit(ws, [lists], make_judge("teacher:demo", ws), draw(strata, 100)).systems[0].ndcg
    """
    start = time.perf_counter()
    if people is not None and not save:
        raise RelkitError("a people slice is kept with its audit: an audit with --people is stored")
    threshold = _threshold(ws.scale, systems, k, threshold)
    tops = top_k(systems, sample.query_ids, k)
    judged = judge_pool(ws, judge, pool_of(tops), human)
    measured = _measure(ws, systems, tops, judged, sample, k, threshold, judge.name, resamples, seed)
    now = datetime.now(timezone.utc)
    name = name or now.strftime("%Y%m%dT%H%M%SZ")
    chosen = (draw_slice(ws, sample, tops, judged.proba, measured.ndcg, measured.share, people, seed,
                         slice_csv(ws, name)) if people is not None else None)
    result = AuditResult(
        name=name, time=now.isoformat(timespec="seconds"), judge=judge.name,
        judge_version=judge.version, k=k, threshold=threshold, sample=sample, systems=measured.audits,
        comparison=measured.comparison, counts=judged.counts, ndcg_queries=measured.rated,
        seconds=time.perf_counter() - start, spread=spread(measured.primary, sample.strata), human=human,
        people=chosen)
    if save:
        save_audit(ws, result.name, result.to_dict())
    if chosen is not None:
        write_slice(ws, result.name, result.time, chosen)
    return result


class _Measured(NamedTuple):
    ndcg: dict[str, dict[str, float]]        # system -> query -> nDCG@k
    share: dict[str, dict[str, float]]       # system -> query -> share relevant
    audits: list[SystemAudit]
    comparison: PairedDifference | None
    primary: dict[str, float]                # the per-query figure the spread is of
    rated: int                               # queries with a relevant result from some system


def _measure(ws: Workspace, systems: list[ResultLists], tops: dict, judged: JudgedPool, sample: Sample, k: int,
             threshold: int, judge: str, resamples: int, seed: int) -> _Measured:
    """Each system's nDCG@k and share relevant per query, their intervals, and the paired difference
    of two systems."""
    gain, at_least = judged.expected_gain(ws.scale.gains), judged.at_least(threshold)
    ideal = ideal_dcg(sample.query_ids, tops, gain, k)
    rated = sum(v > 0 for v in ideal.values())
    if not rated:
        raise RelkitError(f"no audited query has a relevant result from any system (by {judge} and the "
                          f"human judgments): nDCG is undefined; audit more queries")
    ndcg = {s.name: ndcg_by_query(tops[s.name], gain, ideal) for s in systems}
    share = {s.name: share_by_query(tops[s.name], at_least) for s in systems}
    audits = [measure_system(s, tops[s.name], ndcg[s.name], share[s.name], sample, resamples, seed) for s in systems]
    comparison, primary = None, audits[0].per_query
    if len(audits) == 2:
        comparison, primary = paired_difference(audits[1], audits[0], sample, resamples, seed)
    return _Measured(ndcg, share, audits, comparison, primary, rated)


def _population(ws: Workspace, query_ids: set[str], lists: list[ResultLists], split: str | None) -> set[str]:
    """The queries an audit draws from: those every run file has, else all `query_ids`; of `split`
    when given."""
    population = set(query_ids)
    for run in lists:
        population &= set(run.lists)
    if split is not None:
        population &= {q for (q,) in ws.fetchall("SELECT query_id FROM splits WHERE split = ?", [split])}
    if not population:
        where = f" in the {split} split" if split else ""
        raise RelkitError("no query to audit: " + ("the run files have no query in common" + where if lists
                                                   else "the workspace has no queries" + where))
    return population


def audit(ws: Workspace, judge: str, runs: list[str] = (), engines: list[Engine] = (), sample: int | None = None,
          strata: str = FREQUENCY, allocation: str = "proportional", pilot: str | None = None,
          split: str | None = None, k: int = 10, threshold: int | None = None, seed: int = 0, name: str | None = None,
          concurrency: int = 4, human: bool = True, people: int | None = None) -> AuditResult:
    """Audit run files (`NAME=FILE` or `FILE`) and live engines (`relkit.audit.Engine`) on the same
    sample of queries: the queries every run file has, else the workspace's (of `split` when given);
    `people`: with a slice of about that many results for people to judge (`run_audit`).

        audit(ws, "teacher:demo", runs=["bm25=bm25.trec"], sample=200).systems[0].ndcg
    """
    if not judge:
        raise RelkitError("--judge is required: teacher:NAME, student:NAME or judge:NAME")
    if not runs and not engines:
        raise RelkitError("nothing to audit: give a run file (--run) or an engine (--engine)")
    the_judge = make_judge(judge, ws)       # first: a judge that does not exist ends the audit before any work
    texts = dict(ws.fetchall("SELECT query_id, query FROM queries"))
    if split is not None and split not in SPLITS:
        raise RelkitError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
    by_text = ws.query_ids_by_text()
    lists = [read_run(path, n, set(texts), by_text) for n, path in (parse_named(r, "run") for r in runs)]
    population = _population(ws, set(texts), lists, split)
    chosen = draw(query_strata(ws, sorted(population), strata), sample, allocation,
                  pilot_spread(ws, pilot) if pilot else None, seed, strata)
    ws.release()     # engines and the judge take a while: other relkit commands may use the workspace meanwhile
    for engine in engines:
        with progress(total=len(chosen.query_ids), desc=f"asking {engine.name}", unit="query") as bar:
            lists.append(ask_engine(engine, {q: texts[q] for q in chosen.query_ids}, k, concurrency, bar.update))
    return run_audit(ws, lists, the_judge, chosen, k=k, threshold=threshold, name=name, seed=seed, human=human,
                     people=people)

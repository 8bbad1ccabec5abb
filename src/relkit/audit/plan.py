"""Planning an audit from a pilot (`relkit audit --plan-mde M --pilot NAME`): how many queries to
audit and how many of them people judge for the next audit's minimum detectable effect to be M.

The pilot is an audit combined with people's judgments of its slice (`relkit audit --combine`); its
primary estimate (the paired nDCG@K difference of its first two systems, else its system's nDCG@K)
gives the per-query variance of people's values, of the judge's and their covariance. With Q
audited queries of which n are judged by people and lambda tuned, the PPI++ estimate's variance is
sigma_y^2 (1 - rho^2) / n + sigma_y^2 rho^2 / Q (lambda below 1; ppi.Moments.variance in general), and
the MDE is 2.80 standard errors. People alone need Q = n = (2.80 sigma_y / M)^2 queries; more
queries judged by the judge alone lower the n people judge, down to a floor however many there are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from relkit.audit.estimates import MDE_FACTOR
from relkit.audit.ppi import Moments
from relkit.audit.storage import stored_audit
from relkit.errors import RelkitError
from relkit.workspace import Workspace

SCALES = (1, 2, 4, 8, 16)         # audited queries, in multiples of what people alone would need


def people_only(moments: Moments, target: float) -> int:
    """The queries people alone must judge for an MDE of `target`.

    >>> people_only(Moments(0.04, 0.04, 0.03), 0.05)
    126
    """
    return max(2, math.ceil((MDE_FACTOR / target) ** 2 * moments.var_people))


def floor(moments: Moments, target: float) -> int:
    """The people-judged queries needed however many queries the judge judges: the per-query
    variance left once the judge has said what it can, min over lambda in [0, 1] of
    sigma_y^2 - 2 lambda c + lambda^2 sigma_f^2.

    >>> floor(Moments(0.04, 0.04, 0.03), 0.05)
    55
    """
    lam = float(np.clip(moments.covariance / moments.var_judge, 0, 1)) if moments.var_judge > 0 else 0.0
    left = moments.var_people - 2 * lam * moments.covariance + lam ** 2 * moments.var_judge
    return max(2, math.ceil((MDE_FACTOR / target) ** 2 * left))


@dataclass(frozen=True)
class Plan:
    """For several numbers of audited queries, the people-judged queries (and results) that reach
    the target MDE."""
    pilot: str
    measure: str
    target: float
    moments: Moments
    results_per_query: float           # results of a query no person had judged in the pilot
    people_only: int
    floor: int
    rows: list[dict]                   # {queries, people_queries, people_results, judge_results, mde}

    def to_dict(self) -> dict:
        return {"pilot": self.pilot, "measure": self.measure, "target_mde": self.target, **self.moments.to_dict(),
                "correlation": self.moments.correlation, "results_per_query": self.results_per_query,
                "people_only": self.people_only, "floor": self.floor, "rows": self.rows}

    def __rich__(self):
        from rich.table import Table

        m = self.moments
        table = Table(title=f"reaching an MDE of {self.target:g} in {self.measure}", caption=(
            f"from the pilot {self.pilot}: per-query variance of people's values {m.var_people:.4g}, of the judge's "
            f"{m.var_judge:.4g}, correlation {m.correlation:.3f}; {self.results_per_query:.1f} results to judge per "
            f"query. People alone: {self.people_only:,} queries; however many queries the judge judges, people judge "
            f"at least {self.floor:,}. Strata in proportion to their size; assumes the next audit's judge, systems "
            f"and queries are like the pilot's."))
        for col in ("queries audited", "judged by people", "results people judge", "results the judge judges",
                    "MDE"):
            table.add_column(col, justify="right")
        for r in self.rows:
            table.add_row(f"{r['queries']:,}", f"{r['people_queries']:,}", f"{r['people_results']:,}",
                          f"{r['judge_results']:,}", f"{r['mde']:.4f}")
        return table


def plan(moments: Moments, target: float, results_per_query: float, scales=SCALES) -> list[dict]:
    """The rows of a plan: for Q = `scales` x the queries people alone need, the fewest people-judged
    queries reaching `target` and what they cost in results."""
    if not target > 0:
        raise RelkitError(f"--plan-mde is a difference above 0, got {target}")
    alone = people_only(moments, target)
    rows = []
    for scale in scales:
        queries = alone * scale
        people = moments.people_needed(queries, target)
        rows.append({"queries": queries, "people_queries": people,
                     "people_results": round(people * results_per_query),
                     "judge_results": round(queries * results_per_query), "mde": moments.mde(queries, people)})
    return rows


def plan_audit(ws: Workspace, pilot: str | None, target: float) -> Plan:
    """The plan for an MDE of `target` from the stored audit `pilot` combined with people."""
    if not pilot:
        raise RelkitError("--plan-mde plans from a pilot audit combined with people: --pilot NAME")
    stored = stored_audit(ws, pilot)
    if not stored.get("ppi"):
        raise RelkitError(f"audit '{pilot}' is not combined with people's judgments of a slice: run it with --people "
                          f"N, have people judge the slice, then `relkit audit --combine {pilot}`")
    p = stored["ppi"]["plan"]
    moments = Moments(p["var_people"], p["var_judge"], p["covariance"])
    return Plan(pilot, p["measure"], target, moments, p["results_per_query"], people_only(moments, target),
                floor(moments, target), plan(moments, target, p["results_per_query"]))

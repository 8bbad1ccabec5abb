"""Which queries an audit judges: a stratified sample, allocated to strata in proportion to their
size or by Neyman allocation (size times the spread a pilot audit measured)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from relkit.errors import RelkitError
from relkit.workspace import Workspace

FREQUENCY = "frequency"                    # head / torso / tail by the engagement log
UNLOGGED = "not in the log"
NO_VALUE = "(none)"
ALLOCATIONS = ("proportional", "neyman")


def query_strata(ws: Workspace, query_ids: list[str], by: str = FREQUENCY) -> dict[str, str]:
    """query_id -> its stratum. `frequency`: head, torso and tail are the thirds of the logged
    queries by impressions in the engagement log (as `relkit report`'s breakdown), and queries the
    log lacks are a stratum of their own; a workspace with no log is one stratum, `all`. Any other
    `by` names a column of the queries table (`language`) or a key of their `extra` (a column of
    the imported queries file)."""
    qids = list(dict.fromkeys(query_ids))
    if by == FREQUENCY:
        if ws.count("engagement") == 0:
            return dict.fromkeys(qids, "all")
        with ws.registered("_audit_queries", {"query_id": qids}):
            rows = ws.fetchall("""
                SELECT q.query_id, coalesce(e.impressions, 0) FROM _audit_queries a JOIN queries q USING (query_id)
                LEFT JOIN (SELECT lower(trim(query)) AS key, sum(impressions) AS impressions
                           FROM engagement GROUP BY 1) e
                  ON e.key = lower(trim(q.query))""")
        impressions = {q: int(n) for q, n in rows}
        logged = np.array([n for n in impressions.values() if n > 0])
        if not len(logged):
            return dict.fromkeys(qids, UNLOGGED)
        low, high = np.quantile(logged, [1 / 3, 2 / 3])
        return {q: UNLOGGED if (n := impressions.get(q, 0)) == 0 else "tail" if n <= low else "torso" if n <= high
                else "head" for q in qids}
    if not by.replace("_", "").isalnum():
        raise RelkitError(f"--strata names a query column or `frequency`, got '{by}'")
    column = "language" if by == "language" else f"json_extract_string(q.extra, '$.{by}')"
    with ws.registered("_audit_queries", {"query_id": qids}):
        rows = ws.fetchall(f"SELECT q.query_id, {column} FROM _audit_queries JOIN queries q USING (query_id)")
    values = {q: v for q, v in rows}
    if all(v is None for v in values.values()):
        raise RelkitError(f"--strata {by}: no audited query has a value for '{by}' (a column of the imported "
                          f"queries file, `language`, or `frequency` for the engagement log)")
    return {q: NO_VALUE if values.get(q) is None else str(values[q]) for q in qids}


def allocate(population: dict[str, int], n: int, spread: dict[str, float] | None = None) -> dict[str, int]:
    """How many of `n` queries each stratum gets. Minimises the variance of the stratified mean,
    sum_h (N_h S_h / N)^2 / n_h, one query at a time: with every S_h equal (`spread` None) that is
    proportional allocation (n_h in proportion to N_h), with a pilot's S_h it is Neyman allocation
    (n_h in proportion to N_h S_h). Each stratum gets at least two queries when `n` allows (one
    when it allows only that), so each has a spread to measure, and never more than it has.

    >>> allocate({"head": 10, "tail": 30}, 8)
    {'head': 2, 'tail': 6}
    """
    strata = [h for h, size in population.items() if size > 0]
    alloc = dict.fromkeys(population, 0)
    n = min(n, sum(population[h] for h in strata))
    floor = 2 if n >= 2 * len(strata) else 1 if n >= len(strata) else 0
    for h in strata:
        alloc[h] = min(floor, population[h])
    weight = {h: population[h] * (1.0 if spread is None else max(spread.get(h, 0.0), 1e-9)) for h in strata}
    for _ in range(n - sum(alloc.values())):
        open_ = [h for h in strata if alloc[h] < population[h]]
        best = max(open_, key=lambda h: (weight[h] ** 2 / ((alloc[h] + 1) * max(alloc[h], 1e-9))
                                         if alloc[h] else float("inf"), population[h]))
        alloc[best] += 1
    return alloc


@dataclass(frozen=True)
class Sample:
    """The audited queries and the strata they were drawn from."""
    query_ids: list[str]
    strata: dict[str, str]          # audited query -> stratum
    population: dict[str, int]      # stratum -> queries it has
    allocation: dict[str, int]      # stratum -> queries drawn from it
    method: str                     # all, proportional or neyman
    by: str

    def weights(self) -> dict[str, float]:
        """Each sampled stratum's share of the population: the weight of its mean in the estimate."""
        drawn = {h: self.population[h] for h, n in self.allocation.items() if n > 0}
        total = sum(drawn.values())
        return {h: size / total for h, size in drawn.items()}

    def to_dict(self) -> dict:
        return {"by": self.by, "method": self.method, "queries": len(self.query_ids), "population": self.population,
                "allocation": self.allocation}


def draw(strata: dict[str, str], n: int | None, method: str = "proportional", spread: dict[str, float] | None = None,
         seed: int = 0, by: str = FREQUENCY) -> Sample:
    """A stratified random sample of `n` of the queries in `strata` (all of them when `n` is None)."""
    if method not in ALLOCATIONS:
        raise RelkitError(f"--allocation must be one of {', '.join(ALLOCATIONS)}, got '{method}'")
    if method == "neyman" and spread is None:
        raise RelkitError("Neyman allocation needs the spread of each stratum from a pilot audit: --pilot NAME")
    members: dict[str, list[str]] = {}
    for q in sorted(strata):
        members.setdefault(strata[q], []).append(q)
    population = {h: len(qs) for h, qs in sorted(members.items())}
    if n is None or n >= len(strata):
        return Sample(sorted(strata), dict(strata), population, dict(population), "all", by)
    if n < 1:
        raise RelkitError(f"--sample must be at least 1, got {n}")
    alloc = allocate(population, n, spread if method == "neyman" else None)
    rng = np.random.default_rng(seed)
    chosen = []
    for h, qs in members.items():
        chosen += [qs[i] for i in sorted(rng.choice(len(qs), alloc[h], replace=False).tolist())]
    return Sample(sorted(chosen), {q: strata[q] for q in chosen}, population, alloc, method, by)

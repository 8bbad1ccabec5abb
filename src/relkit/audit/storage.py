"""Audits kept in the workspace (results/audit-NAME.json): saving one, the per-stratum spread a pilot
measured, and every stored audit over time."""
from __future__ import annotations

from dataclasses import dataclass

from relkit.errors import RelkitError
from relkit.workspace import Workspace

RESULT_KIND = "audit"
HISTORY_METRICS = ("ndcg", "share", "difference")


def save_audit(ws: Workspace, name: str, stored: dict) -> None:
    """Keep an audit (`AuditResult.to_dict()`) in the workspace under `name`."""
    ws.save_result(RESULT_KIND, name, stored)


def stored_audits(ws: Workspace) -> list[dict]:
    """Every stored audit, oldest first."""
    return sorted(ws.results(RESULT_KIND), key=lambda a: (a.get("time", ""), a["name"]))


def stored_audit(ws: Workspace, name: str, role: str = "to use as a pilot") -> dict:
    """The stored audit `name` (its JSON, without the name)."""
    audits = ws.results(RESULT_KIND)
    for audit in audits:
        if audit["name"] == name:
            return {key: value for key, value in audit.items() if key != "name"}
    have = [a["name"] for a in audits]
    raise RelkitError(f"no stored audit '{name}' {role}; audits here: {', '.join(have) or 'none'}")


def pilot_spread(ws: Workspace, name: str) -> dict[str, float]:
    """The per-stratum spread measured by the stored audit `name` (for Neyman allocation): of the
    paired difference when it compared two systems, else of its system's nDCG."""
    audit = stored_audit(ws, name)
    if not audit.get("spread"):
        raise RelkitError(f"audit '{name}' has no per-stratum spread to allocate by")
    return audit["spread"]


@dataclass(frozen=True)
class AuditHistory:
    """A metric of the stored audits over time: one row per audit, oldest first, with the metric's
    estimate and interval per system (`relkit audit --history`)."""
    metric: str
    system: str | None
    rows: list[dict]         # {time, name, judge, k, threshold, queries, values: {system: {mean, low, high[, mde]}}}

    def __rich__(self):
        from rich.table import Table
        from rich.text import Text

        if not self.rows:
            return Text("no stored audit" + (f" of {self.system}" if self.system else "") + ": run `relkit audit` "
                        "first")
        signed = self.metric == "difference"
        fmt = "{:+.4f}" if signed else "{:.4f}"
        table = Table(title=f"{self.metric} over time")
        for col in ["time (UTC)", "audit", "judge", "queries", "system", "mean", "95% interval"] + (
                ["MDE"] if signed else []):
            table.add_column(col, justify="left" if col in ("time (UTC)", "audit", "judge", "system") else "right")
        for row in self.rows:
            for n, (system, value) in enumerate(row["values"].items()):
                when = (row["time"] or "")[:16].replace("T", " ")
                head = (when, row["name"], row["judge"], str(row["queries"])) if n == 0 else ("",) * 4
                table.add_row(*head, system, fmt.format(value["mean"]),
                              f"[{fmt.format(value['low'])}, {fmt.format(value['high'])}]",
                              *([f"{value['mde']:.4f}"] if signed else []))
        return table


def history(ws: Workspace, metric: str = "ndcg", system: str | None = None) -> AuditHistory:
    """Every stored audit, oldest first: its time, name, judge, queries and, per system, `metric`
    (`ndcg`, `share`: the estimate with its interval; `difference`: the paired difference of an
    audit of two systems)."""
    if metric not in HISTORY_METRICS:
        raise RelkitError(f"--metric must be one of {', '.join(HISTORY_METRICS)}, got '{metric}'")
    rows = []
    for audit in stored_audits(ws):
        if metric == "difference":
            c = audit.get("comparison")
            values = {f"{c['a']} - {c['b']}": {**c["difference"], "mde": c["mde"]}} if c else {}
        else:
            values = {s["name"]: s[metric] for s in audit.get("systems", []) if s.get(metric)}
        if system is not None:
            values = {n: v for n, v in values.items() if system in n.split(" - ")}
        if values:
            rows.append({"time": audit.get("time"), "name": audit["name"], "judge": audit.get("judge"),
                         "k": audit.get("k"), "threshold": audit.get("threshold"),
                         "queries": audit.get("sample", {}).get("queries"), "values": values})
    return AuditHistory(metric, system, rows)

"""The numbers of a report: everything a plot or table of the page shows, computed once from the
systems' predictions of one split and from what the workspace keeps (teacher training histories,
scaling curves, ablations, the engagement log). `ReportData.to_dict` is what `--json` writes."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from relkit import metrics
from relkit.audit.storage import stored_audits
from relkit.errors import RelkitError
from relkit.evaluate import EvalReport, JudgedPairs, SystemPrediction, compare, load_judged_pairs, predict_all
from relkit.metrics import ndcg_per_query
from relkit.scale import LabelScale
from relkit.text import item_title
from relkit.workspace import Workspace

LOST_QUERIES = 20          # the queries that lost most, shown with their items
CUTOFF = 10                # the per-query metric: nDCG@10


@dataclass(frozen=True)
class Levels:
    """What one system says of the levels: confusion matrices (decision and argmax), the reliability
    of P(level >= t) for each threshold, and its score's distribution per human level."""
    system: str
    decision: str | None                   # "own" (e.g. cutpoints), "argmax", or None for a score-only system
    confusion: list[list[int]] | None      # row = human level, column = the decision's level
    confusion_argmax: list[list[int]] | None
    reliability: dict[int, dict] | None    # threshold -> {"bins": [...], "ece": float}
    score_by_level: dict[int, dict]        # human level -> quartiles of the ranking score


@dataclass(frozen=True)
class LostQuery:
    query_id: str
    query: str
    first: float                    # nDCG@10 of the first system
    this: float
    items: list[dict]               # item_id, title, level, first_score, score; by the system's score


@dataclass
class ReportData:
    command: str
    version: str
    workspace: str
    created: str
    split: str
    scale: dict
    evaluation: dict                               # EvalReport.to_dict()
    levels: list[Levels]
    per_query: dict[str, list[dict]]               # system -> [{query_id, query, diff}] sorted by diff
    lost: dict[str, list[LostQuery]]               # system -> the queries it lost most against the first
    training: list[dict] = field(default_factory=list)     # [{teacher, history}]
    scaling: list[dict] = field(default_factory=list)      # saved `relkit distill --sizes` curves
    ablation: list[dict] = field(default_factory=list)     # saved `relkit ablate` tables
    breakdown: dict[str, list[dict]] = field(default_factory=dict)   # "language"/"frequency" -> rows
    audits: list[dict] = field(default_factory=list)       # saved `relkit audit` results, oldest first

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @property
    def first(self) -> str:
        return self.evaluation["systems"][0]["name"]


def quartiles(values: np.ndarray) -> dict:
    q = np.quantile(values, [0.0, 0.25, 0.5, 0.75, 1.0]) if len(values) else [float("nan")] * 5
    return {"n": int(len(values)), "min": float(q[0]), "q1": float(q[1]), "median": float(q[2]),
            "q3": float(q[3]), "max": float(q[4]), "mean": float(np.mean(values)) if len(values) else float("nan")}


def levels_of(pairs: JudgedPairs, s: SystemPrediction, scale: LabelScale) -> Levels:
    y = pairs.labels
    scores = s.prediction.ranking_scores(scale)
    by_level = {level: quartiles(scores[y == level]) for level in scale.levels if (y == level).any()}
    p = s.prediction.proba
    if p is None:
        return Levels(s.name, None, None, None, None, by_level)
    argmax = p.argmax(axis=1) + 1
    own = s.prediction.levels
    reliability = {}
    for t in range(2, scale.k + 1):
        bins, ece = metrics.reliability(y, p[:, t - 1:].sum(axis=1), t)
        reliability[t] = {"bins": bins, "ece": ece}
    return Levels(s.name, "argmax" if own is None else "own",
                  metrics.confusion(y, argmax if own is None else own, scale.k).tolist(),
                  metrics.confusion(y, argmax, scale.k).tolist(), reliability, by_level)


def per_query_ndcg(pairs: JudgedPairs, s: SystemPrediction, scale: LabelScale) -> dict[str, float]:
    return ndcg_per_query(pairs.query_ids, pairs.item_ids, pairs.labels, s.prediction.ranking_scores(scale),
                          scale.gains, (CUTOFF,))[CUTOFF]


def lost_queries(pairs: JudgedPairs, first: SystemPrediction, other: SystemPrediction, diffs: list[dict],
                 scale: LabelScale, n: int = LOST_QUERIES) -> list[LostQuery]:
    """The `n` queries where `other` lost most nDCG@10 against `first`, each with its judged items."""
    a, b = first.prediction.ranking_scores(scale), other.prediction.ranking_scores(scale)
    rows_of: dict[str, list[int]] = {}
    for i, q in enumerate(pairs.query_ids):
        rows_of.setdefault(q, []).append(i)
    out = []
    for d in diffs[:n]:
        if d["diff"] >= 0:
            break
        rows = sorted(rows_of[d["query_id"]], key=lambda i: -b[i])
        items = [{"item_id": pairs.items[i]["item_id"], "title": item_title(pairs.items[i]),
                  "level": int(pairs.labels[i]), "first_score": float(a[i]), "score": float(b[i])} for i in rows]
        out.append(LostQuery(d["query_id"], d["query"], d["first"], d["this"], items))
    return out


def teacher_histories(ws: Workspace, names: list[str]) -> list[dict]:
    """The dev evaluations of each teacher system's training (its history.json), where kept."""
    from relkit.teacher.system import TeacherSystem

    out = []
    for name in names:
        kind, _, ref = name.partition(":")
        if kind != "teacher":
            continue
        path = TeacherSystem.from_workspace(ws, ref).path / "history.json"
        if path.is_file():
            out.append({"teacher": name, "history": json.loads(path.read_text())})
    return out


def breakdown(ws: Workspace, pairs: JudgedPairs, per_query: dict[str, dict[str, float]]) -> dict[str, list[dict]]:
    """Mean nDCG@10 of each system by query language (when the split's queries have more than one)
    and by query frequency in the engagement log (when there is one): head, torso and tail are
    the thirds of the logged queries by impressions."""
    qids = sorted(set(pairs.query_ids))
    with ws.registered("report_queries", {"query_id": qids}):
        rows = ws.fetchall("""
            SELECT q.query_id, coalesce(q.language, 'unknown'), coalesce(e.impressions, 0)
            FROM report_queries r JOIN queries q USING (query_id)
            LEFT JOIN (SELECT lower(trim(query)) AS key, sum(impressions) AS impressions FROM engagement GROUP BY 1) e
              ON e.key = lower(trim(q.query))""")
    language = {q: lang for q, lang, _ in rows}
    impressions = {q: int(n) for q, _, n in rows}
    out: dict[str, list[dict]] = {}

    def table(groups: dict[str, str], order: list[str]) -> list[dict]:
        result = []
        for g in order:
            members = [q for q, v in groups.items() if v == g]
            row = {"group": g, "queries": len(members)}
            for system, values in per_query.items():
                scored = [values[q] for q in members if q in values]
                row[system] = float(np.mean(scored)) if scored else None
            result.append(row)
        return result

    languages = sorted(set(language.values()))
    if len(languages) > 1:
        out["language"] = table(language, languages)
    logged = np.array([n for n in impressions.values() if n > 0])
    if len(logged):
        low, high = np.quantile(logged, [1 / 3, 2 / 3])
        bucket = {q: "not in the log" if n == 0 else "tail" if n <= low else "torso" if n <= high else "head"
                  for q, n in impressions.items()}
        out["frequency"] = table(bucket, [b for b in ("head", "torso", "tail", "not in the log")
                                         if b in bucket.values()])
    return out


def audits(ws: Workspace) -> list[dict]:
    """The saved audits, oldest first, with what the report shows of them (not every query's nDCG)."""
    keep = ("name", "time", "judge", "judge_version", "k", "threshold", "human_judgments", "ndcg_queries", "judged",
            "comparison")
    out = []
    for audit in stored_audits(ws):
        row = {key: audit.get(key) for key in keep}
        row["queries"] = len(audit.get("query_ids", []))
        row["systems"] = [{key: s.get(key) for key in ("name", "source", "ndcg", "share", "empty")}
                          for s in audit.get("systems", [])]
        people = audit.get("people")
        row["people"] = None if not people else {"queries": len(people["query_ids"]), "results": len(people["pairs"]),
                                                 "known": people["known"], "csv": people["csv"]}
        row["ppi"] = audit.get("ppi")     # judge only, people only and combined, once people judged the slice
        out.append(row)
    return out


def build(ws: Workspace, systems: list, split: str = "test", command: str = "") -> ReportData:
    """Score `systems` on the judged pairs of `split` and gather everything the report shows.

        data = build(ws, [make_system("teacher:demo", ws), make_system("bm25", ws)])
        data.levels[0].reliability[2]["ece"]     # the teacher's calibration error at level 3
    """
    from relkit import __version__

    if not systems:
        raise RelkitError("a report needs at least one --system")
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise RelkitError(f"each --system once: {', '.join(names)}")
    pairs = load_judged_pairs(ws, split)
    scored = predict_all(pairs, systems)
    report: EvalReport = compare(pairs, scored, ws.scale)
    query_text = dict(zip(pairs.query_ids, pairs.queries))
    ndcg = {s.name: per_query_ndcg(pairs, s, ws.scale) for s in scored}
    first = scored[0]
    per_query, lost = {}, {}
    for s in scored[1:]:
        common = sorted(ndcg[first.name].keys() & ndcg[s.name].keys())
        diffs = sorted(({"query_id": q, "query": query_text[q], "first": ndcg[first.name][q],
                         "this": ndcg[s.name][q], "diff": ndcg[s.name][q] - ndcg[first.name][q]} for q in common),
                       key=lambda d: (d["diff"], d["query_id"]))
        per_query[s.name] = diffs
        lost[s.name] = lost_queries(pairs, first, s, diffs, ws.scale)
    return ReportData(
        command=command, version=__version__, workspace=str(ws.path.resolve()),
        created=time.strftime("%Y-%m-%d %H:%M:%S %Z"), split=split,
        scale={"names": list(ws.scale.names), "gains": list(ws.scale.gains)},
        evaluation=report.to_dict(), levels=[levels_of(pairs, s, ws.scale) for s in scored],
        per_query=per_query, lost=lost, training=teacher_histories(ws, names),
        scaling=ws.results("scaling"), ablation=ws.results("ablation"), breakdown=breakdown(ws, pairs, ndcg),
        audits=audits(ws))


__all__ = ["Levels", "LostQuery", "ReportData", "build"]

"""How far annotators agree, from the `annotations` table (one row per live judgment).

- Cohen's kappa with quadratic weights for each pair of annotators, on the pairs both judged
  (a near miss on the K-level scale counts partly), with their raw agreement and confusion matrix;
- Krippendorff's alpha (ordinal) over every annotator at once (the `krippendorff` package);
- each annotator against the consensus of the others (the median of the others' labels, the lower
  middle one when they are even in number) and against a teacher's level (its decision rule on its
  stored labels; pairs it has not labeled are scored);
- judgments per hour of judging per annotator (from the seconds spent on each).

    report = agreement_report(ws, teacher="demo")
    report.to_dict()["alpha"]["ordinal"]
    # -> 0.71
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from itertools import combinations

import numpy as np

from relkit.errors import RelkitError
from relkit.metrics import confusion, quadratic_kappa
from relkit.workspace import Workspace

ANNOTATIONS_SCHEMA = """CREATE TABLE IF NOT EXISTS annotations (
    annotator VARCHAR, query_id VARCHAR, item_id VARCHAR, label INTEGER, note VARCHAR,
    created_at TIMESTAMP, seconds DOUBLE)"""


@dataclass(frozen=True)
class Comparison:
    """Two sets of levels on the same pairs: `a` (rows of the confusion matrix) against `b`."""

    a: str
    b: str
    pairs: int
    kappa: float | None          # quadratic weights; None where undefined (fewer than 2 pairs, one level)
    exact: float | None          # share of pairs with the same level
    mean_abs_diff: float | None  # mean |level_a - level_b|
    confusion: list[list[int]]   # (K, K): row = a's level, column = b's level

    @classmethod
    def of(cls, a: str, b: str, la, lb, k: int) -> "Comparison":
        la, lb = np.asarray(la, dtype=np.int64), np.asarray(lb, dtype=np.int64)
        n = len(la)
        kappa = quadratic_kappa(la, lb, range(1, k + 1)) if n >= 2 else float("nan")
        return cls(a, b, n, None if np.isnan(kappa) else float(kappa),
                   float(np.mean(la == lb)) if n else None,
                   float(np.mean(np.abs(la - lb))) if n else None,
                   confusion(la, lb, k).tolist() if n else np.zeros((k, k), dtype=int).tolist())


@dataclass(frozen=True)
class AnnotatorStats:
    annotator: str
    judgments: int
    hours: float                 # time spent judging: the sum of seconds per judgment, in hours
    per_hour: float | None       # judgments per hour of judging
    median_seconds: float | None
    first: str | None            # ISO time of the first and last judgment
    last: str | None
    vs_consensus: Comparison | None
    vs_teacher: Comparison | None


@dataclass(frozen=True)
class AgreementReport:
    levels: list[str]
    annotators: list[AnnotatorStats]
    pairwise: list[Comparison]
    alpha: float | None          # Krippendorff's alpha, ordinal, over pairs judged by two or more
    alpha_pairs: int             # the pairs it is computed on
    judged_pairs: int            # distinct pairs with at least one judgment
    teacher: str | None

    def to_dict(self) -> dict:
        return {"levels": self.levels, "judged_pairs": self.judged_pairs, "teacher": self.teacher,
                "alpha": {"ordinal": self.alpha, "pairs": self.alpha_pairs},
                "annotators": [asdict(a) for a in self.annotators],
                "pairwise": [asdict(c) for c in self.pairwise]}

    def __rich__(self):
        from rich.console import Group
        from rich.table import Table

        alpha = "undefined" if self.alpha is None else f"{self.alpha:.3f}"
        parts: list = [f"{len(self.annotators)} annotators, {self.judged_pairs:,} judged pairs; Krippendorff's "
                       f"alpha (ordinal) {alpha} on {self.alpha_pairs:,} pairs judged by two or more"]
        people = Table(title="annotators")
        for col in ("annotator", "judgments", "time judging", "per hour", "median s", "κ vs consensus (pairs)",
                    f"κ vs teacher {self.teacher} (pairs)" if self.teacher else None):
            if col:
                people.add_column(col, justify="left" if col == "annotator" else "right")
        for a in self.annotators:
            row = [a.annotator, f"{a.judgments:,}", _clock(a.hours * 3600), _num(a.per_hour, "{:.0f}"),
                   _num(a.median_seconds, "{:.1f}"), _cmp(a.vs_consensus)]
            people.add_row(*row, *([_cmp(a.vs_teacher)] if self.teacher else []))
        parts.append(people)
        if self.pairwise:
            pairs = Table(title="pairs of annotators (Cohen's kappa, quadratic weights)")
            for col in ("a", "b", "shared pairs", "κ", "same level", "mean |a-b|"):
                pairs.add_column(col, justify="left" if col in ("a", "b") else "right")
            for c in self.pairwise:
                pairs.add_row(c.a, c.b, f"{c.pairs:,}", _num(c.kappa, "{:.3f}"), _num(c.exact, "{:.1%}"),
                              _num(c.mean_abs_diff, "{:.2f}"))
            parts.append(pairs)
        for c in [*self.pairwise, *(a.vs_teacher for a in self.annotators if a.vs_teacher)]:
            if c.pairs:
                parts.append(_confusion_table(c, self.levels))
        return Group(*parts)


def _num(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _clock(seconds: float) -> str:
    """h:mm:ss.

    >>> _clock(3725.4)
    '1:02:05'
    """
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _cmp(c: Comparison | None) -> str:
    return "-" if c is None or not c.pairs else f"{_num(c.kappa, '{:.3f}')} ({c.pairs:,})"


def _confusion_table(c: Comparison, levels: list[str]):
    from rich.table import Table

    table = Table(title=f"{c.a} (rows) against {c.b} (columns)")
    table.add_column("")
    for n, name in enumerate(levels, start=1):
        table.add_column(f"{n} {name}", justify="right")
    for n, (name, row) in enumerate(zip(levels, c.confusion), start=1):
        table.add_row(f"{n} {name}", *[str(v) for v in row])
    return table


def ensure_annotations_table(ws: Workspace) -> None:
    """Create the `annotations` table if the workspace has none (the annotation app does it too)."""
    ws.run(ANNOTATIONS_SCHEMA)


def load_annotations(ws: Workspace) -> list[tuple]:
    """(annotator, query_id, item_id, label, created_at, seconds) per live judgment; where an annotator
    has several rows for a pair, the latest counts."""
    if not ws.has_table("annotations"):
        raise RelkitError(f"{ws.path} has no annotations yet: people judge pairs with `relkit annotate`")
    rows = ws.fetchall("""
        SELECT annotator, query_id, item_id, label, created_at, seconds FROM annotations
        QUALIFY row_number() OVER (PARTITION BY annotator, query_id, item_id ORDER BY created_at DESC) = 1
        ORDER BY annotator, query_id, item_id""")
    k = ws.scale.k
    for r in rows:
        if r[0] is None or r[1] is None or r[2] is None:
            raise RelkitError(f"annotations: a row has no annotator, query_id or item_id: {r[:4]}")
        if r[3] is None or not 1 <= r[3] <= k:
            raise RelkitError(f"annotations: {r[0]}'s label of ({r[1]}, {r[2]}) is {r[3]}; the scale has levels "
                              f"1..{k}")
    return rows


def low_median(values: list[int]) -> int:
    """The median of levels, the lower middle one when they are even in number.

    >>> low_median([3, 1, 2]), low_median([1, 3]), low_median([2, 2, 4, 4])
    (2, 1, 2)
    """
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def ordinal_alpha(by_annotator: dict[str, dict], units: list, k: int) -> float | None:
    """Krippendorff's alpha, ordinal, of levels 1..k: annotators x units, missing values allowed.
    None where it is undefined (no unit with two values, or a single level in all of them)."""
    import krippendorff

    data = np.full((len(by_annotator), len(units)), np.nan)
    for row, labels in enumerate(by_annotator.values()):
        for col, unit in enumerate(units):
            if unit in labels:
                data[row, col] = labels[unit]
    pairable = data[:, (~np.isnan(data)).sum(axis=0) >= 2]
    values = pairable[~np.isnan(pairable)]
    if values.size == 0 or np.unique(values).size < 2:
        return None
    return float(krippendorff.alpha(reliability_data=pairable, value_domain=list(range(1, k + 1)),
                                    level_of_measurement="ordinal"))


def agreement_report(ws: Workspace, teacher: str | None = None) -> AgreementReport:
    """Agreement between the annotators of the workspace, and with `teacher` (NAME, folder or path of a
    teacher, or the name its stored labels carry) when given."""
    rows = load_annotations(ws)
    if not rows:
        raise RelkitError(f"{ws.path} has no annotations yet: people judge pairs with `relkit annotate`")
    k = ws.scale.k
    by_annotator: dict[str, dict] = {}
    for who, q, i, label, *_ in rows:
        by_annotator.setdefault(who, {})[(q, i)] = int(label)
    names = sorted(by_annotator)
    pairwise = []
    for a, b in combinations(names, 2):
        shared = sorted(by_annotator[a].keys() & by_annotator[b].keys())
        pairwise.append(Comparison.of(a, b, [by_annotator[a][p] for p in shared],
                                      [by_annotator[b][p] for p in shared], k))
    units = sorted({p for labels in by_annotator.values() for p in labels})
    alpha = ordinal_alpha(by_annotator, units, k)
    alpha_pairs = sum(1 for u in units if sum(u in labels for labels in by_annotator.values()) >= 2)
    teacher_levels, teacher_name = _teacher_levels(ws, teacher, units) if teacher else ({}, None)
    stats = []
    for who in names:
        mine = by_annotator[who]
        own_rows = [r for r in rows if r[0] == who]
        seconds = [float(r[5]) for r in own_rows if r[5] is not None and r[5] >= 0]
        times = [r[4] for r in own_rows if r[4] is not None]
        hours = sum(seconds) / 3600
        shared = [p for p in mine if any(p in by_annotator[o] for o in names if o != who)]
        consensus = [low_median([by_annotator[o][p] for o in names if o != who and p in by_annotator[o]])
                     for p in shared]
        vs_consensus = Comparison.of(who, "consensus", [mine[p] for p in shared], consensus, k) if shared else None
        vs_teacher = None
        if teacher_name:
            judged = [p for p in mine if p in teacher_levels]
            vs_teacher = Comparison.of(who, f"teacher {teacher_name}", [mine[p] for p in judged],
                                       [teacher_levels[p] for p in judged], k)
        stats.append(AnnotatorStats(
            annotator=who, judgments=len(mine), hours=hours,
            per_hour=len(seconds) / hours if hours > 0 else None,
            median_seconds=float(np.median(seconds)) if seconds else None,
            first=_iso(min(times)) if times else None, last=_iso(max(times)) if times else None,
            vs_consensus=vs_consensus, vs_teacher=vs_teacher))
    return AgreementReport(levels=list(ws.scale.names), annotators=stats, pairwise=pairwise, alpha=alpha,
                           alpha_pairs=alpha_pairs, judged_pairs=len(units), teacher=teacher_name)


def _iso(value) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _teacher_levels(ws: Workspace, teacher: str, pairs: list) -> tuple[dict, str]:
    """The teacher's level of each pair (its decision rule: cutpoints on the expected level where it
    has them, else the most probable level), and its name."""
    from relkit.annotation.queue import model_probabilities, stored_teachers
    from relkit.metrics import apply_cutpoints, expected_level
    from relkit.teacher.model import META_FILE, TeacherMeta

    try:
        path = ws.artifact("teacher", teacher)
    except RelkitError:
        if teacher not in stored_teachers(ws):
            raise
        path = None
    name = Workspace.artifact_name("teacher", path) if path else teacher
    pairs, proba = model_probabilities(ws, f"teacher:{teacher}", pairs)
    cutpoints = TeacherMeta.from_json((path / META_FILE).read_text()).cutpoints if path else None
    levels = apply_cutpoints(expected_level(proba), cutpoints) if cutpoints else proba.argmax(axis=1) + 1
    return dict(zip(pairs, (int(v) for v in levels))), name

"""The report as one HTML file: a Jinja2 template (autoescaped: every query, title and name from
the workspace is escaped) with the plots inline as SVG. No script, no stylesheet or font from
elsewhere: it opens with no network."""
from __future__ import annotations

from pathlib import Path

from relkit.report import plots
from relkit.report.data import ReportData

TEMPLATE = "template.html"

# (id, title, what a reader learns there): the page's sections in order; each is always present
# and says so when the workspace has nothing for it
SECTIONS = [
    ("systems", "Systems side by side",
     "the metrics of every system on the same judged pairs, and each one's nDCG@10 difference from the first "
     "with a 95% paired bootstrap interval"),
    ("levels", "Levels",
     "per system: which levels it confuses (confusion matrix, counts and row shares, under its own decision and "
     "the argmax), whether its probability P(level >= t) means what it says (reliability, ECE), and how its "
     "score spreads for each human level"),
    ("queries", "Queries won and lost",
     "per-query nDCG@10 against the first system, sorted, and the 20 queries each system lost most, with "
     "their items, human levels and both scores"),
    ("training", "Teacher training",
     "each teacher's dev metrics and dev loss over its training steps (history.json)"),
    ("scaling", "Scaling curve",
     "how the student's test metrics grow with the number of teacher-labeled pairs (relkit distill --sizes)"),
    ("ablation", "Item text ablation",
     "what each item text field adds to the teacher (relkit ablate)"),
    ("breakdown", "Breakdown",
     "the nDCG@10 of each system by query language and by query frequency in the engagement log"),
    ("audits", "Audits",
     "the saved audits of search engines (relkit audit): each system's nDCG@K and share of results at the "
     "relevant level with 95% intervals, and the paired difference of two with its minimum detectable effect; "
     "with a people slice (relkit audit --people, --combine), the judge alone, people alone and both combined "
     "(prediction-powered, PPI++) side by side, the judge's bias on the slice and whether it ranks systems as "
     "people do"),
    ("about", "About this report", "the command, the relkit version, the workspace and when it was made"),
]


def environment():
    try:
        import jinja2
    except ImportError:
        from relkit.errors import RelkitError

        raise RelkitError("relkit report renders its page with Jinja2: pip install jinja2") from None
    env = jinja2.Environment(loader=jinja2.PackageLoader("relkit.report", "."), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda v, digits=4: "-" if v is None else f"{v:.{digits}f}"
    return env


def render(data: ReportData) -> str:
    """The whole page as a string."""
    from markupsafe import Markup

    names = data.scale["names"]
    first = data.first
    levels = []
    for lv in data.levels:
        entry = {"system": lv.system, "decision": lv.decision, "confusion": None, "confusion_argmax": None,
                 "reliability": None, "ece": None,
                 "scores": Markup(plots.score_by_level(lv.score_by_level, names, f"{lv.system}: score by human level"))}
        if lv.confusion is not None:
            # a system whose own decision is the argmax (or agrees with it on every pair) gets one matrix
            both = lv.decision == "own" and lv.confusion != lv.confusion_argmax
            own = "its decision (cutpoints)" if both else "argmax"
            entry["confusion"] = Markup(plots.confusion(lv.confusion, names, f"{lv.system}: {own}"))
            if both:
                entry["confusion_argmax"] = Markup(plots.confusion(lv.confusion_argmax, names,
                                                                   f"{lv.system}: argmax"))
            entry["reliability"] = Markup(plots.reliability(lv.reliability, f"{lv.system}: reliability of "
                                                                            f"P(level >= t)"))
            entry["ece"] = {int(t): r["ece"] for t, r in lv.reliability.items()}
        levels.append(entry)
    context = {
        "data": data, "first": first, "sections": SECTIONS, "levels": levels,
        "systems": data.evaluation["systems"], "metric_names": list(data.evaluation["systems"][0]["metrics"]),
        "per_query_plot": Markup(plots.per_query_differences(data.per_query, first)) if data.per_query else None,
        "training": [{"teacher": t["teacher"], "plot": Markup(plots.training(t["history"], t["teacher"]))}
                     for t in data.training if t["history"]],
        "scaling": [{"name": c["name"], "teacher": c.get("teacher"), "rows": c["rows"],
                     "plot": Markup(plots.scaling(c["rows"], c["name"]))} for c in data.scaling],
        "ablation": data.ablation,
        "system_names": [s["name"] for s in data.evaluation["systems"]],
    }
    return environment().get_template(TEMPLATE).render(**context)


def write(data: ReportData, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render(data), encoding="utf-8")
    tmp.replace(path)
    return path

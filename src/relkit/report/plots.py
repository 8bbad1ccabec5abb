"""The report's plots: matplotlib figures rendered to inline SVG (text kept as text, so the file
stays small and searchable). Each function takes the numbers of `data.py` and returns SVG markup."""
from __future__ import annotations

import io
import re

import numpy as np

WIDTH = 6.4          # inches: about 600 px, two plots side by side on a laptop screen fit in 1,280 px
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f"]


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display), loaded when a report is made."""
    try:
        import matplotlib
    except ImportError:
        from relkit.errors import RelkitError

        raise RelkitError("relkit report draws its plots with matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "relkit", "font.size": 9,
                         "axes.spines.top": False, "axes.spines.right": False, "figure.dpi": 96})
    return plt


def svg(fig) -> str:
    """The figure as inline SVG, without the XML prolog and the file's RDF metadata; the page's
    stylesheet lets it shrink to its box."""
    plt = pyplot()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, count=1, flags=re.S)     # RDF about the file
    return re.sub(r'\s+xmlns:(dc|cc|rdf)="[^"]*"', "", text)


def confusion(matrix: list[list[int]], names: list[str], title: str) -> str:
    plt = pyplot()
    m = np.asarray(matrix, dtype=np.float64)
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    k = len(m)
    fig, ax = plt.subplots(figsize=(0.8 * k + 1.6, 0.7 * k + 1.2))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(m[i, j]):,}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.6 else "black")
    labels = [f"{i + 1}" for i in range(k)]
    ax.set_xticks(range(k), labels)
    ax.set_yticks(range(k), [f"{i + 1} {n}" for i, n in enumerate(names)])
    ax.set_xlabel("predicted level")
    ax.set_ylabel("human level")
    ax.set_title(title)
    return svg(fig)


def reliability(curves: dict[int, dict], title: str) -> str:
    """One panel per threshold t: the predicted P(level >= t) against the observed share, per bin."""
    plt = pyplot()
    thresholds = sorted(curves, key=int)
    fig, axes = plt.subplots(1, len(thresholds), figsize=(2.3 * len(thresholds) + 0.4, 2.6), squeeze=False)
    for ax, t in zip(axes[0], thresholds):
        bins = curves[t]["bins"]
        ax.plot([0, 1], [0, 1], color="#999", lw=0.8, ls="--")
        x = [b["predicted"] for b in bins]
        y = [b["observed"] for b in bins]
        sizes = [10 + 60 * b["pairs"] / max(1, max(c["pairs"] for c in bins)) for b in bins]
        ax.plot(x, y, color=COLORS[0], lw=1)
        ax.scatter(x, y, s=sizes, color=COLORS[0], zorder=3)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_title(f"level >= {t}: ECE {curves[t]['ece']:.3f}", fontsize=9)
        ax.set_xlabel("predicted")
    axes[0][0].set_ylabel("observed share")
    fig.suptitle(title, fontsize=10)
    return svg(fig)


def score_by_level(by_level: dict[int, dict], names: list[str], title: str) -> str:
    """A box per human level (quartiles, whiskers at min and max) of the system's ranking score."""
    plt = pyplot()
    levels = sorted(by_level, key=int)
    stats = [{"label": str(lv), "whislo": by_level[lv]["min"], "q1": by_level[lv]["q1"],
              "med": by_level[lv]["median"], "q3": by_level[lv]["q3"], "whishi": by_level[lv]["max"],
              "mean": by_level[lv]["mean"], "fliers": []} for lv in levels]
    fig, ax = plt.subplots(figsize=(WIDTH * 0.6, 2.6))
    ax.bxp(stats, showmeans=True, meanprops={"marker": "D", "markersize": 4})
    ax.set_xlabel("human level (" + ", ".join(f"{i} {n}" for i, n in enumerate(names, start=1)) + ")",
                  fontsize=7)
    ax.set_ylabel("score")
    ax.set_title(title)
    return svg(fig)


def per_query_differences(diffs: dict[str, list[dict]], first: str) -> str:
    """Each system's per-query nDCG@10 minus the first's, sorted: the area below zero is what it lost."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH * 1.3, 3.0))
    for n, (system, rows) in enumerate(diffs.items()):
        values = np.array([r["diff"] for r in rows])
        x = np.linspace(0, 1, len(values)) if len(values) > 1 else np.zeros(len(values))
        ax.step(x, values, where="mid", color=COLORS[(n + 1) % len(COLORS)], lw=1.2,
                label=f"{system} (lost {int((values < 0).sum())}, won {int((values > 0).sum())} of {len(values)})")
    ax.axhline(0, color="#333", lw=0.8)
    ax.set_xlabel("queries, sorted by difference (share of queries)")
    ax.set_ylabel(f"nDCG@10 - {first}")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    return svg(fig)


def training(history: list[dict], title: str) -> str:
    """Dev metrics and dev loss over training steps."""
    plt = pyplot()
    steps = [h["step"] for h in history]
    keys = [k for k in ("qwk", "accuracy", "ndcg@10", "auroc@2") if any(isinstance(h.get(k), (int, float))
                                                                      for h in history)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(WIDTH * 1.3, 2.6))
    for n, k in enumerate(keys):
        left.plot(steps, [h.get(k) for h in history], marker="o", ms=3, color=COLORS[n], label=k)
    left.set_xlabel("step")
    left.set_title("dev metrics")
    left.legend(fontsize=8, frameon=False)
    if any("dev_loss" in h for h in history):
        right.plot(steps, [h.get("dev_loss") for h in history], marker="o", ms=3, color=COLORS[1])
    right.set_xlabel("step")
    right.set_title("dev loss")
    fig.suptitle(title, fontsize=10)
    return svg(fig)


def scaling(rows: list[dict], title: str) -> str:
    """Test nDCG@10 and QWK by number of teacher-labeled pairs; the human-only student as a line."""
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(WIDTH * 1.3, 2.6))
    human = [r for r in rows if r["name"] == "human"]
    curve = sorted((r for r in rows if r["name"] != "human"), key=lambda r: r["teacher_pairs"])
    for ax, metric in zip(axes, ("ndcg@10", "qwk")):
        ax.plot([r["teacher_pairs"] for r in curve], [r["metrics"].get(metric) for r in curve], marker="o", ms=4,
                color=COLORS[0], label="teacher + human labels")
        for r in human:
            ax.axhline(r["metrics"].get(metric), color=COLORS[1], ls="--", lw=1, label="human labels only")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("teacher-labeled pairs")
        ax.set_title(f"{title}: test {metric}", fontsize=9)
    axes[0].legend(fontsize=8, frameon=False)
    return svg(fig)

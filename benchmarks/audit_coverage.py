"""How far to trust an audit: how often relkit's judge-only, people-only and prediction-powered
(PPI++) intervals hold people's true difference between two systems, over many simulated audits.

    python benchmarks/audit_coverage.py [--data ../shared/data/crowdflower/pairs.csv] [--workdir DIR] \
        [--audits 2000] [--people-share 0.15] [--interval t|normal] [--design simple|stratified|both] \
        [--json OUT] [--set KEY=VALUE ...]
    python benchmarks/audit_coverage.py --tiny          # 16 queries, 40 audits: the plumbing, in seconds

CrowdFlower is imported with relkit. Two systems rank each query's judged products: BM25 (relkit's,
statistics from the whole catalog) and the bi-encoder (all-MiniLM-L6-v2 cosine); each keeps its top
K (10). People's labels of every judged product are the truth: people's value of the difference
bi-encoder - BM25, over all the CrowdFlower queries, in nDCG@K (pooled ideal: the best K of both
top K, as `relkit audit --combine`; averaged over the queries whose pool holds a relevant product)
and in the share of results at level >= 3 of 4 (relkit's default threshold).

Each simulated audit draws its queries at random with replacement from those (as many as there are:
independent draws from the population, as the intervals assume; a sample without replacement of
most of 172 queries would need a finite-population correction), and a people slice: its queries
in a random order, taken one by one while their results (the pooled top K of both systems) add up
to at most --people-share of the audit's results (two queries at least: a spread to measure). Every
estimate is relkit's own (relkit.audit.ppi, as `relkit audit --combine` makes them): the judge alone
on every audited query, people alone on the slice, and PPI++ from both, each with its 95% interval,
Student t with the queries it rests on less one as degrees of freedom (--interval normal: the
normal interval, z).

--design stratified draws the slice as a stratified sample instead, on what the judge already
says about every audited query: per judge and measure, the audit's queries fall in three strata,
the thirds by the judge's own per-query difference between the systems (low, middle, high); each
stratum's queries in a random order, the slice grows one query at a time, allocated in proportion
to the strata's sizes (relkit.audit.sampling.allocate, two a stratum at least), while its results
add up to at most --people-share of the audit's. People-only and PPI++ are then relkit's stratified
estimates (each stratum weighted by its share of the audit's queries, Student t with the slice's
queries less three degrees of freedom). --design both (the default) runs the two on the same
audits and prints them side by side. Three imperfect judges, each judging every product:

- bi-encoder: its cosine mapped to a distribution over the levels by a logistic regression fitted
  on people's labels of the other half of the queries (the halves below): never on the queries it
  judges. It also ranks one of the two systems, so it favours that system's results.
- teacher: a cross-encoder fine-tuned with relkit's teacher training from the first
  --teacher-layers (2) of all-MiniLM-L6-v2's 6 layers (0.4 of an epoch at max length 32, otherwise
  `relkit teach` defaults, its bi-encoder prior included; --set overrides), cross-fit: trained on
  one half of the queries (15% of them its dev split), it judges the other half, and the reverse.
  Its distributions are cached in --workdir, so a second run does not train.
- lenient on BM25: people's own level, one level higher (at most the top) on the results BM25
  returned and the bi-encoder did not: a judge swayed by the words of the query, on one system only.

Printed per judge and measure: the judge-only estimate's bias against the truth; coverage of the
truth by each interval (with the Monte Carlo margin of 95% at this many audits) and their mean
widths; PPI++'s width over people-only's and its mean lambda, per design. --json OUT writes the
same figures: results[design][judge][measure][estimator] with coverage and width.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from relkit import LabelScale, Workspace, import_file, make_system  # noqa: E402
from relkit.audit.core import default_threshold  # noqa: E402
from relkit.audit.estimates import ideal_dcg, ndcg_by_query, share_by_query  # noqa: E402
from relkit.audit.ppi import INTERVALS, classical, ppi  # noqa: E402
from relkit.audit.sampling import allocate  # noqa: E402
from relkit.config import from_dict, parse_sets  # noqa: E402
from relkit.data.splits import pin_queries, split_queries  # noqa: E402
from relkit.errors import RelkitError  # noqa: E402
from relkit.labels import JudgedPairs, load_judged_pairs  # noqa: E402
from relkit.logs import progress  # noqa: E402
from relkit.metrics import quadratic_kappa  # noqa: E402
from relkit.teacher import TrainConfig, train_teacher  # noqa: E402
from relkit.teacher.system import TeacherSystem  # noqa: E402
from relkit.workspace import SPLITS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "crowdflower" / "pairs.csv"
LEVELS = 4
SYSTEMS = ("bm25", "bi-encoder")          # the difference is the second minus the first
JUDGES = ("bi-encoder", "teacher", "lenient on bm25")
MEASURES = ("ndcg", "share")
ESTIMATORS = ("judge", "people", "ppi")
DESIGNS = ("simple", "stratified")
STRATA = ("low", "middle", "high")       # thirds of the audit's queries by the judge's own difference
# short: a teacher per half of the queries in about five minutes on a busy 2-core CPU (all six layers at
# length 64 trained at about 0.4 s a pair there, nearly an hour for both halves; two layers at length 32,
# about 0.2 s)
TEACHER = {"epochs": 0.4, "max_length": 32}
TEACHER_LAYERS = 2
TINY = {"limit": 16, "audits": 40}

Pair = tuple[str, str]


def workspace(path: Path, data: Path, split: bool = False) -> Workspace:
    """A workspace of the CrowdFlower pairs (imported once, kept in the workdir); `split` gives every
    query a split (else only the queries pinned later have one)."""
    exists = (path / "relkit.duckdb").exists()
    ws = Workspace.open(path) if exists else Workspace.create(path, LabelScale.default(LEVELS))
    if ws.count("judgments") == 0:         # new, or a run stopped before the import (which is all or nothing)
        import_file(ws, "judgments", data, format="crowdflower")
    if split:
        split_queries(ws)                   # queries without a split get one; the others keep theirs
    return ws


def all_pairs(ws: Workspace) -> JudgedPairs:
    """Every judged pair of the workspace (all splits), query by query."""
    parts = []
    for split in SPLITS:
        try:
            parts.append(load_judged_pairs(ws, split))
        except RelkitError:         # a split with no judged pair
            continue
    return JudgedPairs("all", *([x for p in parts for x in getattr(p, f)] for f in ("query_ids", "queries", "items")),
                       np.concatenate([p.labels for p in parts]))


def subset(pairs: JudgedPairs, queries: set[str]) -> JudgedPairs:
    rows = [i for i, q in enumerate(pairs.query_ids) if q in queries]
    return JudgedPairs(pairs.split, [pairs.query_ids[i] for i in rows], [pairs.queries[i] for i in rows],
                       [pairs.items[i] for i in rows], pairs.labels[rows])


def cached(path: Path, pairs: JudgedPairs, columns: list[str], compute) -> np.ndarray:
    """Per-pair values (len(pairs), len(columns)) from the CSV at `path`, computed and written when
    it lacks a pair."""
    keys = list(zip(pairs.query_ids, pairs.item_ids))
    if path.exists():
        with open(path, newline="", encoding="utf-8") as f:
            rows = {(r["query_id"], r["item_id"]): [float(r[c]) for c in columns] for r in csv.DictReader(f)}
        if all(k in rows for k in keys):
            return np.array([rows[k] for k in keys], dtype=np.float64)
    values = np.asarray(compute(), dtype=np.float64).reshape(len(keys), len(columns))
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["query_id", "item_id", *columns])
        writer.writerows([*k, *map(repr, v)] for k, v in zip(keys, values.tolist()))
    tmp.replace(path)
    return values


def truncated_base(workdir: Path, layers: int) -> str:
    """all-MiniLM-L6-v2 with only its first `layers` transformer layers, saved once under `workdir`:
    a smaller teacher to train on a busy CPU."""
    path = workdir / f"minilm-{layers}-layers"
    if not (path / "config.json").exists():
        from transformers import AutoModel, AutoTokenizer

        from relkit.features.embeddings import bundled_model

        model = AutoModel.from_pretrained(bundled_model())
        model.encoder.layer = model.encoder.layer[:layers]
        model.config.num_hidden_layers = layers
        model.save_pretrained(path)
        AutoTokenizer.from_pretrained(bundled_model()).save_pretrained(path)
    return str(path)


def fold_workspace(ws: Workspace, path: Path) -> Workspace:
    """A copy of the workspace `ws` (its judgments, and the bi-encoder's vectors of every item that
    the teacher's prior reads, encoded once) for one fold's teacher."""
    if not (path / "relkit.duckdb").exists():
        ws.release()        # written through to the file, which is copied whole
        path.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ws.path / "relkit.duckdb", path / "relkit.duckdb.tmp")
        (path / "relkit.duckdb.tmp").replace(path / "relkit.duckdb")
    return Workspace.open(path)


def teacher_proba(workdir: Path, data: Path, ws: Workspace, pairs: JudgedPairs, halves: list[list[str]],
                  config: dict, seed: int, console: Console) -> tuple[np.ndarray, str]:
    """The cross-fit teacher's distribution of every pair: trained on one half's queries (15% of
    them for dev), judging the other half's, both ways. Cached under `workdir`, keyed by the
    config and the halves."""
    key = hashlib.sha256(json.dumps([config, halves, str(data.resolve())], sort_keys=True).encode()).hexdigest()[:10]
    path = workdir / f"teacher-scores-{key}.csv"

    def compute():
        proba = np.zeros((len(pairs), LEVELS))
        for fold, (train, judged) in enumerate([(halves[0], halves[1]), (halves[1], halves[0])]):
            with fold_workspace(ws, workdir / f"teacher-{key}-fold{fold}") as fws:
                order = np.random.default_rng([seed, 2, fold]).permutation(train).tolist()
                n_dev = max(1, round(0.15 * len(order)))
                with fws.transaction():
                    fws.run("DELETE FROM splits")          # the fold's queries only, as pinned here
                    pin_queries(fws, order[n_dev:], "train")
                    pin_queries(fws, order[:n_dev], "dev")
                    pin_queries(fws, judged, "test")
                name = f"fold{fold}"
                if not (fws.path / "artifacts" / f"teacher-{name}" / "relkit.json").exists():
                    started = time.perf_counter()
                    result = train_teacher(fws, from_dict(TrainConfig, {**config, "name": name, "seed": seed},
                                                          "training option"))
                    console.print(f"teacher {name}: trained on {len(order) - n_dev} queries (dev {n_dev}), "
                                  f"{result.steps} steps in {time.perf_counter() - started:.0f} s", highlight=False)
                rows = [i for i, q in enumerate(pairs.query_ids) if q in set(judged)]
                system = TeacherSystem(fws.path / "artifacts" / f"teacher-{name}", name, ws=ws)
                proba[rows] = system.predict(subset(pairs, set(judged))).proba
        return proba

    return cached(path, pairs, [f"p{j}" for j in range(1, LEVELS + 1)], compute), str(path)


def bi_encoder_proba(cosine: np.ndarray, labels: np.ndarray, query_ids: list[str], halves: list[list[str]]
                     ) -> np.ndarray:
    """The cosine mapped to a distribution over the levels, by a logistic regression fitted on
    people's labels of the other half's queries."""
    from sklearn.linear_model import LogisticRegression

    half = np.array([0 if q in set(halves[0]) else 1 for q in query_ids])
    proba = np.zeros((len(labels), LEVELS))
    for h in (0, 1):
        fit, judged = half != h, half == h
        model = LogisticRegression(C=1.0, max_iter=1000).fit(cosine[fit, None], labels[fit])
        proba[np.ix_(judged, model.classes_ - 1)] = model.predict_proba(cosine[judged, None])
    return proba


def tops(query_ids: list[str], item_ids: list[str], scores: np.ndarray, k: int) -> dict[str, list[str]]:
    """Each query's top k items by score (ties by item id)."""
    rows: dict[str, list[int]] = {}
    for i, q in enumerate(query_ids):
        rows.setdefault(q, []).append(i)
    return {q: [item_ids[i] for i in sorted(r, key=lambda i: (-scores[i], item_ids[i]))[:k]] for q, r in rows.items()}


def per_query(queries: list[str], top: dict[str, dict[str, list[str]]], proba: dict[Pair, np.ndarray],
              scale: LabelScale, k: int, threshold: int) -> dict[str, np.ndarray]:
    """A labeller's per-query difference (second system minus first) in nDCG@K (NaN: no relevant
    result in the pool) and in the share at level >= threshold, from its distribution of each pair:
    expected gains, as a relkit audit scores a judge (one-hot for people)."""
    gains = np.asarray(scale.gains, dtype=np.float64)
    gain = {p: float(v @ gains) for p, v in proba.items()}
    at_least = {p: float(v[threshold - 1:].sum()) for p, v in proba.items()}
    ideal = ideal_dcg(queries, top, gain, k)
    ndcg = {s: ndcg_by_query(top[s], gain, ideal) for s in SYSTEMS}
    share = {s: share_by_query(top[s], at_least) for s in SYSTEMS}
    a, b = SYSTEMS[1], SYSTEMS[0]
    return {"ndcg": np.array([ndcg[a][q] - ndcg[b][q] if q in ndcg[a] else np.nan for q in queries]),
            "share": np.array([share[a][q] - share[b][q] for q in queries])}


def spread_shape(values: np.ndarray) -> tuple[float, float, float]:
    """Skew, excess kurtosis and share of zeros of the defined values: how far from normal the mean
    of a small sample of them is."""
    from scipy.stats import kurtosis, skew

    v = values[np.isfinite(values)]
    return float(skew(v)), float(kurtosis(v)), float(np.mean(v == 0))


def slice_of(pool: np.ndarray, people_share: float, rng: np.random.Generator) -> np.ndarray:
    """Whether each of the audit's queries (their pooled results `pool`) is in people's slice: the
    queries in a random order, taken while their results add up to at most `people_share` of all
    (at least two). A random order's first n queries are a simple random sample of n.

    >>> slice_of(np.array([10, 20, 10, 20, 40]), 0.3, np.random.default_rng(0)).sum()
    np.int64(2)
    """
    order = rng.permutation(len(pool))
    n = max(2, int(np.sum(np.cumsum(pool[order]) <= people_share * pool.sum())))
    on = np.zeros(len(pool), dtype=bool)
    on[order[:n]] = True
    return on


def judge_strata(difference: np.ndarray) -> np.ndarray:
    """Each of an audit's queries' stratum (0 low, 1 middle, 2 high): the thirds of the queries by
    the judge's own per-query difference between the systems, known for every audited query before
    people judge any (ties in the order the queries come; a difference the judge leaves undefined
    counts as the lowest).

    >>> judge_strata(np.array([0.3, -0.1, 0.0, 0.0, 0.2, np.nan])).tolist()
    [2, 0, 1, 1, 2, 0]
    """
    order = np.argsort(np.nan_to_num(difference, nan=-np.inf), kind="stable")
    stratum = np.empty(len(difference), dtype=np.int64)
    stratum[order] = np.arange(len(difference)) * len(STRATA) // len(difference)
    return stratum


def stratified_slice_of(pool: np.ndarray, stratum: np.ndarray, people_share: float,
                        rng: np.random.Generator) -> np.ndarray:
    """Whether each of the audit's queries is in people's slice, drawn stratified: each stratum's
    queries in a random order, the slice of n queries allocated to the strata in proportion to their
    size (relkit's `allocate`, two a stratum at least), n grown one query at a time while the slice's
    results add up to at most `people_share` of all (two a stratum at least, whatever they add up to).
    A random order's first n_h queries of a stratum are a simple random sample of n_h of it."""
    members = {h: np.flatnonzero(stratum == h) for h in range(len(STRATA))}
    members = {h: m[rng.permutation(len(m))] for h, m in members.items() if len(m)}
    population = {h: len(m) for h, m in members.items()}
    cap = people_share * pool.sum()
    taken = None
    for n in range(2 * len(members), len(pool) + 1):
        alloc = allocate(population, n)
        chosen = np.concatenate([members[h][:alloc[h]] for h in members])
        if taken is not None and pool[chosen].sum() > cap:
            break
        taken = chosen
    on = np.zeros(len(pool), dtype=bool)
    on[taken] = True
    return on


def simulate(values: dict[str, dict[str, np.ndarray]], truth: dict[str, float], pool: np.ndarray, audits: int,
             people_share: float, k: int, seed: int, interval: str = "robust", design: str = "simple"
             ) -> tuple[dict, dict]:
    """`audits` audits: queries drawn with replacement, a slice of them for people; each judge's
    three estimates per measure, whether their intervals hold the truth, and their widths. `design`
    "simple": one simple random slice per audit, estimated as one stratum. "stratified": per judge
    and measure, a slice stratified by the thirds of the judge's own difference (proportional
    allocation, the same cap), people-only and PPI++ estimated with relkit's stratified estimator
    (each stratum weighted by its share of the audit's queries; t with the slice's queries less
    three degrees of freedom)."""
    n_queries = len(pool)
    tally = {j: {m: {e: {"covered": 0, "width": [], "estimate": []} for e in ESTIMATORS} for m in MEASURES}
             for j in JUDGES}
    lam = {j: {m: [] for m in MEASURES} for j in JUDGES}
    slices, shares, failed = [], [], 0
    for a in progress(range(audits), desc="audits", unit="audit"):
        rng = np.random.default_rng([seed, 3, a])
        audit = rng.integers(0, n_queries, size=n_queries)
        simple = slice_of(pool[audit], people_share, rng)      # the same audits whatever the design
        try:
            found = {}
            for j in JUDGES:
                for m in MEASURES:
                    y, f = values["people"][m], values[j][m]
                    if design == "simple":
                        on, strata, weights = simple, None, None
                    else:
                        stratum = judge_strata(f[audit])
                        on = stratified_slice_of(pool[audit], stratum, people_share,
                                                 np.random.default_rng([seed, 5, a, JUDGES.index(j),
                                                                        MEASURES.index(m)]))
                        strata = np.array(STRATA, dtype=object)[stratum]
                        weights = {h: float(np.mean(strata == h)) for h in STRATA if np.any(strata == h)}
                    slice_, rest = audit[on], audit[~on]
                    if design == "stratified" or (j, m) == (JUDGES[0], MEASURES[0]):
                        slices.append(int(on.sum()))
                        shares.append(pool[slice_].sum() / pool[audit].sum())
                    sl, su = (None, None) if strata is None else (strata[on], strata[~on])
                    found[j, m] = {"judge": classical(f[audit], by="judge", interval=interval),
                                   "people": classical(y[slice_], strata=sl, weights=weights, interval=interval),
                                   "ppi": ppi(y[slice_], f[slice_], f[rest], strata_labeled=sl,
                                              strata_unlabeled=su, weights=weights, interval=interval)}
        except RelkitError:
            failed += 1
            continue
        for (j, m), by in found.items():
            for e, est in by.items():
                t = tally[j][m][e]
                t["covered"] += est.interval.holds(truth[m])
                t["width"].append(est.width)
                t["estimate"].append(est.estimate)
            lam[j][m].append(by["ppi"].lam)
    done = audits - failed
    out = {}
    for j in JUDGES:
        out[j] = {}
        for m in MEASURES:
            out[j][m] = {e: {"coverage": t["covered"] / done, "covered": t["covered"], "audits": done,
                             "width": float(np.mean(t["width"])), "bias": float(np.mean(t["estimate"]) - truth[m])}
                         for e, t in tally[j][m].items()}
            out[j][m]["ppi"]["lambda"] = float(np.mean(lam[j][m]))
            out[j][m]["ppi_width_over_people"] = out[j][m]["ppi"]["width"] / out[j][m]["people"]["width"]
    setup = {"audits": audits, "completed": done, "failed": failed, "slice_queries_mean": float(np.mean(slices)),
             "slice_queries_min": int(np.min(slices)), "slice_results_share_mean": float(np.mean(shares)),
             "slice_results_share_max": float(np.max(shares))}
    return out, setup


def targets(figures: dict) -> dict[str, bool]:
    ppi_ok = all(figures[j][m]["ppi"]["coverage"] >= 0.93 for j in JUDGES for m in MEASURES)
    judge_short = any(figures[j][m]["judge"]["coverage"] < 0.93 for j in JUDGES for m in MEASURES)
    teacher = all(figures["teacher"][m]["ppi_width_over_people"] < 1 for m in MEASURES)
    bi = all(figures["bi-encoder"][m]["ppi_width_over_people"] <= 1.05 for m in MEASURES)
    return {"ppi coverage >= 93% for every judge and measure": ppi_ok,
            "judge-only coverage < 93% for at least one judge": judge_short,
            "PPI++ narrower than people-only for the teacher": teacher,
            "PPI++ at most 5% wider than people-only for the bi-encoder": bi}


def main() -> None:
    try:
        run()
    except RelkitError as e:
        raise SystemExit(f"error: {e}") from None


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="CrowdFlower's pairs.csv")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "relkit-audit-coverage",
                        help="workspaces and cached scores (kept: a second run does not train)")
    parser.add_argument("--audits", type=int, default=2000, help="simulated audits")
    parser.add_argument("--people-share", type=float, default=0.15,
                        help="the largest share of an audit's results people judge")
    parser.add_argument("--interval", choices=INTERVALS, default="robust",
                        help="the intervals: relkit's default (robust: PPI++'s standard error by the jackknife, t's "
                             "degrees of freedom lowered for the kurtosis), Student t around the plug-in standard "
                             "error (t), or normal (z) around it")
    parser.add_argument("--design", choices=(*DESIGNS, "both"), default="both",
                        help="people's slice: a simple random sample, stratified by the judge's own per-query "
                             "difference, or both side by side")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=0, help="only this many queries (a seeded random subset; 0: all)")
    parser.add_argument("--tiny", action="store_true", help=f"a quick run: --limit {TINY['limit']} --audits "
                                                            f"{TINY['audits']}")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="a teacher training option KEY=VALUE (default: epochs=1, max_length=64)")
    parser.add_argument("--teacher-layers", type=int, default=TEACHER_LAYERS,
                        help="train the teacher from this many of all-MiniLM-L6-v2's 6 layers (6: all; "
                             "ignored when --set model=... names another base)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    if args.tiny:
        args.limit, args.audits = args.limit or TINY["limit"], min(args.audits, TINY["audits"])
    if not args.data.is_file():
        raise SystemExit(f"error: no CrowdFlower pairs file at {args.data} (pass --data PATH/TO/pairs.csv, "
                         f"Kaggle's 'Crowdflower Search Results Relevance' train file)")
    if not 0 < args.people_share < 1 or args.audits < 1:
        raise SystemExit("error: --people-share is in (0, 1) and --audits at least 1")
    console = Console(width=160)
    logging.basicConfig(format="%(message)s")   # the teacher's training lines and the progress lines
    logging.getLogger("relkit").setLevel(logging.INFO)
    console.print("# python benchmarks/audit_coverage.py " + " ".join(sys.argv[1:]), highlight=False)
    args.workdir.mkdir(parents=True, exist_ok=True)
    config = {**TEACHER, **parse_sets(args.sets, TrainConfig)}
    truncated = "model" not in config and args.teacher_layers < 6
    if truncated:
        config["model"] = truncated_base(args.workdir, args.teacher_layers)
    base = (f"the first {args.teacher_layers} of all-MiniLM-L6-v2's 6 layers" if truncated
            else "all-MiniLM-L6-v2" if config.get("model", "default") == "default" else config["model"])
    teacher_name = f"cross-encoder from {base}, " + ", ".join(f"{k}={v}" for k, v in config.items() if k != "model")
    started = time.perf_counter()

    with workspace(args.workdir / "crowdflower", args.data, split=True) as ws:
        scale = ws.scale
        threshold = default_threshold(scale.k)
        pairs = all_pairs(ws)
        queries = sorted(set(pairs.query_ids))
        if args.limit:
            queries = sorted(np.random.default_rng([args.seed, 0]).permutation(queries)[:args.limit].tolist())
            pairs = subset(pairs, set(queries))
        shuffled = np.random.default_rng([args.seed, 1]).permutation(queries).tolist()
        halves = [sorted(shuffled[:len(queries) // 2]), sorted(shuffled[len(queries) // 2:])]
        scores = cached(args.workdir / f"system-scores-{len(queries)}-{args.seed}.csv", pairs, list(SYSTEMS),
                        lambda: np.column_stack([make_system(s, ws).predict(pairs).scores
                                                 for s in ("bm25", "embedding")]))
        teacher, teacher_file = teacher_proba(args.workdir, args.data, ws, pairs, halves, config, args.seed, console)

    keys = list(zip(pairs.query_ids, pairs.item_ids))
    labels = pairs.labels
    top = {s: tops(pairs.query_ids, pairs.item_ids, scores[:, i], args.k) for i, s in enumerate(SYSTEMS)}
    eye = np.eye(scale.k)
    people = eye[labels - 1]
    only_bm25 = np.array([i in set(top["bm25"][q]) - set(top["bi-encoder"][q]) for q, i in keys])
    lenient = eye[np.where(only_bm25, np.minimum(labels + 1, scale.k), labels) - 1]
    judges = {"people": people, "bi-encoder": bi_encoder_proba(scores[:, 1], labels, pairs.query_ids, halves),
              "teacher": teacher, "lenient on bm25": lenient}
    values = {j: per_query(queries, top, dict(zip(keys, p)), scale, args.k, threshold) for j, p in judges.items()}
    truth = {m: float(np.nanmean(values["people"][m])) for m in MEASURES}
    pool = np.array([len(set(top["bm25"][q]) | set(top["bi-encoder"][q])) for q in queries])
    qwk = {j: quadratic_kappa(labels, judges[j].argmax(axis=1) + 1, list(range(1, scale.k + 1))) for j in JUDGES}

    console.print(f"CrowdFlower ({args.data}): {len(queries)} queries, {len(pairs):,} judged products; systems "
                  f"{SYSTEMS[0]} and {SYSTEMS[1]} rank each query's judged products, top {args.k} each, "
                  f"{pool.mean():.1f} results a query pooled", highlight=False)
    console.print(f"truth, people over all {len(queries)} queries: {SYSTEMS[1]} - {SYSTEMS[0]} nDCG@{args.k} "
                  f"{truth['ndcg']:+.4f} (pooled ideal; {int(np.isfinite(values['people']['ndcg']).sum())} queries "
                  f"with a relevant result), share at level >= {threshold} {truth['share']:+.4f}", highlight=False)
    console.print(f"judges (QWK of their most probable level against people, all pairs): bi-encoder "
                  f"{qwk['bi-encoder']:.3f} "
                  f"(cosine to levels by a logistic fit on the other half's queries); teacher {qwk['teacher']:.3f} "
                  f"({teacher_name}, "
                  f"cross-fit on two halves of {len(halves[0])} and {len(halves[1])} queries; cached in "
                  f"{teacher_file}); lenient on bm25 {qwk['lenient on bm25']:.3f} (people's level + 1 on "
                  f"{int(only_bm25.sum()):,} results only bm25 returned)", highlight=False)
    shape = {m: spread_shape(values["people"][m]) for m in MEASURES}
    console.print("people's per-query difference over the queries (what a slice samples): " + "; ".join(
        f"{m} skew {s:.2f}, excess kurtosis {k:.2f}, {z:.0%} zeros" for m, (s, k, z) in shape.items()), highlight=False)
    designs = DESIGNS if args.design == "both" else (args.design,)
    figures, setups, met = {}, {}, {}
    for design in designs:
        sim_started = time.perf_counter()
        figures[design], setup = simulate(values, truth, pool, args.audits, args.people_share, args.k, args.seed,
                                          args.interval, design)
        setups[design] = {**setup, "seconds": time.perf_counter() - sim_started}
        how = ("a simple random sample" if design == "simple" else
               "per judge and measure, a sample stratified by the thirds of the judge's own difference "
               "(proportional allocation)")
        console.print(f"{design}: {setup['completed']:,} audits of {len(queries)} queries drawn with replacement "
                      f"(seed {args.seed}); people judge {how} of {setup['slice_queries_mean']:.1f} of them on "
                      f"average (at least {setup['slice_queries_min']}), {setup['slice_results_share_mean']:.1%} of "
                      f"the results (at most {setup['slice_results_share_max']:.1%}); {setup['failed']} audits "
                      f"failed to estimate; {setups[design]['seconds']:.0f} s", highlight=False)
    done = min(s["completed"] for s in setups.values())
    margin = 1.96 * np.sqrt(0.95 * 0.05 / max(done, 1))

    quantile = {"robust": "Student t (df lowered for kurtosis; PPI++'s standard error by the jackknife)",
                "t": "Student t"}.get(args.interval, "normal")
    table = Table(title=f"coverage of people's true difference ({SYSTEMS[1]} - {SYSTEMS[0]}) by 95% {quantile} "
                        f"intervals, "
                        f"and their mean widths, per slice design",
                  caption=f"coverage: share of the {done:,} audits whose interval holds the truth (95% +- "
                          f"{margin:.1%} by chance alone); bias: the judge-only estimate's mean minus the truth; "
                          f"PPI/people: PPI++'s mean width over people-only's, at the same slice; slice: "
                          f"simple random, or stratified by the judge's own difference")
    for col in ("judge", "measure", "slice", "judge-only bias", "cover judge", "cover people", "cover PPI++",
                "width judge", "width people", "width PPI++", "PPI/people", "lambda"):
        table.add_column(col, justify="left" if col in ("judge", "measure", "slice") else "right")
    for j in JUDGES:
        for m in MEASURES:
            for design in designs:
                f = figures[design][j][m]
                table.add_row(j, f"ndcg@{args.k}" if m == "ndcg" else f"share >= {threshold}", design,
                              f"{f['judge']['bias']:+.4f}", *(f"{f[e]['coverage']:.1%}" for e in ESTIMATORS),
                              *(f"{f[e]['width']:.4f}" for e in ESTIMATORS),
                              f"{f['ppi_width_over_people']:.3f}", f"{f['ppi']['lambda']:.2f}")
    console.print(table)
    for design in designs:
        met[design] = targets(figures[design])
        for name, ok in met[design].items():
            console.print(f"{design}: {'met' if ok else 'MISSED'}: {name}", highlight=False)
    console.print(f"total {time.perf_counter() - started:.0f} s", highlight=False)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "data": str(args.data), "queries": len(queries), "pairs": len(pairs), "k": args.k, "threshold": threshold,
            "difference": f"{SYSTEMS[1]} - {SYSTEMS[0]}", "truth": truth, "seed": args.seed,
            "people_share": args.people_share, "interval": args.interval, "audits": args.audits,
            "designs": list(designs), "slices": setups,
            "teacher": {"config": config, "halves": [len(h) for h in halves]},
            "qwk": qwk, "people_difference_shape": {m: dict(zip(("skew", "excess_kurtosis", "zeros"), v))
                                                   for m, v in shape.items()},
            "results": figures, "targets": met}, indent=1))


if __name__ == "__main__":
    main()

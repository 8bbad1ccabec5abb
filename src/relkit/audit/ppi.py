"""Prediction-powered estimates (PPI++: Angelopoulos, Duchi and Zrnic, "PPI++: Efficient
Prediction-Powered Inference", 2024): a mean over queries from a judge's per-query values on every
audited query and people's values on a random slice of them. The estimate is unbiased whatever the
judge's errors and its interval is valid; the power-tuning parameter lambda weighs the judge by how
well it predicts people on the slice (0: people's slice alone, 1: plain PPI).

Pure functions over numpy arrays, cheap enough to call in a simulation loop. A per-query value is
NaN where the query has none (the nDCG@K of a query whose pooled results hold nothing relevant is
0/0): the estimand is then the mean over the queries that have a value, the ratio of two means
E[v 1{v defined}] / E[1{v defined}], estimated as the ratio of their prediction-powered means with a
delta-method interval. With no NaN it is the plain mean, and `ppi(..., ddof=0)` is
`ppi_py.ppi_mean_ci` exactly. Strata (the audit's) are estimated apart and weighted by their share of
the population, with one lambda for all that minimises the variance of the weighted estimate.

Intervals are Student t by default, with the slice's degrees of freedom: its queries less its
strata (n - 1 with one stratum; n - H, as a stratified sample's variance estimate has). A slice is
often a few dozen queries whose per-query values are skewed, and the normal (z) quantile then makes
an interval too narrow to hold the truth 95% of the time; the t quantile widens it by the
uncertainty of the variance estimated from those n queries, and tends to z as n grows. By default
(`interval="robust"`) two more corrections follow what CrowdFlower's audits showed
(benchmarks/audit_coverage.py): PPI++'s standard error is the jackknife's (each slice query left out
in turn, lambda tuned again without it), as the plug-in variance treats the tuned lambda as known,
and at a slice of 25 queries lambda fits the slice's own noise (intervals held the truth up to 1.6
points less often than people's alone); and t's degrees of freedom are lowered for the values'
excess kurtosis, as the variance of a sample variance grows with it (a per-query difference that
is 0 for half the queries has a kurtosis of 3 to 7, and t with n - 1 df then fell 1-2 points short
of 95%, people's alone too). `interval="t"` gives the plug-in standard error with n - H df,
`interval="normal"` the normal interval around it (as `ppi_py.ppi_mean_ci`).

    ppi(people_on_slice, judge_on_slice, judge_on_the_rest).interval
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from relkit.audit.estimates import MDE_FACTOR
from relkit.errors import RelkitError
from relkit.intervals import LEVEL, Interval, normal

# robust: Student t around the jackknife's standard error (lambda tuned again for each query left
# out) with the slice's degrees of freedom lowered for the values' kurtosis; t: Student t around the
# plug-in standard error with the slice's degrees of freedom; normal: z around the plug-in one
INTERVALS = ("robust", "t", "normal")
# past this many people-judged queries the jackknife (n re-estimates, each over every query) gives way
# to the plug-in standard error: the tuned lambda's own noise is then negligible
JACKKNIFE_MAX = 2000


@dataclass(frozen=True)
class Moments:
    """What the variance of a prediction-powered mean depends on, per query (within strata, weighted
    by the strata's shares): the variance of people's values (on the slice), of the judge's (on every
    query), and their covariance (on the slice, at most the product of the two deviations). For a
    ratio, of the linearised values (v - estimate x defined) / share defined."""
    var_people: float
    var_judge: float
    covariance: float

    @property
    def correlation(self) -> float:
        denom = np.sqrt(self.var_people * self.var_judge)
        return float(self.covariance / denom) if denom > 0 else 0.0

    def variance(self, queries: int, people: int) -> float:
        """The variance of the PPI++ estimate from `queries` audited queries of which `people` are
        judged by people, lambda tuned: lambda = c (Q - n) / (var_f Q) in [0, 1], and then
        lambda^2 var_f / (Q - n) + (var_y - 2 lambda c + lambda^2 var_f) / n.

        >>> Moments(0.04, 0.04, 0.03).variance(100, 100), round(Moments(0.04, 0.04, 0.03).variance(100, 20), 6)
        (0.0004, 0.0011)
        """
        if not 0 < people <= queries:
            raise RelkitError(f"people judge between 1 and all of the {queries} queries, not {people}")
        if people == queries:
            return self.var_people / people
        rest = queries - people
        lam = 0.0
        if self.var_judge > 0:
            lam = float(np.clip(self.covariance * rest / (self.var_judge * queries), 0.0, 1.0))
        return (lam ** 2 * self.var_judge / rest
                + (self.var_people - 2 * lam * self.covariance + lam ** 2 * self.var_judge) / people)

    def mde(self, queries: int, people: int) -> float:
        return MDE_FACTOR * float(np.sqrt(self.variance(queries, people)))

    def people_needed(self, queries: int, target: float) -> int | None:
        """The fewest people-judged queries (at least 2) out of `queries` whose MDE is at most
        `target`; None when even people judging every query does not reach it."""
        n = np.arange(min(2, queries), queries + 1)
        rest = queries - n
        with np.errstate(divide="ignore", invalid="ignore"):
            lam = np.clip(self.covariance * rest / (self.var_judge * queries), 0.0, 1.0) if self.var_judge > 0 \
                else np.zeros(len(n))
            var = np.where(rest > 0, lam ** 2 * self.var_judge / np.maximum(rest, 1), 0.0) + (
                self.var_people - 2 * lam * self.covariance + lam ** 2 * self.var_judge) / n
        ok = np.flatnonzero(MDE_FACTOR * np.sqrt(np.maximum(var, 0.0)) <= target)
        return int(n[ok[0]]) if len(ok) else None

    def to_dict(self) -> dict:
        return {"var_people": self.var_people, "var_judge": self.var_judge, "covariance": self.covariance}


@dataclass(frozen=True)
class Estimate:
    """An estimate with its interval and standard error, from `people` queries people judged and
    `judge` queries only the judge judged; `lam` is PPI++'s power-tuning parameter (None: not
    prediction-powered)."""
    interval: Interval
    standard_error: float
    people: int
    judge: int
    lam: float | None = None
    moments: Moments | None = None

    @property
    def estimate(self) -> float:
        return self.interval.estimate

    @property
    def width(self) -> float:
        return self.interval.high - self.interval.low

    @property
    def mde(self) -> float:
        """The smallest difference a two-sided test at 5% detects with 80% power, at this sample."""
        return MDE_FACTOR * self.standard_error

    def to_dict(self) -> dict:
        return {**self.interval.to_dict(), "width": self.width, "standard_error": self.standard_error,
                "mde": self.mde, "lambda": self.lam, "people_queries": self.people, "judge_queries": self.judge,
                "method": self.interval.method}


@dataclass(frozen=True)
class _Stratum:
    weight: float
    y: np.ndarray          # people's values on the slice (NaN: none)
    fl: np.ndarray         # the judge's on the slice
    fu: np.ndarray         # the judge's on the other queries


def _parts(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A value and whether it is defined: the numerator's and the denominator's terms of the ratio."""
    defined = np.isfinite(v)
    return np.where(defined, v, 0.0), defined.astype(np.float64)


def _var(x: np.ndarray, ddof: int) -> float:
    return float(np.var(x, ddof=ddof)) if len(x) > ddof else 0.0


def _strata(y, fl, fu, strata_l, strata_u, weights) -> list[_Stratum]:
    y, fl, fu = (np.asarray(a, dtype=np.float64) for a in (y, fl, fu))
    if y.shape != fl.shape:
        raise RelkitError(f"people's and the judge's values on the slice differ in length ({len(y)}, {len(fl)})")
    if strata_l is None and strata_u is None:
        return [_Stratum(1.0, y, fl, fu)]
    sl, su = np.asarray(strata_l if strata_l is not None else [], dtype=object), \
        np.asarray(strata_u if strata_u is not None else [], dtype=object)
    if len(sl) != len(y) or len(su) != len(fu):
        raise RelkitError("give a stratum for every query, on the slice and off it")
    names = sorted(set(sl.tolist()) | set(su.tolist()))
    if weights is None:
        weights = {h: float((sl == h).sum() + (su == h).sum()) for h in names}
    missing = [h for h in names if h not in weights]
    if missing:
        raise RelkitError(f"no weight for the strata {', '.join(map(str, missing))}")
    total = sum(weights[h] for h in names)
    return [_Stratum(weights[h] / total, y[sl == h], fl[sl == h], fu[su == h]) for h in names]


def _check(strata: list[_Stratum], need: int) -> None:
    for s in strata:
        if len(s.y) < need:
            raise RelkitError(f"a stratum has {len(s.y)} people-judged queries; an interval needs at least {need} "
                              f"in every stratum")


def _solve(strata: list[_Stratum], lam: float) -> tuple[float, float]:
    """The estimate at `lam` and the denominator of its ratio (the share of queries with a value)."""
    num = den = 0.0
    for s in strata:
        lh = lam if len(s.fu) else 0.0           # a stratum judged by people throughout has nothing to impute
        (yn, yd), (fln, fld) = _parts(s.y), _parts(s.fl)
        fun, fud = _parts(s.fu) if len(s.fu) else (np.zeros(1), np.zeros(1))
        num += s.weight * (lh * fun.mean() + (yn - lh * fln).mean())
        den += s.weight * (lh * fud.mean() + (yd - lh * fld).mean())
    if den <= 0:
        raise RelkitError("no people-judged query has a value (for nDCG: a relevant result): nothing to estimate")
    return num / den, den


def _linear(s: _Stratum, theta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The estimating function v - theta x defined on people's and the judge's values."""
    def g(v):
        n, d = _parts(v)
        return n - theta * d
    return g(s.y), g(s.fl), g(s.fu)


def _tuned(strata: list[_Stratum], theta: float) -> float:
    """PPI++'s lambda minimising the variance of the weighted estimate, as ppi_py computes it for a
    single stratum: Cov(g, g_hat) / ((1 + n / N) Var(g_hat)), the covariance over the slice (1/n),
    the variance over every query."""
    top = bottom = 0.0
    for s in strata:
        if not len(s.fu):
            continue
        g, gl, gu = _linear(s, theta)
        n, m = len(g), len(gu)
        cov = float(np.mean((g - g.mean()) * (gl - gl.mean())))
        var = _var(np.concatenate([gl, gu]), 1)
        top += s.weight ** 2 * cov / n
        bottom += s.weight ** 2 * var * (1 / m + 1 / n)
    return float(np.clip(top / bottom, 0.0, 1.0)) if bottom > 0 else 0.0


def _checked(interval: str) -> None:
    if interval not in INTERVALS:
        raise RelkitError(f"interval must be one of {', '.join(map(repr, INTERVALS))}, not {interval!r}")


def _degrees(strata: list[_Stratum]) -> int:
    """The t interval's degrees of freedom: the slice's queries less its strata (n - 1 for one)."""
    return sum(len(s.y) for s in strata) - len(strata)


def _kurtosis_degrees(residuals: np.ndarray, df: int) -> tuple[float, float]:
    """`df` lowered for the excess kurtosis k of `residuals` (n values, each centred on its
    stratum's mean), and k: t's degrees of freedom are those of a chi-square whose variance is the
    sample variance's, Var(s^2) / sigma^4 = 2 / (n - 1) + k / n for values of any shape, so
    nu = 2 / (2 / df + k / n) (Satterthwaite's matching of moments); nu = df for normal values (k <= 0).

    >>> x = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])   # one query of eight holds the difference
    >>> [round(v, 2) for v in _kurtosis_degrees(x - x.mean(), 7)]
    [2.95, 3.14]
    """
    m2 = float(np.mean(residuals ** 2))
    if m2 <= 0:
        return float(df), 0.0
    kurtosis = max(0.0, float(np.mean(residuals ** 4)) / m2 ** 2 - 3)
    return min(float(df), 2 / (2 / df + kurtosis / len(residuals))), kurtosis


def _residuals(strata: list[_Stratum], lam: float, theta: float) -> np.ndarray:
    """The slice's values of y - lambda f (linearised for a ratio), each centred on its stratum's mean."""
    out = []
    for s in strata:
        g, gl, _ = _linear(s, theta)
        r = g - (lam if len(s.fu) else 0.0) * gl
        out.append(r - r.mean())
    return np.concatenate(out)


def _interval(estimate: float, se: float, n: int, level: float, method: str, df: float | None,
              kurtosis: tuple[int, float] | None = None) -> Interval:
    """The estimate plus or minus a quantile times its standard error: Student t's with `df` degrees
    of freedom, or the standard normal's (`df` None). `kurtosis`: the slice's degrees of freedom and
    the values' excess kurtosis that lowered them to `df`, for the method's description."""
    if df is None:
        return normal(estimate, se, n, level, f"{method}; normal interval")
    from scipy.stats import t

    half = float(t.ppf((1 + level) / 2, df)) * se
    said = f"{df:g} df"
    if kurtosis is not None and df < kurtosis[0]:
        said = f"{df:.1f} df ({kurtosis[0]} lowered for the values' excess kurtosis {kurtosis[1]:.2f})"
    return Interval(float(estimate), float(estimate - half), float(estimate + half), n, level,
                    f"{method}; Student t interval, {said}")


def _estimate(strata: list[_Stratum], lam: float, level: float, ddof: int, method: str, prediction: bool,
              interval: str = "t") -> Estimate:
    """The estimate at `lam` with its plug-in standard error; "robust" lowers t's degrees of freedom
    for the kurtosis (the jackknife's standard error, PPI++'s, is `ppi`'s to add)."""
    theta, den = _solve(strata, lam)
    var, mom = 0.0, np.zeros(3)
    for s in strata:
        lh = lam if len(s.fu) else 0.0
        g, gl, gu = _linear(s, theta)
        n, m = len(g), len(gu)
        # a stratum with one query off the slice: its spread is the stratum's
        spread_u = _var(gu, ddof) if m > 1 else _var(np.concatenate([gl, gu]), ddof)
        var += s.weight ** 2 * ((lh ** 2 * spread_u / m if m else 0.0) + _var(g - lh * gl, ddof) / n)
        var_y, var_f = _var(g, ddof), _var(np.concatenate([gl, gu]), ddof)
        cov = float(np.sum((g - g.mean()) * (gl - gl.mean())) / (n - ddof)) if n > ddof else 0.0
        # measured on the slice, against the judge's variance on every query: kept a covariance's size
        bound = np.sqrt(var_y * var_f)
        mom += s.weight * np.array([var_y, var_f, np.clip(cov, -bound, bound)]) / den ** 2
    se = float(np.sqrt(var)) / den
    people, judge = sum(len(s.y) for s in strata), sum(len(s.fu) for s in strata)
    ratio = any(not np.isfinite(a).all() for s in strata for a in (s.y, s.fl, s.fu))
    method += "; ratio of means, delta method" if ratio else ""
    method += f"; {len(strata)} strata weighted by their share" if len(strata) > 1 else ""
    df = kurtosis = None
    if interval in ("t", "robust"):
        df = _degrees(strata)
    if interval == "robust":
        nu, k = _kurtosis_degrees(_residuals(strata, lam, theta), df)
        df, kurtosis = nu, (df, k)
    return Estimate(_interval(theta, se, people + judge, level, method, df, kurtosis), se, people, judge,
                    lam if prediction else None, Moments(*map(float, mom)) if prediction else None)


def ppi(y, f_labeled, f_unlabeled, strata_labeled=None, strata_unlabeled=None, weights: dict | None = None,
        lam: float | None = None, level: float = LEVEL, ddof: int = 1, interval: str = "robust") -> Estimate:
    """The PPI++ mean of people's values: `y` on the slice (people judged these queries),
    `f_labeled` the judge's values on the same queries, `f_unlabeled` the judge's on the other
    audited queries. `lam` None tunes lambda (clipped to [0, 1]); `strata_*` give each query's
    stratum and `weights` each stratum's share of the population (default: its share of the
    queries). The interval is Student t with the slice's queries less its strata as degrees of
    freedom, lowered for the kurtosis of y - lambda f_labeled (`_kurtosis_degrees`), around the
    estimate with the jackknife's standard error (`interval` "robust": `_jackknife`); or Student t
    with the slice's degrees of freedom around the plug-in variance lambda^2 Var(f_unlabeled) / N +
    Var(y - lambda f_labeled) / n per stratum (`interval` "t"); or normal around that ("normal", as
    ppi_py; `ddof` 1, 0 as ppi_py).

    >>> round(ppi([1.0, 0.0, 1.0], [0.8, 0.2, 0.6], [0.9, 0.1, 0.7, 0.3], lam=1.0).estimate, 4)
    0.6333
    """
    _checked(interval)
    strata = _strata(y, f_labeled, f_unlabeled, strata_labeled, strata_unlabeled, weights)
    _check(strata, max(2, ddof + 1))
    tuned = lam is None
    if tuned:
        lam = _tuned(strata, _solve(strata, 1.0)[0])
    elif not 0 <= lam <= 1:
        raise RelkitError(f"lambda is in [0, 1], got {lam}")
    people, judge = sum(len(s.y) for s in strata), sum(len(s.fu) for s in strata)
    method = f"PPI++ (lambda {lam:.2f}): people on {people} queries, the judge on those and {judge} more"
    est = _estimate(strata, lam, level, ddof, method, True, "t" if interval == "robust" else interval)
    if interval != "robust":
        return est
    base = est.interval.method.rsplit("; Student t interval", 1)[0]     # with its ratio and strata notes
    se = _jackknife(strata, tuned, lam, ddof) if people <= JACKKNIFE_MAX else None
    if se is None:    # a large slice (lambda's own noise is negligible there), or a query nothing is estimable without
        se, base = est.standard_error, f"{base}; plug-in standard error"
    else:
        base += "; jackknife standard error"
    df = _degrees(strata)
    nu, k = _kurtosis_degrees(_residuals(strata, lam, _solve(strata, lam)[0]), df)
    return replace(est, interval=_interval(est.estimate, se, people + judge, level, base, nu, (df, k)),
                   standard_error=se)


def _jackknife(strata: list[_Stratum], tuned: bool, lam: float, ddof: int) -> float | None:
    """The standard error of the PPI++ estimate by the (stratified) jackknife over the slice's queries,
    lambda tuned again without each (`tuned`): the plug-in variance treats the tuned lambda as known,
    which at a slice of a few dozen queries makes intervals too narrow (lambda fits the slice's own
    noise), and the jackknife's also follows the skew of the values. The part of the judge-only
    queries' variance is the plug-in one (lambda^2 Var(f_unlabeled) / N per stratum). None when some
    slice query leaves nothing to estimate without it (a ratio whose other slice queries have no value)."""
    theta, den = _solve(strata, lam)
    var = 0.0
    for h, s in enumerate(strata):
        n = len(s.y)
        left = np.empty(n)
        for i in range(n):
            out = replace(s, y=np.delete(s.y, i), fl=np.delete(s.fl, i))
            others = strata[:h] + [out] + strata[h + 1:]
            try:
                li = _tuned(others, _solve(others, 1.0)[0]) if tuned else lam
                left[i] = _solve(others, li)[0]
            except RelkitError:
                return None
        var += (n - 1) / n * float(np.sum((left - left.mean()) ** 2))
        lh, m = (lam if len(s.fu) else 0.0), len(s.fu)
        if m:
            _, gl, gu = _linear(s, theta)
            spread_u = _var(gu, ddof) if m > 1 else _var(np.concatenate([gl, gu]), ddof)
            var += s.weight ** 2 * lh ** 2 * spread_u / m / den ** 2
    return float(np.sqrt(var))


def classical(values, strata=None, weights: dict | None = None, level: float = LEVEL, ddof: int = 1,
              by: str = "people", interval: str = "robust") -> Estimate:
    """The (stratified) mean of one labeller's values with its interval, Student t with n less the
    strata degrees of freedom, lowered for the values' kurtosis ("robust"; the jackknife's standard
    error of a mean is the plug-in one) or not ("t"), or normal ("normal"): people's on the slice alone
    (`by` "people"), or the judge's on every audited query (`by` "judge").

    >>> str(classical([0.2, 0.4, 0.6]).interval), str(classical([0.2, 0.4, 0.6], interval="normal").interval)
    ('0.4000 [-0.0968, 0.8968]', '0.4000 [0.1737, 0.6263]')
    """
    _checked(interval)
    if by not in ("people", "judge"):
        raise RelkitError(f"values are by people or the judge, not {by!r}")
    values = np.asarray(values, dtype=np.float64)
    groups = _strata(values, values, [], strata, None if strata is None else [], weights)
    _check(groups, max(2, ddof + 1))
    n = len(values)
    who = "people's" if by == "people" else "the judge's"
    # the jackknife's standard error of a mean is the plug-in one
    est = _estimate(groups, 0.0, level, ddof, f"{who} labels on {n} queries", False, interval)
    return replace(est, people=n if by == "people" else 0, judge=n if by == "judge" else 0)

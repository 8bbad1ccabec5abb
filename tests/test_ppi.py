"""Prediction-powered estimates against a hand computation and against ppi-python (the authors'
package), and the planning arithmetic against the formulas worked out here."""
import math

import numpy as np
import pytest
from ppi_py import ppi_mean_ci, ppi_mean_pointestimate
from scipy.stats import t as student_t

from conftest import kurtosis_df

from relkit import RelkitError
from relkit.audit.estimates import MDE_FACTOR
from relkit.audit.plan import floor, people_only, plan
from relkit.audit.ppi import Moments, classical, ppi

Z = 1.959963984540054          # the 97.5% quantile of the standard normal
T3 = 3.182446305284263         # the 97.5% quantile of Student's t with 3 degrees of freedom


def test_a_small_example_by_hand():
    y = [1.0, 0.0, 1.0, 1.0]                 # people, on the four queries of the slice
    fl = [0.6, 0.4, 0.9, 0.5]                # the judge, on the same queries
    fu = [0.6, 0.3, 0.9, 0.5, 0.8]           # the judge, on the five other queries
    # lambda: the covariance of people and judge on the slice (over n = 4) is
    # (0.25*0 - 0.75*-0.2 + 0.25*0.3 + 0.25*-0.1) / 4 = 0.2 / 4 = 0.05; the judge's variance over
    # all nine queries (mean 5.5/9) is (3.73 - 5.5^2/9) / 8 = 0.0461111; lambda = 0.05 / ((1 + 4/5) 0.0461111)
    lam = 0.05 / (1.8 * (3.73 - 5.5 ** 2 / 9) / 8)
    assert lam == pytest.approx(0.602410, abs=1e-6)
    est = ppi(y, fl, fu, interval="t")         # the plug-in standard error (the default is the jackknife's)
    assert est.lam == pytest.approx(lam, rel=1e-12)
    # the estimate: lambda x the judge's mean off the slice (3.1/5) + people's mean - lambda x the judge's on it (2.4/4)
    assert est.estimate == pytest.approx(lam * 0.62 + 0.75 - lam * 0.6, rel=1e-12)
    assert est.estimate == pytest.approx(0.762048, abs=1e-6)
    # its variance: lambda^2 Var(fu) / 5 + Var(y - lambda fl) / 4, sample variances (n - 1)
    var_fu = (0.02 ** 2 + 0.32 ** 2 + 0.28 ** 2 + 0.12 ** 2 + 0.18 ** 2) / 4                # = 0.057
    r = [1 - lam * 0.6, 0 - lam * 0.4, 1 - lam * 0.9, 1 - lam * 0.5]
    var_r = sum((x - sum(r) / 4) ** 2 for x in r) / 3
    se = math.sqrt(lam ** 2 * var_fu / 5 + var_r / 4)
    assert est.standard_error == pytest.approx(se, rel=1e-12)
    # Student t with the slice's 4 - 1 degrees of freedom; normal when asked
    assert (est.interval.low, est.interval.high) == pytest.approx((est.estimate - T3 * se, est.estimate + T3 * se),
                                                                  rel=1e-12)
    z = ppi(y, fl, fu, interval="normal")
    assert (z.estimate, z.standard_error) == (est.estimate, est.standard_error)
    assert (z.interval.low, z.interval.high) == pytest.approx((est.estimate - Z * se, est.estimate + Z * se),
                                                              rel=1e-12)
    assert est.interval.n == 9 and (est.people, est.judge) == (4, 5) and est.mde == pytest.approx(MDE_FACTOR * se)
    assert est.interval.method.startswith("PPI++ (lambda 0.60)")
    assert est.interval.method.endswith("Student t interval, 3 df") and z.interval.method.endswith("normal interval")

    # lambda 1 is plain PPI: 0.62 + (3 - 2.4) / 4 = 0.77, variance Var(fu)/5 + Var(y - fl)/4
    plain = ppi(y, fl, fu, lam=1.0)
    d = [0.4, -0.4, 0.1, 0.5]                 # y - fl, mean 0.15
    assert plain.estimate == pytest.approx(0.77, rel=1e-12)
    assert plain.standard_error == pytest.approx(math.sqrt(0.057 / 5 + sum((x - 0.15) ** 2 for x in d) / 3 / 4),
                                                 rel=1e-12)
    # lambda 0 is people's slice alone: the mean 0.75, standard deviation sqrt(0.75 / 3) = 0.5 over sqrt(4)
    alone = ppi(y, fl, fu, lam=0.0)
    assert alone.estimate == pytest.approx(0.75) and alone.standard_error == pytest.approx(0.25, rel=1e-12)
    people = classical(y)
    assert (people.estimate, people.interval.low, people.interval.high) == pytest.approx(
        (0.75, 0.75 - T3 * 0.25, 0.75 + T3 * 0.25), rel=1e-12)
    people = classical(y, interval="normal")
    assert (people.interval.low, people.interval.high) == pytest.approx((0.75 - Z * 0.25, 0.75 + Z * 0.25), rel=1e-12)
    assert (people.people, people.judge) == (4, 0) and classical(fu, by="judge").judge == 5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_same_as_ppi_python(seed):
    """ppi_py.ppi_mean_ci estimates variances over n (ddof 0): with ddof=0 relkit's is the same,
    tuned lambda and all; with a fixed lambda too."""
    rng = np.random.default_rng(seed)
    truth = rng.random(260)
    judge = np.clip(truth + 0.15 + rng.normal(0, 0.25, 260), 0, 1)      # lenient and noisy
    y, fl, fu = truth[:40], judge[:40], judge[40:]
    est = ppi(y, fl, fu, ddof=0, interval="normal")
    low, high = ppi_mean_ci(y, fl, fu, alpha=0.05)
    assert (est.interval.low, est.interval.high) == pytest.approx((low[0], high[0]), rel=1e-10)
    assert est.estimate == pytest.approx(ppi_mean_pointestimate(y, fl, fu)[0], rel=1e-10)
    for lam in (0.0, 0.35, 1.0):
        fixed = ppi(y, fl, fu, lam=lam, ddof=0, interval="normal")
        low, high = ppi_mean_ci(y, fl, fu, alpha=0.05, lam=lam)
        assert (fixed.interval.low, fixed.interval.high) == pytest.approx((low[0], high[0]), rel=1e-10)


def test_strata_weighted_by_their_share():
    """Two strata with a fixed lambda: the weighted sum of ppi-python's estimate in each, and the
    variance the weighted sum of theirs."""
    rng = np.random.default_rng(5)
    strata = {"head": (0.3, 12, 60), "tail": (0.7, 10, 90)}       # weight, slice queries, other queries
    y, fl, fu, sl, su = [], [], [], [], []
    expected, variance = 0.0, 0.0
    for h, (w, n, m) in strata.items():
        truth = rng.random(n + m) * (0.5 if h == "head" else 1.0)
        judge = truth * 0.8 + rng.normal(0, 0.1, n + m)
        low, high = ppi_mean_ci(truth[:n], judge[:n], judge[n:], alpha=0.05, lam=0.7)
        expected += w * (low[0] + high[0]) / 2
        variance += w ** 2 * ((high[0] - low[0]) / (2 * Z)) ** 2
        y += truth[:n].tolist()
        fl += judge[:n].tolist()
        fu += judge[n:].tolist()
        sl += [h] * n
        su += [h] * m
    est = ppi(y, fl, fu, sl, su, {"head": 0.3, "tail": 0.7}, lam=0.7, ddof=0, interval="t")
    assert est.estimate == pytest.approx(expected, rel=1e-10)
    assert est.standard_error == pytest.approx(math.sqrt(variance), rel=1e-10)
    assert "2 strata weighted by their share" in est.interval.method
    # its t interval: the slice's 22 queries less the 2 strata, 20 degrees of freedom
    q = student_t.ppf(0.975, 20)
    assert q == pytest.approx(2.085963447265837, rel=1e-12)
    assert (est.interval.low, est.interval.high) == pytest.approx(
        (expected - q * math.sqrt(variance), expected + q * math.sqrt(variance)), rel=1e-10)
    assert est.interval.method.endswith("Student t interval, 20 df")


def test_the_t_interval_against_scipy():
    """The default interval is the estimate plus or minus Student t's (1 + level) / 2 quantile with
    the slice's queries - 1 degrees of freedom times the standard error, at any level; for people's
    slice alone too, and it tends to the normal one as the slice grows."""
    rng = np.random.default_rng(7)
    truth = rng.random(300)
    judge = np.clip(truth + rng.normal(0, 0.2, 300), 0, 1)
    for n, level in ((12, 0.95), (30, 0.9), (250, 0.99)):
        y, fl, fu = truth[:n], judge[:n], judge[n:]
        est = ppi(y, fl, fu, level=level)
        q = student_t.ppf((1 + level) / 2, n - 1)
        assert (est.interval.low, est.interval.high) == pytest.approx(
            (est.estimate - q * est.standard_error, est.estimate + q * est.standard_error), rel=1e-12)
        assert est.interval.level == level and est.interval.method.endswith(f"Student t interval, {n - 1} df")
        alone = classical(y, level=level)
        se = np.std(y, ddof=1) / math.sqrt(n)
        assert (alone.interval.low, alone.interval.high) == pytest.approx((y.mean() - q * se, y.mean() + q * se),
                                                                          rel=1e-12)
    wide, narrow = classical(truth[:5]), classical(truth[:5], interval="normal")
    assert wide.width / narrow.width == pytest.approx(student_t.ppf(0.975, 4) / Z, rel=1e-12)   # 2.776 / 1.960
    big, big_z = classical(truth), classical(truth, interval="normal")
    assert big.width / big_z.width == pytest.approx(student_t.ppf(0.975, 299) / Z, rel=1e-12)
    assert student_t.ppf(0.975, 299) / Z < 1.005


def test_a_ratio_by_the_delta_method():
    """Queries with no value (NaN) leave the mean: the estimate is the PPI mean of the values (0 where
    none) over the PPI mean of 'has a value', and its variance, by the delta method from the two
    means' covariance matrix, (Var A - 2 t Cov(A, B) + t^2 Var B) / B^2."""
    y = np.array([0.8, np.nan, 0.4, 1.0, 0.6, np.nan])
    fl = np.array([0.7, 0.3, 0.5, 0.9, np.nan, 0.2])
    fu = np.array([0.6, np.nan, 0.9, 0.4, 0.5, 0.7, np.nan, 0.3])
    lam = 0.5
    ya, yb = np.nan_to_num(y), np.isfinite(y).astype(float)
    fla, flb = np.nan_to_num(fl), np.isfinite(fl).astype(float)
    fua, fub = np.nan_to_num(fu), np.isfinite(fu).astype(float)
    a = lam * fua.mean() + (ya - lam * fla).mean()
    b = lam * fub.mean() + (yb - lam * flb).mean()
    t = a / b
    n, m = len(y), len(fu)

    def cov(u, v):
        return np.cov(u, v, ddof=1)[0, 1]

    var_a = lam ** 2 * cov(fua, fua) / m + cov(ya - lam * fla, ya - lam * fla) / n
    var_b = lam ** 2 * cov(fub, fub) / m + cov(yb - lam * flb, yb - lam * flb) / n
    cov_ab = lam ** 2 * cov(fua, fub) / m + cov(ya - lam * fla, yb - lam * flb) / n
    se = math.sqrt(var_a - 2 * t * cov_ab + t ** 2 * var_b) / b
    est = ppi(y, fl, fu, lam=lam, interval="t")
    assert est.estimate == pytest.approx(t, rel=1e-12) and est.standard_error == pytest.approx(se, rel=1e-12)
    assert "ratio of means, delta method" in est.interval.method
    # people's alone: the mean of the four values, its variance by the same delta method
    alone = classical(y)
    assert alone.estimate == pytest.approx(0.7)
    g = ya - 0.7 * yb
    assert alone.standard_error == pytest.approx(math.sqrt(g.var(ddof=1) / n) / yb.mean(), rel=1e-12)


def test_the_robust_interval_jackknife_and_kurtosis():
    """The default interval ("robust"): the estimate is PPI++'s, its standard error the stratified
    jackknife's over the slice's queries, lambda tuned again without each, plus the plug-in variance
    of the judge-only queries' part; Student t with the slice's queries less its strata, lowered for
    the kurtosis of y - lambda f on the slice."""
    rng = np.random.default_rng(3)
    y = rng.choice([0.0, 0.0, 0.0, 0.0, 0.1, 0.3, 1.0], size=12)
    fl = 0.6 * y + rng.normal(0, 0.1, 12)
    fu = rng.normal(0.2, 0.2, 40)
    plain, est = ppi(y, fl, fu, interval="t"), ppi(y, fl, fu)
    assert est.estimate == plain.estimate and est.lam == plain.lam
    left = np.array([ppi(np.delete(y, i), np.delete(fl, i), fu).estimate for i in range(12)])
    var = 11 / 12 * np.sum((left - left.mean()) ** 2) + est.lam ** 2 * fu.var(ddof=1) / 40
    assert est.standard_error == pytest.approx(math.sqrt(var), rel=1e-12)
    r = y - est.lam * fl
    df = kurtosis_df(r - r.mean(), 11)
    assert df < 11                                # one query holds most of the values: heavy-tailed
    q = student_t.ppf(0.975, df)
    assert (est.interval.low, est.interval.high) == pytest.approx((est.estimate - q * est.standard_error,
                                                                   est.estimate + q * est.standard_error), rel=1e-12)
    assert "jackknife standard error" in est.interval.method and f"{df:.1f} df (11 lowered" in est.interval.method
    # the plug-in interval: t with 11 df around the plug-in error
    assert plain.interval.high == pytest.approx(plain.estimate + student_t.ppf(0.975, 11) * plain.standard_error)
    assert est.standard_error > plain.standard_error      # here the tuned lambda's own noise widens it
    # with lambda given, leaving a query out moves the mean of y - lambda f alone: the plug-in error
    fixed = ppi(y, fl, fu, lam=0.7)
    assert fixed.standard_error == pytest.approx(ppi(y, fl, fu, lam=0.7, interval="t").standard_error, rel=1e-12)
    # strata: each left out within its own, (n_h - 1) / n_h of its spread; n - 2 df, lowered for
    # the kurtosis of the residuals centred on their stratum's mean
    sl, su = np.array(["a"] * 6 + ["b"] * 6), np.array(["a"] * 20 + ["b"] * 20)
    strat = ppi(y, fl, fu, sl, su, lam=0.5)
    assert strat.standard_error == pytest.approx(ppi(y, fl, fu, sl, su, lam=0.5, interval="t").standard_error,
                                                 rel=1e-12)
    r = y - 0.5 * fl
    centred = np.r_[r[:6] - r[:6].mean(), r[6:] - r[6:].mean()]
    q = student_t.ppf(0.975, kurtosis_df(centred, 10))
    assert strat.interval.high == pytest.approx(strat.estimate + q * strat.standard_error, rel=1e-12)
    # people alone: the jackknife's error of a mean is the plug-in one; the kurtosis lowers t's df
    alone = classical(y)
    assert alone.standard_error == classical(y, interval="t").standard_error
    q = student_t.ppf(0.975, kurtosis_df(y - y.mean(), 11))
    assert alone.interval.high == pytest.approx(alone.estimate + q * alone.standard_error, rel=1e-12)
    # values with no excess kurtosis keep the slice's degrees of freedom
    flat = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert classical(flat).interval == classical(flat, interval="t").interval


def test_the_robust_interval_falls_back_to_the_plug_in_error(monkeypatch):
    """Past JACKKNIFE_MAX people-judged queries, or when leaving a slice query out leaves nothing to
    estimate (a ratio whose other slice queries have no value), PPI++ keeps the plug-in standard
    error, and says so; the degrees of freedom are still lowered for the kurtosis."""
    import importlib

    module = importlib.import_module("relkit.audit.ppi")
    rng = np.random.default_rng(5)
    y = rng.choice([0.0, 0.0, 0.0, 0.2, 1.0], size=12)
    fl, fu = 0.5 * y + rng.normal(0, 0.1, 12), rng.normal(0.2, 0.2, 30)
    monkeypatch.setattr(module, "JACKKNIFE_MAX", 11)
    big = ppi(y, fl, fu)
    assert big.standard_error == ppi(y, fl, fu, interval="t").standard_error
    r = y - big.lam * fl
    q = student_t.ppf(0.975, kurtosis_df(r - r.mean(), 11))
    assert "plug-in standard error" in big.interval.method
    assert big.interval.high == pytest.approx(big.estimate + q * big.standard_error, rel=1e-12)
    monkeypatch.setattr(module, "JACKKNIFE_MAX", 2000)
    # without the first query no slice query has a value (and lambda 0 imputes nothing)
    odd = ppi([0.8, np.nan], [0.5, 0.4], [0.3, 0.6, 0.2], lam=0.0)
    assert odd.estimate == pytest.approx(0.8) and "plug-in standard error" in odd.interval.method
    assert odd.standard_error == ppi([0.8, np.nan], [0.5, 0.4], [0.3, 0.6, 0.2], lam=0.0, interval="t").standard_error


def test_bad_input_is_an_error():
    with pytest.raises(RelkitError, match="at least 2 in every stratum"):
        ppi([1.0], [0.5], [0.2, 0.4])
    with pytest.raises(RelkitError, match="differ in length"):
        ppi([1.0, 0.0], [0.5], [0.2, 0.4])
    with pytest.raises(RelkitError, match="lambda is in"):
        ppi([1.0, 0.0], [0.5, 0.4], [0.2, 0.4], lam=1.5)
    with pytest.raises(RelkitError, match="no people-judged query has a value"):
        ppi([np.nan, np.nan], [0.5, 0.4], [0.2, 0.4])
    with pytest.raises(RelkitError, match="interval must be one of 'robust', 't', 'normal', not 'z'"):
        classical([1.0, 0.0], interval="z")


def test_planning_numbers_by_hand():
    m = Moments(var_people=0.04, var_judge=0.05, covariance=0.036)       # correlation 0.805
    # Q = 400 queries, n = 100 judged by people: lambda = c (Q - n) / (var_f Q) = 0.036 * 300 / 20 = 0.54
    lam = 0.036 * 300 / (0.05 * 400)
    var = lam ** 2 * 0.05 / 300 + (0.04 - 2 * lam * 0.036 + lam ** 2 * 0.05) / 100
    assert m.variance(400, 100) == pytest.approx(var, rel=1e-12)
    # with lambda below 1 that is sigma_y^2 (1 - rho^2) / n + sigma_y^2 rho^2 / Q
    rho2 = 0.036 ** 2 / (0.04 * 0.05)
    assert m.variance(400, 100) == pytest.approx(0.04 * (1 - rho2) / 100 + 0.04 * rho2 / 400, rel=1e-12)
    assert m.mde(400, 100) == pytest.approx(MDE_FACTOR * math.sqrt(var), rel=1e-12)
    assert m.variance(400, 400) == pytest.approx(0.04 / 400)

    target = 0.03
    # people alone: n = (2.8016 / 0.03)^2 x 0.04 = 348.8 -> 349 queries
    assert people_only(m, target) == math.ceil((MDE_FACTOR / target) ** 2 * 0.04) == 349
    # however many queries the judge judges: lambda -> c / var_f = 0.72, leaving 0.04 (1 - rho^2) per query
    assert floor(m, target) == math.ceil((MDE_FACTOR / target) ** 2 * 0.04 * (1 - rho2)) == 123
    rows = plan(m, target, results_per_query=7.5, scales=(1, 2, 4))
    for row, queries in zip(rows, (349, 698, 1396)):
        # the fewest n whose MDE, by the closed form, is at most the target
        n = next(n for n in range(2, queries + 1)
                 if MDE_FACTOR * math.sqrt(0.04 * (1 - rho2) / n + 0.04 * rho2 / queries) <= target)
        assert row == {"queries": queries, "people_queries": n, "people_results": round(n * 7.5),
                       "judge_results": round(queries * 7.5), "mde": pytest.approx(m.mde(queries, n))}
    assert rows[0]["people_queries"] == 349 and rows[2]["people_queries"] < rows[1]["people_queries"] < 349
    assert m.people_needed(100, target) is None           # 100 queries cannot reach it, even all judged by people

"""The interval type and the bootstrap, against intervals worked out here with numpy."""
import numpy as np
import pytest

from relkit import RelkitError
from relkit.intervals import Interval, bootstrap


def percentile_interval(means: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def test_one_group_is_the_plain_bootstrap_of_the_mean():
    values = np.random.default_rng(3).random(37)
    # by hand: 2000 resamples of 37 values, drawn from one generator seeded 7, row by row
    draws = np.random.default_rng(7).integers(0, 37, size=(2000, 37))
    low, high = percentile_interval(values[draws].mean(axis=1))
    x = bootstrap([values], seed=7, method="bootstrap of a mean")
    assert (x.estimate, x.low, x.high) == pytest.approx((values.mean(), low, high), abs=1e-15)
    assert (x.n, x.level, x.method) == (37, 0.95, "bootstrap of a mean")
    # 1,000 resamples at 90% are another interval
    few = np.random.default_rng(7).integers(0, 37, size=(1000, 37))
    x90 = bootstrap([values], resamples=1000, level=0.9, seed=7)
    assert (x90.low, x90.high) == pytest.approx(percentile_interval(values[few].mean(axis=1), 0.9), abs=1e-15)
    assert x90.method == "bootstrap, 1000 resamples"


def test_strata_are_resampled_within_and_weighted():
    head, tail = np.array([0.9, 0.7, 0.8]), np.array([0.1, 0.4, 0.2, 0.3, 0.0])
    # by hand: the head's 2000 x 3 draws first, then the tail's 2000 x 5, from one generator
    rng = np.random.default_rng(0)
    head_means = head[rng.integers(0, 3, size=(2000, 3))].mean(axis=1)
    tail_means = tail[rng.integers(0, 5, size=(2000, 5))].mean(axis=1)
    means = 0.25 * head_means + 0.75 * tail_means            # weights 1 and 3, normalised
    x = bootstrap([head, tail], [1.0, 3.0])
    assert x.estimate == pytest.approx(0.25 * 0.8 + 0.75 * 0.2)
    assert (x.low, x.high) == pytest.approx(percentile_interval(means), abs=1e-15)
    assert x.n == 8


def test_a_constant_has_a_point_interval_and_empty_groups_are_refused():
    x = bootstrap([np.full(5, 0.25)], resamples=50)
    assert (x.estimate, x.low, x.high) == (0.25, 0.25, 0.25)
    with pytest.raises(RelkitError, match="nothing to estimate"):
        bootstrap([np.array([1.0]), np.array([])])
    with pytest.raises(RelkitError, match="nothing to estimate"):
        bootstrap([])


def test_an_interval_formats_validates_and_writes_its_json():
    x = Interval(-0.0123, -0.05, 0.031, n=12, method="paired bootstrap, 2000 resamples over queries")
    assert str(x) == "-0.0123 [-0.0500, 0.0310]" and f"{x:+.3f}" == "-0.012 [-0.050, +0.031]"
    assert x.holds(0.0) and not x.holds(0.04)
    assert x.to_dict() == {"mean": -0.0123, "low": -0.05, "high": 0.031, "queries": 12, "level": 0.95}
    with pytest.raises(ValueError, match="low end"):
        Interval(0.5, 0.6, 0.4, n=3)
    with pytest.raises(ValueError, match="level"):
        Interval(0.5, 0.4, 0.6, n=3, level=95)

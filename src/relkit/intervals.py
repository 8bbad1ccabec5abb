"""Estimates with their intervals: one type for every interval relkit reports (evaluation, audit,
report), whatever made it, and the bootstrap that makes most of them today."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from relkit.errors import RelkitError

RESAMPLES = 2000
LEVEL = 0.95
_CHUNK = 256        # resamples drawn at once: memory stays bounded for large query sets


@dataclass(frozen=True)
class Interval:
    """An estimate, the interval that holds it with probability `level`, and what made the
    interval (`method`, e.g. "paired bootstrap, 2000 resamples over queries") from `n` units.

    >>> x = Interval(0.1, -0.02, 0.2, n=40, method="paired bootstrap, 2000 resamples over queries")
    >>> str(x), f"{x:+.2f}"
    ('0.1000 [-0.0200, 0.2000]', '+0.10 [-0.02, +0.20]')
    """
    estimate: float
    low: float
    high: float
    n: int                       # the units the estimate rests on (queries)
    level: float = LEVEL
    method: str = ""

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ValueError(f"an interval's low end ({self.low}) is above its high end ({self.high})")
        if not 0 < self.level < 1:
            raise ValueError(f"an interval's level is in (0, 1), got {self.level}")

    def __format__(self, spec: str) -> str:
        spec = spec or ".4f"
        return f"{self.estimate:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"

    def __str__(self) -> str:
        return format(self)

    def holds(self, value: float) -> bool:
        return self.low <= value <= self.high

    def to_dict(self) -> dict:
        """As `relkit eval --json` writes it: mean, low, high, queries, level."""
        return {"mean": self.estimate, "low": self.low, "high": self.high, "queries": self.n, "level": self.level}


def bootstrap(groups: Sequence[np.ndarray], weights: Sequence[float] | None = None, resamples: int = RESAMPLES,
              level: float = LEVEL, seed: int = 0, method: str | None = None) -> Interval:
    """The weighted mean of the `groups`' means (weights normalised to sum to 1; equal weights when
    None) with its percentile bootstrap interval: each resample redraws every group's values with
    replacement, as many as it has. One group is the plain bootstrap of a mean; groups are strata.

    >>> str(bootstrap([np.array([1.0]), np.array([0.0])], [0.5, 0.5]))
    '0.5000 [0.5000, 0.5000]'
    """
    groups = [np.asarray(g, dtype=np.float64) for g in groups]
    if not groups or any(len(g) == 0 for g in groups):
        raise RelkitError("nothing to estimate: a group with no value")
    weights = [1.0] * len(groups) if weights is None else list(weights)
    total = sum(weights)
    rng = np.random.default_rng(seed)
    means = np.zeros(resamples)
    for g, w in zip(groups, weights):
        for start in range(0, resamples, _CHUNK):
            rows = min(_CHUNK, resamples - start)
            means[start:start + rows] += w / total * g[rng.integers(0, len(g), size=(rows, len(g)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    estimate = float(sum(w / total * np.mean(g) for g, w in zip(groups, weights)))
    return Interval(estimate, float(low), float(high), sum(len(g) for g in groups), level,
                    method or f"bootstrap, {resamples} resamples")


def normal(estimate: float, standard_error: float, n: int, level: float = LEVEL, method: str = "") -> Interval:
    """The normal (Wald) interval: the estimate plus or minus z standard errors, z the
    (1 + level) / 2 quantile of the standard normal.

    >>> str(normal(0.5, 0.1, 30))
    '0.5000 [0.3040, 0.6960]'
    """
    from statistics import NormalDist

    if not standard_error >= 0:
        raise RelkitError(f"a standard error is a number >= 0, got {standard_error}")
    half = NormalDist().inv_cdf((1 + level) / 2) * standard_error
    return Interval(float(estimate), float(estimate - half), float(estimate + half), n, level,
                    method or "normal interval")

"""Comparing two methods on the same test playlists: the paired bootstrap.

Two methods scored on the same cases differ case by case far less than their means vary over random splits, so a
comparison resamples the *cases* (with replacement) and recomputes the difference of means on each resample: the
2.5 and 97.5 percentiles of those differences are the 95 % interval (Efron & Tibshirani 1993, ch. 16; the usual
test for IR metrics, Sakai 2006). An interval that excludes 0 says the difference is not the luck of the split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000


@dataclass(frozen=True)
class Difference:
    """``b − a`` on one metric: the observed difference of means, its 95 % interval, and the relative change."""

    metric: str
    a: float
    b: float
    diff: float
    low: float
    high: float
    cases: int

    @property
    def relative(self) -> float:
        return self.diff / self.a if self.a else float("nan")

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_json(self) -> dict[str, float | int | str | bool]:
        return {"metric": self.metric, "a": self.a, "b": self.b, "diff": self.diff, "low": self.low,
                "high": self.high, "relative": self.relative, "cases": self.cases,
                "excludes_zero": self.excludes_zero}


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, metric: str = "", resamples: int = RESAMPLES,
                     level: float = 0.95, random_state: int = 0) -> Difference:
    """The paired-bootstrap interval of mean(b) − mean(a); ``a[i]`` and ``b[i]`` are the same case's values.

    Raises ValueError when the two differ in length or hold no case.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired values must be two 1-d sequences of one length, got {x.shape} and {y.shape}")
    if not len(x):
        raise ValueError("no cases to compare")
    d = y - x
    rng = np.random.default_rng(random_state)
    means = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, 256):  # bounded memory: 256 resamples × cases at a time
        n = min(256, resamples - start)
        means[start:start + n] = d[rng.integers(0, len(d), size=(n, len(d)))].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Difference(metric=metric, a=float(x.mean()), b=float(y.mean()), diff=float(d.mean()), low=float(low),
                      high=float(high), cases=len(d))

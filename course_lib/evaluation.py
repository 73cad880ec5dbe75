"""Telling a real difference from a lucky seed: intervals and paired tests for the lessons that compare methods.

The protocol the lessons follow (06, 07, 08):

1. choose everything (pooling, layer, regularisation, learning rate, threshold) on a validation split or by
   cross-validation on the training split;
2. run every compared arm over at least three seeds, each seed giving every arm the same data (paired);
3. touch the test split once, at the end, and report each arm as mean ± standard deviation over seeds with a
   95% interval, and each headline difference with a paired test;
4. call a difference only where the paired test supports it, and give its size.

Two kinds of noise, two tools:

* **which test examples** happen to be in the test split: :func:`bootstrap_interval` resamples the examples of one
  run; :func:`paired_bootstrap` and :func:`mcnemar` compare two models on the *same* examples;
* **which seed** (initialisation, data order, subset): :func:`seed_summary` gives mean, standard deviation and a
  Student-t interval over seeds; :func:`paired_seeds` tests the per-seed differences of two arms.

Everything here is scipy underneath (``scipy.stats.bootstrap``, ``binomtest``, ``ttest_rel``, ``t``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

from course_lib.runtime.errors import CourseInputError

LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A value with its 95% interval; ``str`` gives "0.842 [0.811, 0.870]"."""

    value: float
    low: float
    high: float
    std: float = float("nan")  # over seeds, where the estimate is a mean over seeds
    n: int = 0  # how many values it comes from (examples or seeds)

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def overlaps(self, other: "Estimate") -> bool:
        return self.low <= other.high and other.low <= self.high


@dataclass(frozen=True)
class Comparison:
    """The paired difference ``a - b`` with its 95% interval and a two-sided p-value."""

    difference: float
    low: float
    high: float
    p_value: float
    test: str

    @property
    def significant(self) -> bool:
        """Whether the interval excludes zero (the same verdict as ``p_value < 0.05`` up to the test's method)."""
        return self.low > 0 or self.high < 0

    def verdict(self, what: str = "difference") -> str:
        """One sentence a lesson can print: the size and whether the data support it."""
        size = f"{self.difference:+.3f} [{self.low:+.3f}, {self.high:+.3f}], p = {self.p_value:.3g} ({self.test})"
        if self.significant:
            return f"{what}: {size}: a difference the data support"
        return f"{what}: {size}: no detectable difference at this budget"


def _values(values, name: str, minimum: int = 1) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    if array.size < minimum:
        raise CourseInputError(f"{name} needs at least {minimum} values, got {array.size}")
    if not np.all(np.isfinite(array)):
        raise CourseInputError(f"{name} must be finite numbers, got {values!r}")
    return array


def _paired(a, b, name: str, minimum: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = _values(a, f"{name} (first arm)", minimum), _values(b, f"{name} (second arm)", minimum)
    if a.shape != b.shape:
        raise CourseInputError(f"{name} compares the same items for both arms: got {a.size} and {b.size} values")
    return a, b


def bootstrap_interval(values: Sequence[float], seed: int = 0, resamples: int = 2000) -> Estimate:
    """The mean of ``values`` (say, 1.0/0.0 per test example for accuracy) with a 95% percentile-bootstrap interval
    over the examples."""
    array = _values(values, "bootstrap_interval")
    if np.all(array == array[0]):  # every example the same: no spread to resample
        return Estimate(float(array[0]), float(array[0]), float(array[0]), n=array.size)
    result = stats.bootstrap((array,), np.mean, confidence_level=LEVEL, n_resamples=resamples,
                             method="percentile", random_state=np.random.default_rng(seed))
    ci = result.confidence_interval
    return Estimate(float(array.mean()), float(ci.low), float(ci.high), n=array.size)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], seed: int = 0, resamples: int = 2000) -> Comparison:
    """Mean of ``a - b`` over the same examples (per-example scores of two models), its 95% bootstrap interval,
    and a two-sided bootstrap p-value (twice the share of resampled differences on the far side of zero)."""
    a, b = _paired(a, b, "paired_bootstrap", 2)
    diff = a - b
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(resamples, diff.size))].mean(axis=1)  # (resamples,)
    low, high = np.quantile(means, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    if diff.mean() == 0:
        p = 1.0
    else:
        far = np.mean(means <= 0) if diff.mean() > 0 else np.mean(means >= 0)
        p = min(1.0, 2 * max(far, 1 / resamples))
    return Comparison(float(diff.mean()), float(low), float(high), float(p), "paired bootstrap")


def mcnemar(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> Comparison:
    """McNemar's exact test for two classifiers on the same examples: only the examples where exactly one is right
    count. The difference is the accuracy gap ``a - b`` with a Wald interval for a paired proportion."""
    a = np.asarray(a_correct, dtype=bool).ravel()
    b = np.asarray(b_correct, dtype=bool).ravel()
    if a.size == 0 or a.shape != b.shape:
        raise CourseInputError(f"mcnemar wants two equal-length lists of right/wrong, got {a.size} and {b.size}")
    only_a, only_b, n = int(np.sum(a & ~b)), int(np.sum(~a & b)), a.size
    p = 1.0 if only_a + only_b == 0 else stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
    diff = (only_a - only_b) / n
    se = math.sqrt(max(only_a + only_b - (only_a - only_b) ** 2 / n, 0.0)) / n
    z = stats.norm.ppf((1 + LEVEL) / 2)
    return Comparison(diff, diff - z * se, diff + z * se, float(p), "McNemar exact")


def seed_summary(values: Sequence[float]) -> Estimate:
    """Mean over seeds, their standard deviation (n - 1) and a 95% Student-t interval for the mean (3 seeds: the
    t quantile is 4.30, so the interval is wide; that is the honest width)."""
    array = _values(values, "seed_summary", 2)
    mean, std = float(array.mean()), float(array.std(ddof=1))
    half = stats.t.ppf((1 + LEVEL) / 2, array.size - 1) * std / math.sqrt(array.size)
    return Estimate(mean, mean - half, mean + half, std=std, n=array.size)


def paired_seeds(a: Sequence[float], b: Sequence[float]) -> Comparison:
    """Two arms run on the same seeds: the mean per-seed difference ``a - b`` with a 95% t interval and the
    paired t-test's p-value. Identical differences on every seed have no spread: the interval is that value."""
    a, b = _paired(a, b, "paired_seeds", 2)
    diff = a - b
    mean, std = float(diff.mean()), float(diff.std(ddof=1))
    if std == 0:
        return Comparison(mean, mean, mean, 1.0 if mean == 0 else 0.0, "paired t over seeds")
    half = stats.t.ppf((1 + LEVEL) / 2, diff.size - 1) * std / math.sqrt(diff.size)
    p = float(stats.ttest_rel(a, b).pvalue)
    return Comparison(mean, mean - half, mean + half, p, "paired t over seeds")


def format_mean_std(values: Sequence[float], digits: int = 3) -> str:
    """"0.842 ± 0.012" (mean ± standard deviation over seeds)."""
    array = _values(values, "format_mean_std", 2)
    return f"{array.mean():.{digits}f} ± {array.std(ddof=1):.{digits}f}"

"""The course's intervals and paired tests agree with scipy's own and give the verdicts they should."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from course_lib.evaluation import (bootstrap_interval, format_mean_std, mcnemar, paired_bootstrap, paired_seeds,
                                   seed_summary)
from course_lib.runtime.errors import CourseInputError


def test_seed_summary_is_the_student_t_interval_of_scipy():
    values = [0.81, 0.84, 0.79]
    got = seed_summary(values)
    low, high = stats.t.interval(0.95, 2, loc=np.mean(values), scale=stats.sem(values))
    assert got.value == pytest.approx(np.mean(values))
    assert got.std == pytest.approx(np.std(values, ddof=1))
    assert (got.low, got.high) == pytest.approx((low, high))
    assert format_mean_std(values) == f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_more_examples():
    rng = np.random.default_rng(0)
    small, large = rng.random(100) < 0.8, rng.random(10_000) < 0.8
    a, b = bootstrap_interval(small), bootstrap_interval(large)
    assert a.low < a.value < a.high and b.low < b.value < b.high
    assert (b.high - b.low) < (a.high - a.low) / 5  # width ~ 1/sqrt(n): 10x fewer -> 10x narrower
    # the normal-approximation half-width of a proportion, 1.96 sqrt(p(1-p)/n), within 15%
    half = 1.96 * np.sqrt(b.value * (1 - b.value) / large.size)
    assert (b.high - b.low) / 2 == pytest.approx(half, rel=0.15)


def test_mcnemar_p_value_is_the_exact_binomial_test_on_the_discordant_examples():
    a = np.array([1] * 30 + [0] * 10 + [1] * 50 + [0] * 10, dtype=bool)
    b = np.array([0] * 30 + [1] * 10 + [1] * 50 + [0] * 10, dtype=bool)
    got = mcnemar(a, b)
    assert got.p_value == pytest.approx(stats.binomtest(30, 40, 0.5).pvalue)
    assert got.difference == pytest.approx(a.mean() - b.mean())
    assert got.significant and "support" in got.verdict()
    same = mcnemar(a, a)
    assert same.p_value == 1.0 and not same.significant and "no detectable difference" in same.verdict()


def test_paired_tests_find_a_real_gap_and_not_noise():
    rng = np.random.default_rng(1)
    truth = rng.random(2000)
    better, worse = (truth < 0.85).astype(float), (truth < 0.80).astype(float)  # nested: a paired gap of 0.05
    gap = paired_bootstrap(better, worse)
    assert gap.significant and gap.low > 0 and gap.difference == pytest.approx(0.05, abs=0.02)
    noise_a, noise_b = (rng.random(300) < 0.8).astype(float), (rng.random(300) < 0.8).astype(float)
    assert paired_bootstrap(noise_a, noise_a).difference == 0 and paired_bootstrap(noise_a, noise_a).p_value == 1
    seeds = paired_seeds([0.84, 0.85, 0.83], [0.80, 0.815, 0.79])
    assert seeds.p_value == pytest.approx(stats.ttest_rel([0.84, 0.85, 0.83], [0.80, 0.815, 0.79]).pvalue)
    assert seeds.significant
    assert not paired_seeds([0.84, 0.80, 0.83], [0.82, 0.83, 0.81]).significant


@pytest.mark.parametrize("call", [
    lambda: seed_summary([0.8]),
    lambda: seed_summary([]),
    lambda: paired_seeds([0.8, 0.9], [0.8, 0.9, 0.7]),
    lambda: bootstrap_interval([0.5, float("nan")]),
    lambda: mcnemar([True], [True, False]),
])
def test_bad_input_gets_a_clear_error(call):
    with pytest.raises(CourseInputError):
        call()

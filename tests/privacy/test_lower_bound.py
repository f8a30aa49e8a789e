"""The audit's statistics: Clopper–Pearson bounds, epsilon from error rates, thresholds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from fedopt.errors import ConfigError
from fedopt.privacy.lower_bound import (
    best_threshold,
    clopper_pearson_upper,
    epsilon_from_rates,
    epsilon_lower_bound,
    resolution,
    threshold_audit,
)

DELTA = 1e-5


def test_clopper_pearson_upper_bound_known_values() -> None:
    # no error among n: 1 - (alpha/2)^(1/n), the "rule of 3.69"
    assert clopper_pearson_upper(0, 10) == pytest.approx(1 - 0.025**0.1, rel=1e-12)
    assert clopper_pearson_upper(0, 10) == pytest.approx(0.308497, abs=1e-6)
    assert clopper_pearson_upper(0, 100) * 100 == pytest.approx(3.6217, abs=1e-4)
    # 5 of 20: the textbook exact 95% interval (0.0866, 0.4910)
    assert clopper_pearson_upper(5, 20) == pytest.approx(0.491046, abs=1e-6)
    # all errors: 1; alpha = 0.1 gives a smaller bound
    assert clopper_pearson_upper(20, 20) == 1.0
    assert clopper_pearson_upper(5, 20, alpha=0.1) < clopper_pearson_upper(5, 20)


@pytest.mark.parametrize(("k", "n"), [(0, 7), (3, 50), (17, 40), (99, 100)])
def test_clopper_pearson_agrees_with_scipy_binomtest(k: int, n: int) -> None:
    exact = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact").high
    assert clopper_pearson_upper(k, n) == pytest.approx(exact, rel=1e-10)


def test_clopper_pearson_is_elementwise_and_refuses_bad_counts() -> None:
    got = clopper_pearson_upper(np.array([0, 5, 20]), 20)
    assert got.shape == (3,) and got[2] == 1.0
    assert got[1] == pytest.approx(clopper_pearson_upper(5, 20))
    with pytest.raises(ValueError, match=r"errors: expected integers in \[0, 20\]"):
        clopper_pearson_upper(21, 20)
    with pytest.raises(ConfigError, match="trials: must be an integer >= 1"):
        clopper_pearson_upper(0, 0)
    for alpha in (0.0, 1.0, -0.1):
        with pytest.raises(ConfigError, match=r"alpha: must be a number in \(0, 1"):
            clopper_pearson_upper(0, 10, alpha)


def test_epsilon_from_rates_edge_cases() -> None:
    # the formula, both terms
    assert epsilon_from_rates(0.01, 0.2, DELTA) == pytest.approx(math.log((1 - DELTA - 0.2) / 0.01))
    assert epsilon_from_rates(0.2, 0.01, DELTA) == pytest.approx(math.log((1 - DELTA - 0.2) / 0.01))
    # coin flipping, or worse than coin flipping, proves nothing
    assert epsilon_from_rates(0.5, 0.5, DELTA) == 0.0
    assert epsilon_from_rates(0.7, 0.6, DELTA) == 0.0
    assert epsilon_from_rates(1.0, 1.0, DELTA) == 0.0
    # a raw zero rate is infinite evidence; with the other rate 1 - delta it is nothing
    assert epsilon_from_rates(0.0, 0.3, DELTA) == math.inf
    assert epsilon_from_rates(0.0, 1.0 - DELTA, DELTA) == 0.0
    np.testing.assert_allclose(
        epsilon_from_rates(np.array([0.5, 0.01]), np.array([0.5, 0.2]), DELTA),
        [0.0, math.log((1 - DELTA - 0.2) / 0.01)],
    )


def test_zero_errors_give_the_resolution() -> None:
    for n in (10, 100, 1000):
        ub = 1 - 0.025 ** (1 / n)
        want = math.log((1 - DELTA - ub) / ub)
        assert epsilon_lower_bound(0, 0, n, n, DELTA) == pytest.approx(want, rel=1e-12)
        assert resolution(n, DELTA) == pytest.approx(want, rel=1e-12)
    assert resolution(100, DELTA) == pytest.approx(math.log(100 / 3.69), abs=0.02)
    assert resolution(100, DELTA) == pytest.approx(3.2813, abs=1e-4)
    # one false positive among 100 lowers the bound; the better of the two terms counts
    ub0, ub1 = clopper_pearson_upper(0, 100), clopper_pearson_upper(1, 100)
    one = epsilon_lower_bound(1, 0, 100, 100, DELTA)
    assert one == pytest.approx(math.log((1 - DELTA - ub1) / ub0))  # the larger term
    assert one > math.log((1 - DELTA - ub0) / ub1) and one < resolution(100, DELTA)


def test_best_threshold_counts_errors_of_the_rule_s_greater_than_t() -> None:
    s_out = np.arange(40.0)
    s_in = 39.5 + np.arange(40.0)
    s_in[0] = 20.0  # one 'in' trial among the 'out' values
    t, eps = best_threshold(s_in, s_out, DELTA)
    # t = 39 (the largest 'out'): no false positive, one false negative (20 <= 39)
    assert t == 39.0
    assert eps == pytest.approx(epsilon_lower_bound(0, 1, 40, 40, DELTA), rel=1e-12)
    # perfectly separated: the resolution; with 4 trials nothing is provable (ties: -inf)
    t, eps = best_threshold(s_in + 100, s_out, DELTA)
    assert t == 39.0 and eps == pytest.approx(resolution(40, DELTA))
    assert best_threshold(s_in[:4] + 100, s_out[:4], DELTA) == (-math.inf, 0.0)


def test_threshold_audit_selects_on_one_half_and_bounds_on_the_other() -> None:
    rng = np.random.default_rng(0)
    far = threshold_audit(rng.normal(30, 1, 200), rng.normal(0, 1, 200), DELTA)
    assert far.trials_in == far.trials_out == 100
    assert far.false_positives == far.false_negatives == 0
    assert far.epsilon_lb == pytest.approx(resolution(100, DELTA)) == far.resolution
    same = threshold_audit(rng.normal(0, 1, 200), rng.normal(0, 1, 200), DELTA)
    assert same.epsilon_lb < 0.5
    # the threshold comes from the first halves only: changing the second halves keeps it
    a, b = rng.normal(1, 1, 100), rng.normal(0, 1, 100)
    one = threshold_audit(a, b, DELTA)
    a2, b2 = a.copy(), b.copy()
    a2[50:] += 100.0
    b2[50:] -= 100.0
    two = threshold_audit(a2, b2, DELTA)
    assert one.threshold == two.threshold and one.selection_epsilon == two.selection_epsilon
    assert two.false_positives == two.false_negatives == 0
    assert one.fpr == one.false_positives / 50 and one.fnr == one.false_negatives / 50


def test_threshold_audit_refuses_too_few_or_non_finite_trials() -> None:
    with pytest.raises(ValueError, match="at least 2 trials per world"):
        threshold_audit([1.0], [0.0, 1.0], DELTA)
    with pytest.raises(ValueError, match="not finite"):
        threshold_audit([1.0, math.nan], [0.0, 1.0], DELTA)

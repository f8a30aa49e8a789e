"""DIFF2's closed-form calibration (spec diff2.md §4.4) and the DP-SGD noise multiplier."""

from __future__ import annotations

import math

import pytest

from fedopt.errors import ConfigError
from fedopt.privacy import (
    GaussianRounds,
    diff2_calibration,
    dp_sgd_noise_multiplier,
    epsilon_spent,
    period_from_tau,
)

P, N_MIN, R, DELTA = 10, 1651, 2000, 1e-5

# The spec's table, as printed: eps, tau, T, alpha, sigma1, sigma2, total RDP, eps_DP.
TABLE = [
    (3, 0.0, 1, 9, "0.0093834", None, "1.5000", "2.939"),
    (3, 0.003, 6, 9, "0.0042829", "0.020982", "1.4523", "2.891"),
    (3, 0.01, 20, 9, "0.0023458", "0.020982", "1.4850", "2.924"),
    (3, 0.1, 200, 9, "0.00074182", "0.020982", "1.4985", "2.938"),
    (5, 0.0, 1, 6, "0.0059346", None, "2.5000", "4.803"),
    (5, 0.003, 6, 6, "0.0027087", "0.013270", "2.4205", "4.723"),
    (5, 0.1, 200, 6, "0.00046917", "0.013270", "2.4975", "4.800"),
]


def _as_printed(value: float, printed: str) -> str:
    """``value`` with as many decimals as ``printed`` has."""
    decimals = len(printed.split(".")[1])
    return f"{value:.{decimals}f}"


@pytest.mark.parametrize("eps, tau, period, alpha, s1, s2, rdp, eps_dp", TABLE)
def test_spec_table(eps, tau, period, alpha, s1, s2, rdp, eps_dp):
    assert period_from_tau(tau, R) == period
    cal = diff2_calibration(eps, DELTA, R, period, P, N_MIN)
    assert cal.alpha == alpha
    assert _as_printed(cal.sigma1, s1) == s1
    if s2 is None:
        assert cal.sigma2 is None and cal.z2 is None
    else:
        assert _as_printed(cal.sigma2, s2) == s2
    assert _as_printed(cal.rdp_total, rdp) == rdp
    assert _as_printed(cal.epsilon_closed_form, eps_dp) == eps_dp
    assert cal.epsilon_closed_form <= eps


@pytest.mark.parametrize(
    "period, restarts, differences", [(1, 2000, 0), (6, 334, 1666), (20, 100, 1900), (7, 286, 1714)]
)
def test_restart_rounds_are_counted_with_ceil(period, restarts, differences):
    cal = diff2_calibration(3.0, DELTA, R, period, P, N_MIN)
    assert (cal.restart_rounds, cal.difference_rounds) == (restarts, differences)
    assert cal.restart_rounds == math.ceil(R / period)
    names = {"restart": cal.z1} if period == 1 else {"restart": cal.z1, "difference": cal.z2}
    assert cal.mechanisms() == names
    assert [p.count for p in cal.parts()] == [restarts] + ([differences] if period > 1 else [])


def test_noise_multiplier_and_rdp_identities():
    cal = diff2_calibration(3.0, DELTA, R, 6, P, N_MIN)
    assert cal.z1 == pytest.approx(cal.sigma1 * P * N_MIN / 2, rel=1e-15)
    assert cal.z2 == pytest.approx(cal.sigma2 * P * N_MIN / 2, rel=1e-15)
    per_round = [2 * cal.alpha / (P**2 * N_MIN**2 * s**2) for s in (cal.sigma1, cal.sigma2)]
    assert per_round[0] == pytest.approx(cal.alpha / (2 * cal.z1**2), rel=1e-12)
    total = 334 * per_round[0] + 1666 * per_round[1]
    assert cal.rdp_total == pytest.approx(total, rel=1e-12)
    conversion = math.log(1 / DELTA) / (cal.alpha - 1)
    assert cal.epsilon_closed_form == pytest.approx(cal.rdp_total + conversion, rel=1e-15)
    # u = 1.25: restarts get eps/(2u) = 0.4 eps of RDP in R/T rounds, differences 0.1 eps in R.
    assert 2000 / 6 * per_round[0] == pytest.approx(3.0 / 2.5, rel=1e-12)
    assert 2000 * per_round[1] == pytest.approx(3.0 * 0.25 / 2.5, rel=1e-12)
    # DP-GD (T = 1, c1 = 4): 2000 rounds use eps/2 of RDP exactly.
    assert diff2_calibration(3.0, DELTA, R, 1, P, N_MIN).rdp_total == pytest.approx(1.5, rel=1e-12)


def test_infinite_epsilon_means_no_noise():
    cal = diff2_calibration(math.inf, DELTA, R, 6, P, N_MIN)
    assert (cal.sigma1, cal.sigma2, cal.z1, cal.z2) == (0.0, 0.0, 0.0, 0.0)
    assert cal.alpha == 1
    assert cal.rdp_total == math.inf and cal.epsilon_closed_form == math.inf
    gd = diff2_calibration(math.inf, DELTA, R, 1, P, N_MIN)
    assert (gd.sigma1, gd.sigma2, gd.z2) == (0.0, None, None)


@pytest.mark.parametrize(
    "tau, rounds, period",
    [
        (0, 2000, 1),
        (0.0004, 2000, 1),
        (0.03, 2000, 60),
        (0.29, 100, 29),
        (1, 2000, 2000),
        (0.5, 3, 1),
    ],
)
def test_period_from_tau(tau, rounds, period):
    assert period_from_tau(tau, rounds) == period


@pytest.mark.parametrize(
    "tau, rounds, field, shown",
    [
        (-0.1, 10, "algorithm.tau", "-0.1"),
        (1.5, 10, "algorithm.tau", "1.5"),
        (math.nan, 10, "algorithm.tau", "nan"),
        ("0.1", 10, "algorithm.tau", "'0.1'"),
        (0.1, 0, "stop.rounds", "0"),
    ],
)
def test_period_from_tau_refuses(tau, rounds, field, shown):
    with pytest.raises(ConfigError) as err:
        period_from_tau(tau, rounds)
    assert err.value.args[0].startswith(f"{field}: ") and f"got {shown}" in str(err.value)


GOOD = {"epsilon": 3.0, "delta": DELTA, "rounds": R, "period": 6, "workers": P, "n_min": N_MIN}


@pytest.mark.parametrize(
    "arg, value, field",
    [
        ("epsilon", 0, "algorithm.epsilon"),
        ("epsilon", -1.0, "algorithm.epsilon"),
        ("epsilon", math.nan, "algorithm.epsilon"),
        ("epsilon", "3", "algorithm.epsilon"),
        ("delta", 0.0, "algorithm.delta"),
        ("delta", 1.0, "algorithm.delta"),
        ("delta", -1e-5, "algorithm.delta"),
        ("rounds", 0, "stop.rounds"),
        ("rounds", 2.5, "stop.rounds"),
        ("rounds", True, "stop.rounds"),
        ("period", 0, "algorithm.period"),
        ("period", 2001, "algorithm.period"),
        ("workers", 0, "workers"),
        ("n_min", 0, "n_min"),
        ("u", 1.0, "algorithm.u"),
        ("u", 0.5, "algorithm.u"),
        ("u", math.inf, "algorithm.u"),
    ],
)
def test_diff2_calibration_refuses(arg, value, field):
    with pytest.raises(ConfigError) as err:
        diff2_calibration(**{**GOOD, arg: value})
    message = str(err.value)
    assert message.startswith(f"{field}: ") and repr(value) in message and "Fix" in message


# ------------------------------------------------------------------------ DP-SGD


@pytest.mark.parametrize(
    "epsilon, sample_rate, steps",
    [(3.0, 1.0, 2000), (3.0, 0.04, 2000), (1.0, 0.01, 10_000), (8.0, 0.2, 500)],
)
def test_dp_sgd_noise_multiplier_round_trips(epsilon, sample_rate, steps):
    pytest.importorskip("dp_accounting")
    z = dp_sgd_noise_multiplier(epsilon, DELTA, sample_rate, steps)
    spent = epsilon_spent([GaussianRounds(z, steps, sample_rate)], DELTA)
    assert 0.99 * epsilon <= spent <= epsilon
    # A little less noise overspends: z is (within tol) the smallest that fits.
    assert epsilon_spent([GaussianRounds(z * 0.999, steps, sample_rate)], DELTA) > epsilon


def test_dp_sgd_noise_multiplier_known_value():
    pytest.importorskip("dp_accounting")
    # RESEARCH.md §1: DP-GD at eps = 3, R = 2000 calibrates to z = 66.78 (closed form 77.46).
    assert dp_sgd_noise_multiplier(3.0, DELTA, 1.0, 2000) == pytest.approx(66.78, abs=5e-3)
    assert diff2_calibration(3.0, DELTA, R, 1, P, N_MIN).z1 == pytest.approx(77.46, abs=5e-3)
    assert dp_sgd_noise_multiplier(math.inf, DELTA, 0.1, 100) == 0.0


def test_dp_sgd_noise_multiplier_searches_once_per_budget():
    pytest.importorskip("dp_accounting")
    from fedopt.privacy.calibration import _calibrated_noise_multiplier

    # a sweep's cells differing only in clip or step share the search (about 1 s each)
    first = dp_sgd_noise_multiplier(4.0, DELTA, 0.05, 700)
    before = _calibrated_noise_multiplier.cache_info()
    assert dp_sgd_noise_multiplier(4, DELTA, 0.05, 700) == first  # an int epsilon too
    after = _calibrated_noise_multiplier.cache_info()
    assert after.hits == before.hits + 1 and after.misses == before.misses
    assert dp_sgd_noise_multiplier(4.0, DELTA, 0.05, 701) > first  # one more step: more noise


@pytest.mark.parametrize("sample_rate", [1.0, 0.01])
def test_dp_sgd_noise_multiplier_unreachable(sample_rate):
    pytest.importorskip("dp_accounting")
    # RDP orders stop at 1024, so delta = 1e-300 costs ~0.67 of epsilon whatever the noise.
    with pytest.raises(ConfigError) as err:
        dp_sgd_noise_multiplier(0.01, 1e-300, sample_rate, 10)
    message = str(err.value)
    assert message.startswith("algorithm.epsilon: epsilon 0.01 at delta 1e-300 is unreachable")
    assert "Fix" in message


@pytest.mark.parametrize(
    "arg, value, field",
    [
        ("epsilon", 0.0, "algorithm.epsilon"),
        ("delta", 2.0, "algorithm.delta"),
        ("sample_rate", 0.0, "algorithm.sample_rate"),
        ("sample_rate", 1.5, "algorithm.sample_rate"),
        ("steps", 0, "steps"),
    ],
)
def test_dp_sgd_noise_multiplier_refuses(arg, value, field):
    args = {"epsilon": 3.0, "delta": DELTA, "sample_rate": 0.1, "steps": 100, arg: value}
    with pytest.raises(ConfigError) as err:
        dp_sgd_noise_multiplier(**args)
    assert str(err.value).startswith(f"{field}: ") and repr(value) in str(err.value)

"""Noise calibration: DIFF2's closed form and a DP-SGD noise multiplier by accountant.

DIFF2 (Murata & Suzuki, ICML 2023), reference-code calibration
-----------------------------------------------------------------
``R`` rounds, restart period ``T``, ``P`` workers, smallest local dataset ``n_min``,
target ``(epsilon, delta)``, split parameter ``u > 1``::

    alpha  = 1 + ceil(2 ln(1/delta) / epsilon)                         (Rényi order)
    sigma1 = sqrt(c1 alpha R / (T n_min^2 P^2 epsilon)),  c1 = 4u (T > 1), 4 (T = 1)
    sigma2 = sqrt((4u / (u - 1)) alpha R / (n_min^2 P^2 epsilon))      (T > 1 only)

The aggregate ``(1/P) sum_p (1/n_p) sum_i clip_C(.)`` moves by at most ``2C / (P n_min)``
when one sample is replaced, and the server adds ``N(0, (C sigma)^2 I)``, so its noise
multiplier is ``z = sigma P n_min / 2``. A Gaussian with multiplier ``z`` is
``(alpha, alpha / (2 z^2)) = (alpha, 2 alpha / (P^2 n_min^2 sigma^2))``-RDP (Mironov,
CSF 2017). Counting ``ceil(R/T)`` restart rounds (radius ``C1``, ``sigma1``) and the
``R - ceil(R/T)`` other rounds as difference rounds (radius ``c_r``, ``sigma2``)::

    rdp_total           = alpha/(2 z1^2) ceil(R/T) + alpha/(2 z2^2) (R - ceil(R/T))
    epsilon_closed_form = rdp_total + ln(1/delta) / (alpha - 1)

The formulas budget ``R/T`` restarts; counting ``ceil(R/T)`` over-spends. For the spec's
``tau <= 0.1`` the conversion slack absorbs it, but not for ``T > R/2`` that does not
divide ``R``: ``R = 2000, T = 1500, epsilon = 3`` gives ``epsilon_closed_form = 3.54``
and the RDP accountant 3.07. Call :func:`fedopt.privacy.accountant.check_budget` on
:meth:`Diff2Calibration.parts` at set-up to refuse such runs.

``T = 1`` is DP-GD: every round restarts and there is no ``sigma2``.

``epsilon = inf`` means no privacy: ``sigma1 = sigma2 = 0``, ``z1 = z2 = 0`` (no noise;
``z = sigma P n_min / 2`` stays true), ``rdp_total = epsilon_closed_form = inf`` and
``alpha = 1`` (the formula's value). An algorithm adding ``C * sigma`` noise must treat
``sigma == 0`` as no noise even when ``C = inf`` (``inf * 0`` is NaN).

DP-SGD
------
:func:`dp_sgd_noise_multiplier` finds the smallest ``z`` of ``steps`` Poisson-subsampled
(rate ``q``, add/remove-one adjacency) Gaussian releases whose RDP epsilon at ``delta``
is at most the target, with dp-accounting's ``calibrate_dp_mechanism``.

Field names in error messages are those of :data:`FIELDS`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from fedopt.errors import ConfigError
from fedopt.privacy.accountant import GaussianRounds, dp_accounting, epsilon_spent
from fedopt.privacy.checks import count_value, delta_value, epsilon_value, in_range

FIELDS = {
    "epsilon": "algorithm.epsilon",
    "delta": "algorithm.delta",
    "u": "algorithm.u",
    "tau": "algorithm.tau",
    "period": "algorithm.period",
    "rounds": "stop.rounds",
    "workers": "workers",
    "n_min": "n_min",
    "sample_rate": "algorithm.sample_rate",
    "steps": "steps",
}
"""The config path each argument is reported under."""

TAU_SLACK = 1e-9
"""``floor(tau R + TAU_SLACK)``: ``0.29 * 100`` is ``28.999999999999996`` in floats."""


@dataclass(frozen=True)
class Diff2Calibration:
    """DIFF2's noise levels and their closed-form privacy (see the module docstring).

    ``sigma*`` multiply the clip radius (noise std ``C1 sigma1``, ``c_r sigma2``), ``z*``
    are the noise multipliers of the aggregate (``sigma P n_min / 2``). ``sigma2`` and
    ``z2`` are None when ``period == 1`` (DP-GD).
    """

    epsilon: float
    delta: float
    rounds: int
    period: int
    workers: int
    n_min: int
    u: float
    alpha: int
    sigma1: float
    sigma2: float | None
    restart_rounds: int
    difference_rounds: int
    z1: float
    z2: float | None
    rdp_total: float
    epsilon_closed_form: float

    def mechanisms(self) -> dict[str, float]:
        """``{"restart": z1, "difference": z2}`` (no ``"difference"`` when T = 1)."""
        out = {"restart": self.z1}
        if self.z2 is not None:
            out["difference"] = self.z2
        return out

    def parts(self) -> list[GaussianRounds]:
        """The whole run for the accountant: restart and difference rounds."""
        out = [GaussianRounds(self.z1, self.restart_rounds)]
        if self.z2 is not None:
            out.append(GaussianRounds(self.z2, self.difference_rounds))
        return out


def period_from_tau(tau: float, rounds: int) -> int:
    """DIFF2's restart period ``T = max(1, floor(tau R))`` (``tau = 0``: DP-GD).

    Parameters
    ----------
    tau
        Restart fraction in ``[0, 1]`` (field ``algorithm.tau``).
    rounds
        ``R`` (field ``stop.rounds``).
    """
    tau = in_range(tau, FIELDS["tau"], 0.0, 1.0, fix="give tau = T/R, e.g. 0.003 (0: DP-GD)")
    rounds = count_value(rounds, FIELDS["rounds"])
    return max(1, math.floor(tau * rounds + TAU_SLACK))


def _rdp(alpha: int, z: float, count: int) -> float:
    """RDP at order ``alpha`` of ``count`` Gaussian releases with multiplier ``z``."""
    if count == 0:
        return 0.0
    return math.inf if z == 0 else count * alpha / (2.0 * z * z)


def diff2_calibration(
    epsilon: float,
    delta: float,
    rounds: int,
    period: int,
    workers: int,
    n_min: int,
    u: float = 1.25,
) -> Diff2Calibration:
    """DIFF2's ``sigma1``, ``sigma2`` and closed-form privacy (Murata & Suzuki, ICML 2023).

    Parameters
    ----------
    epsilon, delta
        Target ``(epsilon, delta)``-DP at the sample level (``epsilon = inf``: no noise).
    rounds
        ``R``.
    period
        Restart period ``T`` in ``[1, R]`` (:func:`period_from_tau`).
    workers
        ``P``, the workers holding data.
    n_min
        The smallest local dataset.
    u
        Budget split ``> 1``: restarts get ``epsilon / (2u)``, differences
        ``epsilon (u - 1) / (2u)`` of RDP.

    Returns
    -------
    Diff2Calibration
    """
    epsilon = epsilon_value(epsilon, FIELDS["epsilon"])
    delta = delta_value(delta, FIELDS["delta"])
    rounds = count_value(rounds, FIELDS["rounds"])
    period = count_value(period, FIELDS["period"])
    workers = count_value(workers, FIELDS["workers"])
    n_min = count_value(n_min, FIELDS["n_min"])
    u = float(in_range(u, FIELDS["u"], 1.0, math.inf, open_low=True, fix="use u = 1.25"))
    if math.isinf(u):
        raise ConfigError(f"{FIELDS['u']}: must be finite, got {u!r}. Fix: use u = 1.25")
    if period > rounds:
        raise ConfigError(
            f"{FIELDS['period']}: the restart period T = {period} exceeds the {rounds} rounds "
            f"({FIELDS['rounds']}). Fix: T = max(1, floor(tau R)) with tau in [0, 1]"
        )
    alpha = 1 + math.ceil(2.0 * math.log(1.0 / delta) / epsilon)
    restarts = -(-rounds // period)
    differences = rounds - restarts
    scale = alpha * rounds / (n_min**2 * workers**2 * epsilon)
    c1 = 4.0 * u if period > 1 else 4.0
    sigma1 = math.sqrt(c1 * scale / period)
    sigma2 = math.sqrt(4.0 * u / (u - 1.0) * scale) if period > 1 else None
    half = workers * n_min / 2.0
    z1 = sigma1 * half
    z2 = None if sigma2 is None else sigma2 * half
    rdp_total = _rdp(alpha, z1, restarts) + (0.0 if z2 is None else _rdp(alpha, z2, differences))
    conversion = math.log(1.0 / delta) / (alpha - 1) if alpha > 1 else math.inf
    return Diff2Calibration(
        epsilon=epsilon,
        delta=delta,
        rounds=rounds,
        period=period,
        workers=workers,
        n_min=n_min,
        u=u,
        alpha=alpha,
        sigma1=sigma1,
        sigma2=sigma2,
        restart_rounds=restarts,
        difference_rounds=differences,
        z1=z1,
        z2=z2,
        rdp_total=rdp_total,
        epsilon_closed_form=rdp_total + conversion,
    )


def dp_sgd_noise_multiplier(
    epsilon: float, delta: float, sample_rate: float, steps: int, *, tol: float = 1e-6
) -> float:
    """Smallest noise multiplier ``z`` of DP-SGD within ``(epsilon, delta)``.

    ``steps`` releases of a Poisson-subsampled Gaussian (rate ``sample_rate``, noise std
    ``z C`` on the sum of per-sample gradients clipped at ``C``), accounted with
    dp-accounting's RDP accountant (Mironov 2017) under add/remove-one adjacency.

    Parameters
    ----------
    epsilon, delta
        The budget (``epsilon = inf``: returns ``0.0``, no noise).
    sample_rate
        Poisson rate ``q`` in ``(0, 1]``.
    steps
        Noisy releases (``>= 1``).
    tol
        Absolute tolerance on ``z``.

    Returns
    -------
    float
        ``z`` with ``epsilon_spent([GaussianRounds(z, steps, q)], delta) <= epsilon``.

    Raises
    ------
    ConfigError
        When no ``z`` below about ``2^31`` reaches the budget, or the accountant's figure
        at the found ``z`` is far below the target (numerical breakdown of the
        subsampled RDP at huge ``z``, which dp-accounting reports as epsilon 0).
    """
    epsilon = epsilon_value(epsilon, FIELDS["epsilon"])
    delta = delta_value(delta, FIELDS["delta"])
    q = in_range(sample_rate, FIELDS["sample_rate"], 0.0, 1.0, open_low=True)
    steps = count_value(steps, FIELDS["steps"])
    if math.isinf(epsilon):
        return 0.0
    return _calibrated_noise_multiplier(float(epsilon), float(delta), float(q), steps, tol)


@functools.lru_cache(maxsize=256)
def _calibrated_noise_multiplier(
    epsilon: float, delta: float, q: float, steps: int, tol: float
) -> float:
    """:func:`dp_sgd_noise_multiplier` on checked arguments, remembered per process: a
    sweep's cells that differ only in the clip or the step (a grid, the halving of a
    learning rate) share one search (about a second each)."""
    dpa = dp_accounting()

    def dp_event_of(z: float) -> object:
        gauss = dpa.GaussianDpEvent(z)
        one = gauss if q == 1.0 else dpa.PoissonSampledDpEvent(q, gauss)
        return dpa.SelfComposedDpEvent(one, steps)

    def make_event(z: float) -> object:
        return dp_event_of(z) if z > 0 else dpa.NonPrivateDpEvent()

    unreachable = ConfigError(
        f"{FIELDS['epsilon']}: epsilon {epsilon:g} at delta {delta:g} is unreachable for "
        f"{steps} DP-SGD steps at sample rate {q:g} with the RDP accountant (no noise "
        f"multiplier up to 2^31 reaches it reliably). Fix: raise {FIELDS['epsilon']} or "
        f"{FIELDS['delta']}, or take fewer steps"
    )
    try:
        z = dpa.calibrate_dp_mechanism(dpa.rdp.RdpAccountant, make_event, epsilon, delta, tol=tol)
    except (dpa.mechanism_calibration.NoBracketIntervalFoundError, ValueError) as err:
        raise unreachable from err
    z = float(z)
    # epsilon(z) is continuous, so at the root it is ~ the target. Far below it means the
    # search stopped at a jump: dp-accounting returns 0 when cancellation makes a
    # subsampled RDP value negative (huge z), not a real guarantee.
    if epsilon_spent([GaussianRounds(z, steps, q)], delta) < 0.5 * epsilon:
        raise unreachable
    return z

"""A statistical lower bound on epsilon from a distinguisher's errors (privacy audits).

Hypothesis-testing view of differential privacy (Kairouz, Oh & Viswanath, ICML 2015,
Theorem 2.1): a mechanism ``M`` is ``(epsilon, delta)``-DP for neighbours ``D, D'``
only if every test that says "``D``" on some outputs has error rates

    FPR = P[says D | D'],   FNR = P[says D' | D]

with ``FPR + e^eps FNR >= 1 - delta`` and ``FNR + e^eps FPR >= 1 - delta``, hence

    eps >= max( ln((1 - delta - FNR) / FPR),  ln((1 - delta - FPR) / FNR) ).

Auditing (Jagielski, Ullman & Oprea, NeurIPS 2020; Nasr, Song, Thakurta, Papernot &
Carlini, IEEE S&P 2021) runs the mechanism many times on ``D`` and on ``D'``, counts the
test's errors, replaces the rates by Clopper–Pearson upper bounds and gets a lower
bound on the mechanism's true epsilon that holds with probability ``1 - alpha``.

Here :func:`clopper_pearson_upper` is the upper end of the *two-sided* exact interval
at confidence ``1 - alpha``, i.e. a one-sided bound at ``1 - alpha/2``; the FPR and the
FNR bounds then hold together with probability at least ``1 - alpha`` (union bound).
With no error at all among ``n`` trials the bound is ``1 - (alpha/2)^(1/n)``, about
``3.69 / n`` at ``alpha = 0.05``, so ``n`` evaluation trials per world can certify at
most ``ln(n / 3.69)`` (:func:`resolution`): an audit cannot see an epsilon above its
resolution, however leaky the mechanism.

The test is a threshold on a scalar statistic (larger on ``D``): "``D``" when
``s > t``. :func:`threshold_audit` picks ``t`` on the first half of each world's
trials (the largest bound there) and evaluates it on the other half, so the choice
does not bias the reported bound.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fedopt.errors import ConfigError
from fedopt.privacy.checks import count_value, delta_value, in_range

ALPHA = 0.05
"""Default: the bound holds with probability 95 %."""


def _alpha(alpha: float) -> float:
    """``alpha`` in ``(0, 1)``, else a :class:`~fedopt.errors.ConfigError`."""
    out = in_range(alpha, "alpha", 0.0, 1.0, open_low=True, fix="use e.g. 0.05")
    if out == 1.0:
        raise ConfigError(f"alpha: must be a number in (0, 1), got {alpha!r}. Fix: use e.g. 0.05")
    return out


def clopper_pearson_upper(errors: Any, trials: int, alpha: float = ALPHA) -> Any:
    """Upper end of the two-sided Clopper–Pearson interval for a binomial rate.

    ``Beta(1 - alpha/2; k + 1, n - k)`` for ``k < n`` errors among ``n`` trials, and
    ``1`` for ``k = n`` (Clopper & Pearson, Biometrika 1934).

    Parameters
    ----------
    errors
        ``k``: an integer or an integer array, ``0 <= k <= n``.
    trials
        ``n >= 1``.
    alpha
        ``1 - alpha`` is the interval's confidence.

    Returns
    -------
    float or numpy.ndarray
        Like ``errors``.
    """
    from scipy.stats import beta

    n = count_value(trials, "trials")
    a = _alpha(alpha)
    k = np.asarray(errors)
    if k.dtype.kind not in "iu" or bool(((k < 0) | (k > n)).any()):
        raise ValueError(f"errors: expected integers in [0, {n}], got {errors!r}")
    below = k < n
    safe = np.where(below, k, 0)
    upper = np.where(below, beta.ppf(1.0 - a / 2.0, safe + 1, n - safe), 1.0)
    return float(upper) if upper.ndim == 0 else upper


def epsilon_from_rates(fpr: Any, fnr: Any, delta: float) -> Any:
    """``max(0, ln((1 - delta - FNR)/FPR), ln((1 - delta - FPR)/FNR))`` (Kairouz et al.).

    A term whose numerator is ``<= 0`` gives nothing; a zero rate under a positive
    numerator gives ``inf`` (only raw rates can be zero: Clopper–Pearson bounds are not).
    Works elementwise on arrays.
    """
    d = delta_value(delta, "delta")
    fpr = np.asarray(fpr, dtype=np.float64)
    fnr = np.asarray(fnr, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        one = _log_ratio(1.0 - d - fnr, fpr)
        two = _log_ratio(1.0 - d - fpr, fnr)
    out = np.maximum(0.0, np.maximum(one, two))
    return float(out) if out.ndim == 0 else out


def _log_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    ratio = np.where(num > 0, num / np.where(den > 0, den, 1.0), 0.0)
    ratio = np.where((num > 0) & (den <= 0), np.inf, ratio)
    return np.where(ratio > 0, np.log(np.where(ratio > 0, ratio, 1.0)), -np.inf)


def epsilon_lower_bound(
    false_positives: Any,
    false_negatives: Any,
    trials_out: int,
    trials_in: int,
    delta: float,
    alpha: float = ALPHA,
) -> Any:
    """The audit's bound: :func:`epsilon_from_rates` of the Clopper–Pearson upper bounds.

    ``false_positives`` among ``trials_out`` runs on ``D'`` and ``false_negatives`` among
    ``trials_in`` runs on ``D``; holds with probability at least ``1 - alpha``.
    """
    fpr = clopper_pearson_upper(false_positives, trials_out, alpha)
    fnr = clopper_pearson_upper(false_negatives, trials_in, alpha)
    return epsilon_from_rates(fpr, fnr, delta)


def resolution(trials: int, delta: float, alpha: float = ALPHA) -> float:
    """The largest bound ``trials`` evaluation runs per world can give (no error at all).

    About ``ln(trials / 3.69)`` at ``alpha = 0.05``.
    """
    return float(epsilon_lower_bound(0, 0, trials, trials, delta, alpha))


@dataclass(frozen=True)
class ThresholdTest:
    """A threshold test ("``D``" when ``s > threshold``) and its bound on held-out trials.

    Rates and counts are those of the evaluation halves (``trials_in``, ``trials_out``
    runs); ``selection_epsilon`` is the bound the threshold reached on the selection
    halves (optimistic: the threshold was chosen there).
    """

    threshold: float
    trials_in: int
    trials_out: int
    false_positives: int
    false_negatives: int
    fpr: float
    fnr: float
    fpr_upper: float
    fnr_upper: float
    epsilon_lb: float
    selection_epsilon: float
    resolution: float
    alpha: float
    delta: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def _errors_at(s_in: np.ndarray, s_out: np.ndarray, t: np.ndarray) -> tuple[Any, Any]:
    """``(#(s_out > t), #(s_in <= t))`` for every threshold in ``t``."""
    s_in, s_out = np.sort(s_in), np.sort(s_out)
    fp = len(s_out) - np.searchsorted(s_out, t, side="right")
    fn = np.searchsorted(s_in, t, side="right")
    return fp, fn


def best_threshold(
    s_in: np.ndarray, s_out: np.ndarray, delta: float, alpha: float = ALPHA
) -> tuple[float, float]:
    """The threshold (one of the observed values, or ``-inf``) with the largest bound.

    Returns ``(threshold, bound)``; ties go to the smallest threshold.
    """
    s_in = np.asarray(s_in, dtype=np.float64)
    s_out = np.asarray(s_out, dtype=np.float64)
    cand = np.concatenate([[-np.inf], np.unique(np.concatenate([s_in, s_out]))])
    fp, fn = _errors_at(s_in, s_out, cand)
    eps = np.atleast_1d(epsilon_lower_bound(fp, fn, len(s_out), len(s_in), delta, alpha))
    best = int(np.argmax(eps))
    return float(cand[best]), float(eps[best])


def threshold_audit(s_in: Any, s_out: Any, delta: float, alpha: float = ALPHA) -> ThresholdTest:
    """Choose the threshold on the first half of each world's trials, bound on the rest.

    Parameters
    ----------
    s_in, s_out
        The statistic of every trial on ``D`` (canary in) and on ``D'``, in trial order;
        at least 2 each. The first ``floor(N/2)`` of each select, the rest evaluate.
    delta
        The ``delta`` of the claim being audited.
    alpha
        The bound holds with probability at least ``1 - alpha``.
    """
    a = np.asarray(s_in, dtype=np.float64).reshape(-1)
    b = np.asarray(s_out, dtype=np.float64).reshape(-1)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least 2 trials per world, got {len(a)} and {len(b)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("the statistic is not finite in every trial (a diverged run?)")
    ha, hb = len(a) // 2, len(b) // 2
    t, sel = best_threshold(a[:ha], b[:hb], delta, alpha)
    ea, eb = a[ha:], b[hb:]
    fp, fn = _errors_at(ea, eb, np.array([t]))
    fp_k, fn_k = int(fp[0]), int(fn[0])
    n_in, n_out = len(ea), len(eb)
    fpr_ub = float(clopper_pearson_upper(fp_k, n_out, alpha))
    fnr_ub = float(clopper_pearson_upper(fn_k, n_in, alpha))
    return ThresholdTest(
        threshold=t,
        trials_in=n_in,
        trials_out=n_out,
        false_positives=fp_k,
        false_negatives=fn_k,
        fpr=fp_k / n_out,
        fnr=fn_k / n_in,
        fpr_upper=fpr_ub,
        fnr_upper=fnr_ub,
        epsilon_lb=float(epsilon_from_rates(fpr_ub, fnr_ub, delta)),
        selection_epsilon=sel,
        resolution=resolution(min(n_in, n_out), delta, alpha),
        alpha=float(alpha),
        delta=float(delta),
    )


def finite_or_none(x: float) -> float | None:
    """``x``, or None when it is not finite (for JSON)."""
    return x if math.isfinite(x) else None

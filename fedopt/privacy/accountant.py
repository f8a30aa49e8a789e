"""Privacy spent by composed Gaussian mechanisms, measured with Google's dp-accounting.

A mechanism is described by :class:`GaussianRounds` ``(z, n, q)``: ``n`` releases of a
Gaussian mechanism whose noise standard deviation is ``z`` times the L2 sensitivity of
what it releases, each on a Poisson subsample of rate ``q`` (``q = 1``: the full data).
:func:`epsilon_spent` composes the parts as the dp-accounting event

    ComposedDpEvent([SelfComposedDpEvent(GaussianDpEvent(z_k), n_k), ...])

(``PoissonSampledDpEvent(q_k, GaussianDpEvent(z_k))`` in place of the Gaussian when
``q_k < 1``) and returns the epsilon at ``delta`` of either accountant:

``"rdp"``
    Rényi DP (Mironov, CSF 2017): an unsampled Gaussian is ``(alpha, alpha / (2 z^2))``-RDP
    at every order ``alpha``, RDP adds up over releases, and dp-accounting converts the
    total to ``(epsilon, delta)`` at the best of its 156 default orders (1.25 ... 1024).
    Milliseconds per call: the ledger's figure at every evaluation.
``"pld"``
    Privacy loss distributions, composed by FFT; tighter (about 8 % below RDP for the
    DIFF2 configurations of the spec) and still an upper bound: dp-accounting
    discretises pessimistically. :data:`PLD_INTERVAL` = ``1e-3`` (the library's default
    is ``1e-4``) keeps one call near 0.02 s for 2000 rounds; the coarser grid changed the
    DIFF2 figures by < 1e-4 and overstated a Poisson-subsampled one (q = 0.01, 10 000
    steps) by 1.5 %.

Adjacency. For a Poisson-subsampled part the accountant's relation is add/remove-one (the
DP-SGD convention). For an unsampled Gaussian the loss distribution depends only on
``z``, so the neighbouring relation lives entirely in how the caller computed ``z``:
DIFF2's ``z = sigma * P * n_min / 2`` uses the replace-one sensitivity ``2 C / (P n_min)``
of the aggregate (Murata & Suzuki, ICML 2023), and dp-accounting's ``REPLACE_ONE`` RDP
accountant gives the same numbers.

Conventions: parts with ``count == 0`` or ``sample_rate == 0`` are skipped, an infinite
``z`` releases nothing and costs nothing, no part at all costs ``0.0``, and ``z == 0``
(no noise) costs ``inf``.

dp-accounting is an optional dependency, installed without its dependencies (a plain
install downgrades attrs; at run time it needs only numpy, scipy, attrs and absl-py)::

    pip install --no-deps dp-accounting==0.6.0 absl-py
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fedopt.errors import ConfigError
from fedopt.privacy.checks import count_value, delta_value, epsilon_value, in_range

PLD_INTERVAL = 1e-3
"""``value_discretization_interval`` of the PLD accountant (see the module docstring)."""

MISSING = (
    "DIFF2/DP accounting needs dp-accounting: pip install --no-deps dp-accounting==0.6.0 absl-py"
)
"""The message when dp-accounting cannot be imported."""

Method = Literal["rdp", "pld"]


def dp_accounting() -> Any:
    """The ``dp_accounting`` package, or a :class:`ConfigError` saying how to install it."""
    try:
        import dp_accounting as dpa
        from dp_accounting import pld, rdp  # noqa: F401  (the accountants live here)
    except ImportError as err:
        raise ConfigError(f"{MISSING} ({err})") from err
    return dpa


@dataclass(frozen=True)
class GaussianRounds:
    """``count`` releases of a Gaussian mechanism with noise multiplier ``noise_multiplier``.

    Parameters
    ----------
    noise_multiplier
        ``z`` = noise standard deviation / L2 sensitivity of the released quantity
        (``>= 0``; ``inf`` releases nothing).
    count
        Releases (``>= 0``).
    sample_rate
        Poisson sampling rate ``q`` of each release, in ``[0, 1]`` (``1``: no sampling).
    """

    noise_multiplier: float
    count: int
    sample_rate: float = 1.0

    def __post_init__(self) -> None:
        z = self.noise_multiplier
        if isinstance(z, bool) or not isinstance(z, numbers.Real) or math.isnan(z) or z < 0:
            raise ConfigError(
                f"noise_multiplier: must be a number >= 0 (inf: no release), got {z!r}. "
                "Fix: give the noise std divided by the L2 sensitivity"
            )
        object.__setattr__(self, "noise_multiplier", float(z))
        object.__setattr__(self, "count", count_value(self.count, "count", low=0))
        q = in_range(self.sample_rate, "sample_rate", 0.0, 1.0)
        object.__setattr__(self, "sample_rate", q)

    @property
    def free(self) -> bool:
        """True when the part costs nothing (no release, no sampling or infinite noise)."""
        return self.count == 0 or self.sample_rate == 0.0 or math.isinf(self.noise_multiplier)


Mechanism = GaussianRounds
"""The mechanism description :func:`epsilon_spent` composes."""


def dp_event(parts: Sequence[GaussianRounds]) -> Any:
    """The dp-accounting ``ComposedDpEvent`` of the costly parts (see the module docstring)."""
    dpa = dp_accounting()
    events = []
    for part in parts:
        if part.free:
            continue
        event = dpa.GaussianDpEvent(part.noise_multiplier)
        if part.sample_rate < 1.0:
            event = dpa.PoissonSampledDpEvent(part.sample_rate, event)
        events.append(dpa.SelfComposedDpEvent(event, part.count))
    return dpa.ComposedDpEvent(events)


def epsilon_spent(
    parts: Sequence[GaussianRounds],
    delta: float,
    method: Method = "rdp",
    *,
    pld_interval: float = PLD_INTERVAL,
) -> float:
    """Epsilon at ``delta`` of the composition of ``parts``.

    Parameters
    ----------
    parts
        The mechanisms released so far (any order; composition commutes).
    delta
        Target delta, in ``(0, 1)``.
    method
        ``"rdp"`` (Mironov 2017, dp-accounting's ``RdpAccountant``) or ``"pld"``
        (``PLDAccountant`` with ``value_discretization_interval = pld_interval``).
    pld_interval
        Discretisation of the PLD accountant (smaller: tighter and slower).

    Returns
    -------
    float
        ``0.0`` when every part is free, ``inf`` when a costly part has no noise.
    """
    delta = delta_value(delta)
    if method not in ("rdp", "pld"):
        raise ConfigError(f"method: must be 'rdp' or 'pld', got {method!r}. Fix: pick one")
    costly = [part for part in parts if not part.free]
    if not costly:
        return 0.0
    if any(part.noise_multiplier == 0.0 for part in costly):
        return math.inf
    dpa = dp_accounting()
    if method == "rdp":
        accountant = dpa.rdp.RdpAccountant()
    else:
        interval = in_range(pld_interval, "pld_interval", 0.0, 1.0, open_low=True)
        accountant = dpa.pld.PLDAccountant(value_discretization_interval=interval)
    return float(accountant.compose(dp_event(costly)).get_epsilon(delta))


def check_budget(
    parts: Sequence[GaussianRounds],
    epsilon: float,
    delta: float,
    field: str = "algorithm.epsilon",
) -> float:
    """Refuse ``parts`` whose RDP epsilon at ``delta`` exceeds the budget ``epsilon``.

    Returns
    -------
    float
        The RDP epsilon spent (``<= epsilon``).

    Raises
    ------
    ConfigError
        Naming the spent and the budgeted epsilon and the fixes.
    """
    epsilon = epsilon_value(epsilon, field)
    spent = epsilon_spent(parts, delta, "rdp")
    if spent > epsilon:
        releases = sum(part.count for part in parts if not part.free)
        raise ConfigError(
            f"{field}: the planned {releases} noisy releases spend epsilon {spent:.6g} at "
            f"delta {delta:g} (RDP accountant), over the budget {epsilon:g}. Fix: add more "
            f"noise (a larger noise multiplier), run fewer rounds, or raise {field}"
        )
    return spent

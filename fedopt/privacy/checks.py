"""Input checks shared by the privacy modules (calibration, accountant, ledger).

Every check raises :class:`~fedopt.errors.ConfigError` naming the field, the value and
the fix, and returns the value as a plain ``int`` or ``float``.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

from fedopt.errors import ConfigError


def _real(value: Any, field: str, want: str, fix: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{field}: must be {want}, got {value!r}. Fix: {fix}")
    out = float(value)
    if math.isnan(out):
        raise ConfigError(f"{field}: must be {want}, got {value!r}. Fix: {fix}")
    return out


def epsilon_value(value: Any, field: str = "algorithm.epsilon") -> float:
    """A privacy budget ``epsilon > 0``; ``inf`` is allowed and means no privacy."""
    want = "a number > 0 (inf: no privacy)"
    fix = "set a positive budget, e.g. 3.0"
    out = _real(value, field, want, fix)
    if out <= 0:
        raise ConfigError(f"{field}: must be {want}, got {value!r}. Fix: {fix}")
    return out


def delta_value(value: Any, field: str = "algorithm.delta") -> float:
    """A failure probability ``0 < delta < 1``."""
    want = "a number in (0, 1)"
    fix = "use a delta well below 1/n, e.g. 1e-5"
    out = _real(value, field, want, fix)
    if not 0.0 < out < 1.0:
        raise ConfigError(f"{field}: must be {want}, got {value!r}. Fix: {fix}")
    return out


def count_value(value: Any, field: str, low: int = 1) -> int:
    """An integer ``>= low`` (bools refused)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        out = operator.index(value)
    except TypeError:
        out = None
    if out is None or out < low:
        raise ConfigError(
            f"{field}: must be an integer >= {low}, got {value!r}. Fix: give an integer >= {low}"
        )
    return int(out)


def in_range(
    value: Any, field: str, low: float, high: float, *, open_low: bool = False, fix: str = ""
) -> float:
    """A number in ``[low, high]`` (``(low, high]`` with ``open_low``)."""
    want = f"a number in {'(' if open_low else '['}{low:g}, {high:g}]"
    fix = fix or "give a number in that range"
    out = _real(value, field, want, fix)
    below = out <= low if open_low else out < low
    if below or out > high:
        raise ConfigError(f"{field}: must be {want}, got {value!r}. Fix: {fix}")
    return out

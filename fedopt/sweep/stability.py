"""When a run "succeeds": the stability criterion of DIFF2's step-size halving.

DIFF2's tuning protocol (Murata and Suzuki, ICML 2023; spec ``diff2.md`` §4.6) tries
step sizes ``1, 1/2, ..., 1/2**9`` in turn and keeps the first whose run succeeds: no
NaN, and the train loss never above 1.05 times its running minimum at 5 consecutive
evaluations. With ``m_t = min_{s <= t} loss_s`` (over evaluations ``s``, the record of
round 0 included), evaluation ``t`` is *above* when

    loss_t - m_t > (tolerance - 1) * |m_t|

(``loss_t > tolerance * m_t`` for a non-negative loss; the absolute value keeps the test
meaningful for a loss that can be negative). A run is unstable when ``window``
consecutive evaluations are above, or when any loss is NaN or infinite, or when the run
stopped as diverged (``summary.json`` ``stop_reason``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Verdict:
    """Whether a run is stable, and if not, why (``reason``: one readable phrase)."""

    stable: bool
    reason: str


def stability(
    values: list[float | None],
    rounds: list[int] | None = None,
    *,
    window: int = 5,
    tolerance: float = 1.05,
) -> Verdict:
    """Judge a sequence of evaluations by the DIFF2 criterion (module docstring).

    Parameters
    ----------
    values
        The metric at each evaluation (``None``: not finite).
    rounds
        The round of each evaluation, for the message (default: the index).
    window
        How many consecutive evaluations above ``tolerance x`` the running minimum make
        the run unstable.
    tolerance
        The factor on the running minimum.
    """
    rounds = list(range(len(values))) if rounds is None else rounds
    low = math.inf
    streak = 0
    for i, v in enumerate(values):
        if v is None or not math.isfinite(v):
            return Verdict(False, f"not finite ({v}) at round {rounds[i]}")
        low = min(low, v)
        if v - low > (tolerance - 1.0) * abs(low):
            streak += 1
            if streak >= window:
                first = rounds[i - window + 1]
                return Verdict(
                    False,
                    f"above {tolerance:g} x its running minimum ({low:.6g}) at {window} "
                    f"consecutive evaluations (rounds {first}-{rounds[i]})",
                )
        else:
            streak = 0
    if not values:
        return Verdict(False, "no evaluations")
    return Verdict(True, f"stable ({len(values)} evaluations)")


def run_stability(
    summary: dict[str, Any],
    records: list[dict[str, Any]],
    *,
    metric: str = "loss",
    window: int = 5,
    tolerance: float = 1.05,
) -> Verdict:
    """:func:`stability` of one run directory's records, failing a diverged run."""
    if summary.get("stop_reason") == "diverged":
        d = summary.get("diverged") or {}
        return Verdict(False, f"diverged at round {d.get('round', '?')}")
    values = []
    for rec in records:
        v = rec.get(metric)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        values.append(float(v) if ok else None)
    if records and all(metric not in r for r in records):
        return Verdict(False, f"the records have no {metric!r}")
    verdict = stability(
        values,
        [int(r.get("round", i)) for i, r in enumerate(records)],
        window=window,
        tolerance=tolerance,
    )
    return Verdict(verdict.stable, f"{metric} {verdict.reason}")

"""Summary metrics of a run directory, named by short expressions.

A sweep table, a selection rule and a halving criterion name what they compare with one
of these forms:

``KEY``
    A value of ``summary.json``; nested values by dotted path
    (``final_loss``, ``bytes_total``, ``by_kind.model.messages``, ``derived.lr``).
``min(KEY)``, ``max(KEY)``, ``mean(KEY)``, ``first(KEY)``, ``last(KEY)``
    Over the records of ``metrics.jsonl`` (finite values only): ``min(loss)`` is the
    lowest train loss over training (the DIFF2 selection rule).
``X@Y<=V`` (or ``X@Y>=V``)
    ``X`` at the first record where ``Y <= V``: ``gradients_total@relative_sq_distance<=1e-6``
    is the gradients spent to reach 1e-6 (the DADAO tables); missing when never reached.

A metric that a run does not have is ``None`` (shown as ``-``), never an error: some
cells of a grid have no test accuracy, and a diverged run has no final figures.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from fedopt.errors import ConfigError

_KEY = r"[A-Za-z_][A-Za-z0-9_.:]*"
_REDUCE = re.compile(rf"^(min|max|mean|first|last)\(\s*({_KEY})\s*\)$")
_AT = re.compile(rf"^({_KEY})\s*@\s*({_KEY})\s*(<=|>=)\s*(\S+)$")
_PLAIN = re.compile(rf"^{_KEY}$")


@dataclass(frozen=True)
class Metric:
    """A parsed metric expression (see the module docstring)."""

    text: str
    kind: str  # "summary", "reduce" or "at"
    key: str
    reduce: str | None = None
    cond_key: str | None = None
    cond_op: str | None = None
    threshold: float | None = None

    @property
    def needs_records(self) -> bool:
        """Whether it reads ``metrics.jsonl`` (not only ``summary.json``)."""
        return self.kind != "summary"


def parse_metric(text: str) -> Metric:
    """Parse a metric expression.

    Raises
    ------
    ConfigError
        Naming the expression and the three accepted forms.
    """
    s = str(text).strip()
    m = _REDUCE.match(s)
    if m:
        return Metric(s, "reduce", m.group(2), reduce=m.group(1))
    m = _AT.match(s)
    if m:
        try:
            threshold = float(m.group(4))
        except ValueError:
            threshold = math.nan
        if not math.isfinite(threshold):
            raise ConfigError(
                f"metric {text!r}: the threshold {m.group(4)!r} is not a finite number"
            )
        return Metric(
            s, "at", m.group(1), cond_key=m.group(2), cond_op=m.group(3), threshold=threshold
        )
    if _PLAIN.match(s):
        return Metric(s, "summary", s)
    raise ConfigError(
        f"metric {text!r} is not understood; write a summary.json key (final_loss), a "
        "reduction over the records (min(loss), max(test_accuracy), mean(..), first(..), "
        "last(..)) or X@Y<=V (gradients_total@relative_sq_distance<=1e-6)"
    )


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def lookup(data: dict[str, Any], dotted: str) -> Any:
    """``data[a][b]...`` for ``"a.b"`` (a key containing dots is tried whole first)."""
    if dotted in data:
        return data[dotted]
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def evaluate(
    metric: Metric | str, summary: dict[str, Any], records: list[dict[str, Any]] | None
) -> float | None:
    """The value of ``metric`` for one run (``None`` when the run does not have it).

    Parameters
    ----------
    metric
        A parsed metric or its text.
    summary
        The run's ``summary.json``.
    records
        The run's ``metrics.jsonl`` records (needed unless the metric reads the summary).
    """
    m = parse_metric(metric) if isinstance(metric, str) else metric
    if m.kind == "summary":
        value = lookup(summary, m.key)
        if isinstance(value, bool):
            return float(value)
        return float(value) if _finite(value) else None
    recs = records or []
    if m.kind == "reduce":
        values = [float(r[m.key]) for r in recs if _finite(r.get(m.key))]
        if not values:
            return None
        if m.reduce == "min":
            return min(values)
        if m.reduce == "max":
            return max(values)
        if m.reduce == "mean":
            return math.fsum(values) / len(values)
        return values[0] if m.reduce == "first" else values[-1]
    assert m.threshold is not None
    for rec in recs:
        y = rec.get(m.cond_key or "")
        if not _finite(y):
            continue
        hit = y <= m.threshold if m.cond_op == "<=" else y >= m.threshold
        if hit:
            x = _x_value(rec, m.key)
            return float(x) if _finite(x) else None
    return None


def _x_value(rec: dict[str, Any], key: str) -> Any:
    """A record's ``key``; round records count ``messages_total / 2`` as communications."""
    if key in rec:
        return rec[key]
    if key == "communications_total" and _finite(rec.get("messages_total")):
        return rec["messages_total"] / 2
    return None

"""The shared base of every experiment section, and the numeric limits of the file.

Every section of an experiment (``topology``, ``algorithm``, ``problem``, ``network``,
``compute``, ``faults``, ``byzantine``, ``stop``, ``eval``, ``output``, ``engine``, and
the models nested in them) derives from :class:`Section`, which makes it

* **frozen** and **closed**: unknown keys are refused (a subclass may opt in to extra
  keys, as the attack spec does, and its extra values are checked like the rest);
* **finite**: every float must be a finite number (``nan``, ``inf`` and ``-inf`` are
  refused with ``<field>: Input should be a finite number (got nan)``). A field where
  infinity has a meaning opts in with ``Field(..., allow_inf_nan=True)`` and says so in
  its description (``network.bandwidth_Bps: inf`` is a link without transmission
  delay); NaN is refused there too;
* **int64-safe**: every integer must fit a signed 64-bit word, so nothing that reaches
  a tensor, a counter or an RNG key wraps around. Fields with a physical meaning carry
  tighter bounds (:data:`COUNT_MAX` for node counts, samples, steps and header sizes).

The same checks apply inside free-form values (``topology.params``, attack parameters,
``aggregator_params``): any float nested there must be finite and any integer must fit
int64.

This module imports nothing from fedopt, so every section module can use it.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    PlainValidator,
    ValidationInfo,
    field_validator,
    model_validator,
)

INT64_MAX = 2**63 - 1
"""Largest signed 64-bit integer: the width of every tensor counter."""

COUNT_MAX = 2**31 - 1
"""Upper bound of counts with a physical meaning (nodes, samples, steps, rounds, bytes of a
header). It keeps the products the engine forms within int64: edge keys ``src * n + dst``
(``n^2 < 2^62``), RNG step counters ``round * local_steps + step`` and minibatch draws
(:func:`fedopt.rng.randint` needs ``high < 2^31``)."""

DIM_MAX = 2**40
"""Upper bound of a problem's ``dim`` (parameters per node). Sizes are exact Python
integers and the memory budget refuses any run whose tensors would not fit, long before
``n * dim`` could leave int64; the bound keeps message sizes (``dim * 8 + header``)
far inside it too."""

EVENTS_MAX = 2**53
"""Upper bound of event counts (exact as float64, far beyond any simulated run)."""

MEMORY_BUDGET_MAX_GB = float(2**33)
"""Upper bound of ``engine.memory_budget_gb`` (2^33 GiB = 2^63 bytes): every size the
budget admits fits int64."""


def nonfinite(value: Any, where: str = "") -> str | None:
    """Path (``""`` for the value itself) of the first non-finite float or non-int64
    integer inside ``value`` (lists, tuples and dicts are searched), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else where
    if isinstance(value, int):
        return None if -INT64_MAX - 1 <= value <= INT64_MAX else where
    if isinstance(value, dict):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{where}[{i}]" if where else f"[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for path, v in items:
        bad = nonfinite(v, path)
        if bad is not None:
            return bad
    return None


def _problem(value: Any, shown: bool = True) -> str:
    got = f", got {value!r}" if shown else ""
    if isinstance(value, float):
        return f"must be a finite number{got}"
    return f"must fit a signed 64-bit integer (|value| <= 2**63 - 1){got}"


def _pick(value: Any, path: str) -> Any:
    """The element of ``value`` at ``path`` as written by :func:`nonfinite`."""
    for part in path.replace("[", ".[").split("."):
        if not part:
            continue
        if part.startswith("["):
            value = value[int(part[1:-1])]
        else:
            value = next(v for k, v in value.items() if str(k) == part)
    return value


def _finite_number(value: Any) -> int | float:
    """A plain int or finite float (for free-form numeric mappings)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number, got {value!r}")
    if nonfinite(value) is not None:
        raise ValueError(_problem(value, shown=False))
    return value


Number = Annotated[int | float, PlainValidator(_finite_number)]
"""An int (kept as an int) or a finite float: one readable error per bad value."""


class Section(BaseModel):
    """Base of every experiment section: frozen, closed, finite, int64-safe (module doc)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _int64_and_nested_finite(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, float):  # a typed float: pydantic applied allow_inf_nan
            return value
        bad = nonfinite(value)
        if bad is None:
            return value
        if bad == "":  # the formatter adds the value
            raise ValueError(_problem(value, shown=False))
        raise ValueError(f"{bad} {_problem(_pick(value, bad))}")

    @model_validator(mode="after")
    def _extra_finite(self) -> Any:
        """Check the values of extra keys (sections that allow them) like the fields."""
        for key, value in (self.model_extra or {}).items():
            bad = nonfinite(value)
            if bad is not None:
                where = key if bad == "" else f"{key}.{bad}"
                raise ValueError(f"{where} {_problem(_pick(value, bad) if bad else value)}")
        return self

"""Counts of local work by kind: gradients, per-sample gradients, function queries, ...

Every unit of local work an algorithm does is charged as a count of one *kind*
(:meth:`fedopt.engine.comm.Comm.compute`), which also costs simulated time
(``compute.cost_s``, see :mod:`fedopt.network.compute_time`). The built-in kinds are

* ``gradients``: stochastic or full local gradients, one per node-step (the only kind
  before counters existed; ``compute.step_time_s`` is its cost);
* ``per_sample_gradients``: gradients of single samples (DIFF2's and DP methods' cost);
* ``queries``: function-value queries of zeroth-order methods (FZooS's x-axis);
* ``forwards`` and ``backwards``: forward and backward passes of a model (Ferret);
* ``merges``: model merges (DIMAT's aligned averages).

A plug-in adds its own kinds with :func:`register_kind` (at import, before the
experiment is validated). Counts are exact Python integers, so merging the counters of
several workers gives the same totals whatever the placement; kinds are listed in
:func:`canonical_kinds` order (built-ins first, then registered names sorted).
Records write ``<kind>_total`` for every kind with a non-zero count, and always
``gradients_total``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

BUILTIN_KINDS: tuple[str, ...] = (
    "gradients",
    "per_sample_gradients",
    "queries",
    "forwards",
    "backwards",
    "merges",
)
"""The kinds every run knows, in their canonical order."""

_EXTRA_KINDS: set[str] = set()
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def register_kind(name: str) -> None:
    """Make ``name`` a countable kind (plug-ins; idempotent).

    Raises
    ------
    ValueError
        The name is not lower-case letters, digits and underscores starting with a letter.
    """
    if not _NAME.match(name):
        raise ValueError(
            f"counter kind {name!r}: use lower-case letters, digits and '_' (e.g. 'hvp_calls')"
        )
    if name not in BUILTIN_KINDS:
        _EXTRA_KINDS.add(name)


def known_kinds() -> tuple[str, ...]:
    """Every kind a run may count, in canonical order."""
    return BUILTIN_KINDS + tuple(sorted(_EXTRA_KINDS))


def canonical_kinds(kinds: set[str] | frozenset[str] | list[str]) -> list[str]:
    """``kinds`` in canonical order: built-ins in :data:`BUILTIN_KINDS` order, then sorted."""
    rest = sorted(k for k in kinds if k not in BUILTIN_KINDS)
    return [k for k in BUILTIN_KINDS if k in kinds] + rest


def check_kind(name: str) -> str:
    """``name`` if it is a known kind; ValueError naming the known ones otherwise."""
    if name in BUILTIN_KINDS or name in _EXTRA_KINDS:
        return name
    raise ValueError(
        f"unknown counter kind {name!r}; known kinds: {', '.join(known_kinds())} "
        "(a plug-in adds one with fedopt.network.counters.register_kind)"
    )


class Counters:
    """Exact counts of work by kind, kept per worker and merged by the driver.

    Parameters
    ----------
    counts
        Initial ``kind -> count`` (every kind must be known, counts >= 0).

    Examples
    --------
    >>> c = Counters()
    >>> c.add("gradients", 12)
    >>> c.merge(Counters({"queries": 3})).to_record()
    {'gradients_total': 12, 'queries_total': 3}
    """

    __slots__ = ("_counts",)

    def __init__(self, counts: Mapping[str, int] | None = None) -> None:
        self._counts: dict[str, int] = {}
        for kind, n in (counts or {}).items():
            self.add(kind, n)

    def add(self, kind: str, n: int) -> None:
        """Count ``n`` more units of ``kind`` (``n >= 0``)."""
        check_kind(kind)
        n = int(n)
        if n < 0:
            raise ValueError(f"counter {kind!r}: cannot add a negative count ({n})")
        if n:
            self._counts[kind] = self._counts.get(kind, 0) + n

    def __getitem__(self, kind: str) -> int:
        """The count of ``kind`` (0 when never charged)."""
        return self._counts.get(kind, 0)

    def __iter__(self) -> Iterator[str]:
        """Kinds with a non-zero count, in canonical order."""
        return iter(canonical_kinds(list(self._counts)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Counters) and self._counts == other._counts

    def __repr__(self) -> str:
        return f"Counters({self.as_dict()!r})"

    def as_dict(self) -> dict[str, int]:
        """``kind -> count`` for the non-zero kinds, in canonical order."""
        return {k: self._counts[k] for k in self}

    def merge(self, other: Counters) -> Counters:
        """A new ``Counters`` holding the sums of both (neither operand changes)."""
        out = Counters()
        out._counts = dict(self._counts)
        for kind, n in other._counts.items():
            out._counts[kind] = out._counts.get(kind, 0) + n
        return out

    def to_record(self) -> dict[str, int]:
        """Record fields: ``gradients_total`` always, ``<kind>_total`` for non-zero kinds."""
        out = {"gradients_total": self["gradients"]}
        out.update({f"{k}_total": n for k, n in self.as_dict().items() if k != "gradients"})
        return out


def merge_counters(parts: list[Counters]) -> Counters:
    """Sum of every worker's counters (exact integers: any order gives the same)."""
    total = Counters()
    for part in parts:
        total = total.merge(part)
    return total

"""Ledgers: mergeable per-worker accounts an algorithm keeps (such as a privacy budget).

An algorithm keeps its ledgers in ``ctx.ledgers`` (name -> ledger), one set per worker,
and updates them as its rounds run. At every evaluation the driver merges the ledgers of
all workers in canonical order (workers sorted by their smallest hosted node id), and
writes each merged ledger's :meth:`Ledger.to_record` into the record under
``"ledgers"``; the last one goes to ``summary.json``'s ``"ledgers"``. Ledgers are part
of a worker's checkpoint.

For results that do not depend on placement (local engine = Ray engine), ``merge`` must
give the same value however the nodes are split: count with integers, combine with
``max``/``min``, or keep per-node entries and reduce them in node order in
``to_record``. ``merge`` returns a new ledger and leaves both operands unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Ledger(Protocol):
    """What a ledger offers the driver."""

    def merge(self, other: Any) -> Any:
        """The ledger of both workers' nodes (a new object; operands unchanged)."""
        ...

    def to_record(self) -> dict[str, Any]:
        """JSON-ready figures (numbers, strings, lists, dicts) for records and summary."""
        ...


def merge_ledgers(parts: Sequence[Mapping[str, Ledger]]) -> dict[str, Ledger]:
    """Merge each named ledger over ``parts`` (already in canonical worker order).

    A ledger some workers do not keep is merged over those that do, left to right.
    """
    merged: dict[str, Ledger] = {}
    for part in parts:
        for name, ledger in part.items():
            if not isinstance(ledger, Ledger):
                raise TypeError(
                    f"ledger {name!r}: {type(ledger).__name__} has no merge/to_record; "
                    "a ledger implements fedopt.engine.ledger.Ledger"
                )
            merged[name] = merged[name].merge(ledger) if name in merged else ledger
    return {name: merged[name] for name in sorted(merged)}

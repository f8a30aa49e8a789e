"""The one record maker: every schedule and engine assembles its records here.

A record (one line of ``metrics.jsonl``) holds, in this order:

1. ``round`` (round or event block), ``sim_time_s``, ``wall_time_s``;
2. the schedule's evaluation figures (``loss``, ``consensus_distance``, ``accuracy``,
   ``test_*``, ``distance_to_opt``, ``mean_sq_distance``, ``avg_model_*`` ...);
3. the schedule's own totals (``events_total``, ``communications_total`` for events);
4. the meter: ``messages_total``, ``bytes_total``, ``retransmissions_total`` (when any);
5. the counters: ``gradients_total`` always, ``<kind>_total`` for every other kind
   with a non-zero count (:mod:`fedopt.network.counters`);
6. ``relative_sq_distance`` (``mean_sq_distance`` over its value in the first record);
7. the algorithm's metrics (:meth:`~fedopt.algorithms.base.Algorithm.metrics`), each
   reduced over the nodes in node order;
8. ``ledgers``: ``name -> to_record()`` of each merged ledger (when the algorithm keeps
   some, :mod:`fedopt.engine.ledger`);
9. ``nonfinite_count`` and ``nonfinite_nodes`` when some reported model holds NaN or inf.

What each worker contributes beyond the evaluation is one :class:`Accounts`;
:func:`merge_accounts` merges them in canonical order (workers sorted by their smallest
hosted node id, metric rows by node id), so records are the same on every engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from fedopt.engine.ledger import Ledger, merge_ledgers
from fedopt.engine.reduce import canonical_sum
from fedopt.network.counters import Counters, merge_counters
from fedopt.network.meter import MeterTotals

NONFINITE_SHOWN = 8
"""How many ids of nodes with non-finite parameters a record names."""

REDUCTIONS = ("mean", "sum", "max", "min")
"""How an algorithm metric is reduced over the nodes (``Algorithm.metric_reductions``)."""


@dataclass
class Accounts:
    """One worker's counters, ledgers and per-node algorithm metrics.

    Attributes
    ----------
    first_node
        Smallest hosted node id (orders the workers canonically).
    counters
        Work counted by kind on this worker.
    ledgers
        ``name -> ledger`` kept by the algorithm on this worker (copies).
    node_ids
        ``[k]`` int64 global ids of the rows of ``metrics``.
    metrics
        ``name -> [k]`` float64 per-node values; NaN marks a node without a value.
    """

    first_node: int
    counters: Counters = field(default_factory=Counters)
    ledgers: dict[str, Ledger] = field(default_factory=dict)
    node_ids: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class MergedAccounts:
    """Every worker's :class:`Accounts` merged: what a record writes."""

    counters: Counters = field(default_factory=Counters)
    ledgers: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def reduce_metric(values: torch.Tensor, how: str, block: int) -> float | None:
    """``values`` (float64, node order) reduced by ``how``, NaN rows left out.

    ``mean`` and ``sum`` add in canonical blocks of ``block`` nodes
    (:func:`~fedopt.engine.reduce.canonical_sum`); None when no node has a value.
    """
    if how not in REDUCTIONS:
        raise ValueError(f"metric reduction {how!r}: use one of {', '.join(REDUCTIONS)}")
    v = values[~torch.isnan(values)]
    if len(v) == 0:
        return None
    if how == "max":
        return float(v.max())
    if how == "min":
        return float(v.min())
    total = float(canonical_sum(v, None, block))
    return total / len(v) if how == "mean" else total


def merge_accounts(
    parts: Sequence[Accounts], reductions: Mapping[str, str], block: int
) -> MergedAccounts:
    """Merge the workers' accounts in canonical order.

    Parameters
    ----------
    parts
        One :class:`Accounts` per worker, in any order.
    reductions
        ``metric name -> reduction`` (``mean`` when a name is not listed).
    block
        Canonical block size (``engine.chunk_size``).
    """
    ordered = sorted(parts, key=lambda a: a.first_node)
    merged = MergedAccounts(counters=merge_counters([a.counters for a in ordered]))
    ledgers = merge_ledgers([a.ledgers for a in ordered])
    merged.ledgers = {name: dict(ledger.to_record()) for name, ledger in ledgers.items()}
    names = sorted({name for a in ordered for name in a.metrics})
    if names:
        ids = torch.cat([a.node_ids.to(torch.int64) for a in ordered])
        order = torch.argsort(ids)
        for name in names:
            cols = []
            for a in ordered:
                v = a.metrics.get(name)
                cols.append(
                    torch.full((len(a.node_ids),), float("nan"), dtype=torch.float64)
                    if v is None
                    else v.detach().to("cpu", torch.float64).reshape(len(a.node_ids))
                )
            value = reduce_metric(torch.cat(cols)[order], reductions.get(name, "mean"), block)
            if value is not None:
                merged.metrics[name] = value
    return merged


def replay_records(
    records: list[dict[str, Any]],
    saved: Sequence[dict[str, Any]],
    on_record: Callable[[dict[str, Any]], None],
    on_restore: Callable[[list[dict[str, Any]]], None] | None,
) -> None:
    """Put a checkpoint's records back: into ``records``, then to the listener.

    ``on_restore`` receives them all at once (a run directory rewrites its
    ``metrics.jsonl``); without it each goes to ``on_record`` as if just recorded.
    Shared by the round and the event driver.
    """
    records.extend(saved)
    if on_restore is not None:
        on_restore(list(records))
    else:
        for rec in records:
            on_record(rec)


def mark_nonfinite(rec: dict[str, Any], ids: torch.Tensor, params: torch.Tensor) -> None:
    """Add ``nonfinite_count`` and ``nonfinite_nodes`` to ``rec`` for rows holding NaN or inf.

    Parameters
    ----------
    rec
        The evaluation record (changed in place only when some row holds NaN or inf).
    ids
        Node id of each row of ``params``, ascending.
    params
        ``[nodes, dim]`` reported parameters.
    """
    if params.numel() == 0:
        return
    bad = ~torch.isfinite(params.reshape(len(ids), -1)).all(dim=1)
    count = int(bad.sum())
    if count:
        rec["nonfinite_count"] = count
        rec["nonfinite_nodes"] = [int(i) for i in ids[bad][:NONFINITE_SHOWN]]


def make_record(
    step: int,
    sim_time_s: float,
    wall_time_s: float,
    figures: Mapping[str, float],
    totals: MeterTotals,
    accounts: MergedAccounts,
    first: Mapping[str, Any] | None,
    ids: torch.Tensor,
    params: torch.Tensor,
    schedule_totals: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """One record, in the order the module docstring gives.

    Parameters
    ----------
    step
        Round (round schedule) or event block (event schedule).
    sim_time_s, wall_time_s
        Simulated and wall-clock seconds since the start.
    figures
        The evaluation figures of the schedule.
    totals
        Merged meter totals.
    accounts
        Merged counters, ledgers and algorithm metrics.
    first
        The run's first record (None when this is it): ``relative_sq_distance`` divides
        by its ``mean_sq_distance``.
    ids, params
        Ids and rows of the reported models (checked for NaN and inf).
    schedule_totals
        Counts only the schedule knows (``events_total``, ``communications_total``).
    """
    rec: dict[str, Any] = {
        "round": step,
        "sim_time_s": sim_time_s,
        "wall_time_s": wall_time_s,
        **figures,
        **(schedule_totals or {}),
        "messages_total": totals.messages,
        "bytes_total": totals.bytes,
    }
    if totals.retransmissions:
        rec["retransmissions_total"] = totals.retransmissions
    rec.update(accounts.counters.to_record())
    if "mean_sq_distance" in rec:  # relative to the start
        start = first["mean_sq_distance"] if first is not None else rec["mean_sq_distance"]
        rec["relative_sq_distance"] = rec["mean_sq_distance"] / start if start > 0 else 0.0
    for name, value in accounts.metrics.items():
        if name in rec or name in ("ledgers", "nonfinite_count", "nonfinite_nodes"):
            raise ValueError(f"algorithm metric {name!r} has the name of a record field; rename it")
        rec[name] = value
    if accounts.ledgers:
        rec["ledgers"] = accounts.ledgers
    mark_nonfinite(rec, ids, params)
    return rec

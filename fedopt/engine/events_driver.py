"""The one driver of the event schedule: Poisson clocks driving an event algorithm.

Every worker (:class:`~fedopt.engine.events_worker.EventWorker`) regenerates the same
seeded stream and applies each block of ``engine.event_block`` events exactly, level by
level. The driver only says "next block" (with the ``stop.sim_time_s`` cut), sums the
workers' counts, and evaluates at block ends every ``eval.every`` blocks (or, with
``eval.every_time_s``, exactly at every multiple of that simulated time: blocks are cut
there), where the other stop rules are checked too. Every gossip event is metered as two
messages (``y + z`` each way) on the directed edges.

The driver holds no data: ``loss = sum_i p_i f_i(x_bar)`` adds the workers' per-node
values in data-rank order (:func:`~fedopt.engine.driver.figures_at`, as in the round
schedule) and ``x*`` solves the sum of their partial optimum statistics. The records'
counters (``<kind>_total``), algorithm metrics and ledgers are the workers' accounts,
merged in node order (:func:`~fedopt.engine.records.merge_accounts`).

:func:`drive_events` runs over any :class:`EventGroup`: the local runner
(:mod:`fedopt.engine.events_local`, one in-process worker) and the Ray runner
(:mod:`fedopt.engine.ray_engine.events`, one worker per actor) both call it, and neither
imports the other.

Checkpoints: with ``output.checkpoint_every = k`` the driver hands a checkpoint to
``on_checkpoint`` after every ``k``-th event block (the ``round`` of an event run's
records counts blocks); ``resume`` continues from one with the same results as an
uninterrupted run (the stream, the pending rest of a cut block, node states, meters and
counts are all restored).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import torch

from fedopt.algorithms.base import ALGORITHMS
from fedopt.engine.driver import RunResult, figures_at
from fedopt.engine.events_worker import StepResult
from fedopt.engine.plan import Plan
from fedopt.engine.records import (
    Accounts,
    MergedAccounts,
    make_record,
    merge_accounts,
    replay_records,
)
from fedopt.engine.worker import EvalPartial
from fedopt.network.meter import MeterTotals
from fedopt.problems.base import OptimumStats, solve_optimum


class EventGroup(Protocol):
    """The workers of an event run, as the driver sees them."""

    def step(self, until_time: float | None) -> list[StepResult]: ...

    def x(self) -> torch.Tensor: ...

    def evaluate(self, xbar: torch.Tensor) -> list[EvalPartial]: ...

    def optimum_stats(self) -> list[OptimumStats | None]: ...

    def accounts(self) -> list[Accounts]: ...

    def meter_totals(self) -> MeterTotals: ...

    def derived_constants(self) -> dict[str, Any]: ...

    def snapshot(self) -> list[dict[str, Any]]: ...

    def restore(self, snaps: list[dict[str, Any]]) -> None: ...


def drive_events(
    plan: Plan,
    group: EventGroup,
    on_record: Callable[[dict[str, Any]], None],
    on_round: Callable[[int], None],
    resume: dict[str, Any] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    on_restore: Callable[[list[dict[str, Any]]], None] | None = None,
) -> RunResult:
    """Step the workers block by block until a stop rule holds; record metrics.

    With ``output.checkpoint_every`` the workers' snapshots, the counts and the records
    so far go to ``on_checkpoint`` every that many blocks; ``resume`` (such a
    checkpoint) restores them and continues. ``on_restore`` receives the records kept
    from the checkpoint (default: replayed through ``on_record``).
    """
    cfg = plan.config
    stop = cfg.stop
    n = plan.topology.n
    rows = torch.arange(n)
    x_star = solve_optimum(group.optimum_stats())
    algo = ALGORITHMS.get(cfg.algorithm.name)
    reductions = dict(algo.metric_reductions)
    block = cfg.engine.reduce_block

    counts = {"events": 0, "gradients": 0, "communications": 0}
    records: list[dict[str, Any]] = []
    accounts: list[MergedAccounts] = [MergedAccounts()]
    wall0 = time.perf_counter()
    sim_time = 0.0

    def record(blocks: int) -> dict[str, Any]:
        x = group.x()
        xbar = x.mean(0)
        at = figures_at(group, xbar)
        figures = {
            "loss": at.pop("loss"),
            "consensus_distance": float(((x - xbar) ** 2).sum(1).mean()),
            **at,
        }
        if x_star is not None:
            figures["distance_to_opt"] = float(torch.linalg.vector_norm(xbar - x_star))
            figures["mean_sq_distance"] = float(((x - x_star) ** 2).sum(1).mean())
        accounts[0] = merge_accounts(group.accounts(), reductions, block)
        rec = make_record(
            blocks,
            sim_time,
            time.perf_counter() - wall0,
            figures,
            group.meter_totals(),
            accounts[0],
            records[0] if records else None,
            rows,
            x,
            {"events_total": counts["events"], "communications_total": counts["communications"]},
        )
        records.append(rec)
        on_record(rec)
        return rec

    blocks, reason = 0, "events"
    tick = cfg.eval.every_time_s
    next_tick = tick
    every_ckpt = cfg.output.checkpoint_every
    if resume is not None:
        snaps = resume["workers"]
        if snaps and not any("counters" in w for w in snaps):  # written before counters
            snaps = [{**snaps[0], "counters": {"gradients": resume["counts"]["gradients"]}}]
            snaps += resume["workers"][1:]
        group.restore(snaps)
        blocks, sim_time = int(resume["round"]), float(resume["sim_time"])
        counts.update(resume["counts"])
        next_tick = resume["next_tick"]
        replay_records(records, resume["records"], on_record, on_restore)
        accounts[0] = merge_accounts(group.accounts(), reductions, block)
    else:
        record(0)
    while True:
        limits = [v for v in (stop.sim_time_s, next_tick) if v is not None]
        limit = min(limits) if limits else None
        steps = group.step(limit)
        first = steps[0]
        counts["events"] += first.events
        counts["gradients"] += sum(s.gradients for s in steps)
        counts["communications"] += sum(s.communications for s in steps)
        blocks += 1
        sim_time = float(limit) if first.cut and limit is not None else first.end_time
        on_round(blocks)
        done = "sim_time" if first.cut and limit == stop.sim_time_s else None
        at_tick = first.cut and next_tick is not None and limit == next_tick
        if at_tick:
            next_tick = float(next_tick) + float(tick or 0)
        for key in ("events", "gradients", "communications"):
            limit_count = getattr(stop, key)
            if done is None and limit_count is not None and counts[key] >= limit_count:
                done = key
        every_blocks = tick is None and blocks % cfg.eval.every == 0
        if done is not None or at_tick or every_blocks:
            rec = record(blocks)
            if done is None and stop.target_loss is not None and rec["loss"] <= stop.target_loss:
                done = "target_loss"
            target = stop.target_distance
            if done is None and target is not None and rec.get("relative_sq_distance", 1) <= target:
                done = "target_distance"
        if done is not None:
            reason = done
            break
        if on_checkpoint is not None and every_ckpt and blocks % every_ckpt == 0:
            on_checkpoint(
                {
                    "schedule": "events",
                    "round": blocks,
                    "sim_time": sim_time,
                    "counts": dict(counts),
                    "next_tick": next_tick,
                    "records": list(records),
                    "workers": group.snapshot(),
                }
            )
    x = group.x()
    return RunResult(
        records=records,
        rounds=blocks,
        sim_time_s=sim_time,
        wall_time_s=time.perf_counter() - wall0,
        stop_reason=reason,
        final_ids=rows,
        final_params=x.clone(),
        final_model=x.mean(0),
        x_star=x_star,
        totals=group.meter_totals(),
        derived=group.derived_constants(),
        counters=accounts[0].counters,
        ledgers=accounts[0].ledgers,
        evaluation=algo.evaluation,
        metrics=accounts[0].metrics,
    )

"""The event schedule's driver: Poisson clocks driving an event algorithm on any engine.

Every worker (:class:`~fedopt.engine.events_worker.EventWorker`) regenerates the same
seeded stream and applies each block of ``engine.event_block`` events exactly, level by
level. The driver only says "next block" (with the ``stop.sim_time_s`` cut), sums the
workers' counts, and evaluates at block ends every ``eval.every`` blocks (or, with
``eval.every_time_s``, exactly at every multiple of that simulated time: blocks are cut
there), where the other stop rules are checked too. Every gossip event is metered as two messages
(``y + z`` each way) on the directed edges. :func:`run_events` runs it in-process;
:mod:`fedopt.engine.ray_engine.events` runs the same loop over Ray actors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch

from fedopt.engine.driver import RunResult
from fedopt.engine.events_worker import EventWorker, StepResult
from fedopt.engine.local import configure_threads
from fedopt.engine.output import EngineOutput
from fedopt.engine.plan import Plan
from fedopt.engine.records import MergedAccounts, make_record
from fedopt.errors import ConfigError
from fedopt.network.counters import Counters
from fedopt.network.meter import MeterTotals
from fedopt.problems.base import Oracle


class EventGroup(Protocol):
    """The workers of an event run, as the driver sees them."""

    def step(self, until_time: float | None) -> list[StepResult]: ...

    def x(self) -> torch.Tensor: ...

    def meter_totals(self) -> MeterTotals: ...

    def derived_constants(self) -> dict[str, Any]: ...


class LocalEventGroup:
    """One in-process worker hosting every node."""

    def __init__(self, plan: Plan, meter_enabled: bool = True) -> None:
        self.worker = EventWorker(plan, np.arange(plan.topology.n), meter_enabled=meter_enabled)

    def step(self, until_time: float | None) -> list[StepResult]:
        return [self.worker.step(until_time)]

    def x(self) -> torch.Tensor:
        return self.worker.nodes.x

    def meter_totals(self) -> MeterTotals:
        return self.worker.meter.totals

    def derived_constants(self) -> dict[str, Any]:
        return self.worker.derived_constants()


def check_event_stop(plan: Plan) -> None:
    """An event run needs a stop rule that counts time or events."""
    stop = plan.config.stop
    if not any(
        v is not None for v in (stop.sim_time_s, stop.events, stop.gradients, stop.communications)
    ):
        raise ConfigError(
            f"stop: the event schedule of {plan.config.algorithm.name!r} needs stop.sim_time_s, "
            "stop.events, stop.gradients or stop.communications (stop.rounds counts rounds)"
        )


def run_events(
    plan: Plan,
    on_record: Callable[[dict[str, Any]], None] = lambda r: None,
    on_round: Callable[[int], None] = lambda t: None,
    meter_enabled: bool = True,
    **_: Any,
) -> EngineOutput:
    """Run an event-schedule algorithm (its ``build_events``) on the engine ``plan`` names."""
    check_event_stop(plan)
    if plan.config.engine.kind == "ray":
        from fedopt.engine.ray_engine.events import run_ray_events

        return run_ray_events(plan, on_record, on_round, meter_enabled)
    threads = configure_threads(plan.config.engine.threads)
    group = LocalEventGroup(plan, meter_enabled)
    result = drive_events(plan, group, group.worker.oracle, on_record, on_round)
    meter = group.worker.meter
    return EngineOutput(
        result=result,
        edge_messages=meter.edge_messages.numpy(),
        edge_bytes=meter.edge_bytes.numpy(),
        device="cpu",
        threads=threads,
        workers=[{"rank": 0, "num_nodes": plan.topology.n, "device": "cpu", "schedule": "events"}],
    )


def drive_events(
    plan: Plan,
    group: EventGroup,
    oracle: Oracle,
    on_record: Callable[[dict[str, Any]], None],
    on_round: Callable[[int], None],
) -> RunResult:
    """Step the workers block by block until a stop rule holds; record metrics."""
    cfg = plan.config
    stop = cfg.stop
    n = plan.topology.n
    rows = torch.arange(n)
    stats = oracle.optimum_stats()
    x_star = stats.solve() if stats is not None else None

    counts = {"events": 0, "gradients": 0, "communications": 0}
    records: list[dict[str, Any]] = []
    wall0 = time.perf_counter()
    sim_time = 0.0

    def record(blocks: int) -> dict[str, Any]:
        x = group.x()
        xbar = x.mean(0)
        xo = xbar.to(getattr(oracle, "dtype", torch.float32))
        values = oracle.value(xo.unsqueeze(0).expand(n, -1), rows)
        figures = {
            "loss": float((values * oracle.weights.double()).sum()),
            "consensus_distance": float(((x - xbar) ** 2).sum(1).mean()),
        }
        if x_star is not None:
            figures["distance_to_opt"] = float(torch.linalg.vector_norm(xbar - x_star))
            figures["mean_sq_distance"] = float(((x - x_star) ** 2).sum(1).mean())
        accounts = MergedAccounts(counters=Counters({"gradients": counts["gradients"]}))
        rec = make_record(
            blocks,
            sim_time,
            time.perf_counter() - wall0,
            figures,
            group.meter_totals(),
            accounts,
            records[0] if records else None,
            rows,
            x,
            {"events_total": counts["events"], "communications_total": counts["communications"]},
        )
        records.append(rec)
        on_record(rec)
        return rec

    record(0)
    blocks, reason = 0, "events"
    tick = cfg.eval.every_time_s
    next_tick = tick
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
        counters=Counters({"gradients": counts["gradients"]}),
    )

"""The local runner of the event schedule: one in-process worker hosting every node. No Ray.

The loop itself is :func:`~fedopt.engine.events_driver.drive_events`, the one event
driver, which the Ray runner (:mod:`fedopt.engine.ray_engine.events`) calls too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fedopt.engine.events_driver import drive_events
from fedopt.engine.events_worker import EventWorker, StepResult
from fedopt.engine.local import configure_threads
from fedopt.engine.output import EngineOutput
from fedopt.engine.plan import Plan
from fedopt.engine.records import Accounts
from fedopt.engine.worker import EvalPartial
from fedopt.network.meter import MeterTotals
from fedopt.problems.base import OptimumStats


class LocalEventGroup:
    """One in-process worker hosting every node (an :class:`~.events_driver.EventGroup`)."""

    def __init__(self, plan: Plan, meter_enabled: bool = True) -> None:
        self.worker = EventWorker(plan, np.arange(plan.topology.n), meter_enabled=meter_enabled)

    def step(self, until_time: float | None) -> list[StepResult]:
        return [self.worker.step(until_time)]

    def x(self) -> torch.Tensor:
        return self.worker.nodes.x

    def evaluate(self, xbar: torch.Tensor) -> list[EvalPartial]:
        return [self.worker.evaluate(xbar)]

    def optimum_stats(self) -> list[OptimumStats | None]:
        return [self.worker.optimum_stats()]

    def accounts(self) -> list[Accounts]:
        return [self.worker.accounts()]

    def meter_totals(self) -> MeterTotals:
        return self.worker.meter.totals

    def derived_constants(self) -> dict[str, Any]:
        return self.worker.derived_constants()

    def snapshot(self) -> list[dict[str, Any]]:
        return [self.worker.snapshot()]

    def restore(self, snaps: list[dict[str, Any]]) -> None:
        if len(snaps) != 1:
            raise ValueError(
                f"checkpoint has {len(snaps)} workers but this run has 1; "
                "resume with the same engine settings"
            )
        self.worker.restore(snaps[0])


def run_local_events(
    plan: Plan,
    on_record: Callable[[dict[str, Any]], None] = lambda r: None,
    on_round: Callable[[int], None] = lambda t: None,
    meter_enabled: bool = True,
    resume: dict[str, Any] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    on_restore: Callable[[list[dict[str, Any]]], None] | None = None,
) -> EngineOutput:
    """Run an event-schedule ``plan`` in this process (on the CPU: see ``check_event_schedule``)."""
    threads = configure_threads(plan.config.engine.threads)
    group = LocalEventGroup(plan, meter_enabled)
    result = drive_events(
        plan,
        group,
        on_record,
        on_round,
        resume=resume,
        on_checkpoint=on_checkpoint,
        on_restore=on_restore,
    )
    meter = group.worker.meter
    return EngineOutput(
        result=result,
        edge_messages=meter.edge_messages.numpy(),
        edge_bytes=meter.edge_bytes.numpy(),
        device="cpu",
        threads=threads,
        workers=[{"rank": 0, "num_nodes": plan.topology.n, "device": "cpu", "schedule": "events"}],
    )

"""Event workers hosting shards, in this process: the Ray event runner without Ray.

:func:`run_sharded` places contiguous shards of nodes on ``k``
:class:`~fedopt.engine.events_worker.EventWorker` s, each on its own thread, joined by
in-process mailboxes (the Ray runner's :class:`~fedopt.engine.ray_engine.mailbox.Mailbox`
with peers that deliver directly), and runs the one event driver over them. So the
shard path (row swaps, the oracle of the hosted nodes only, per-worker evaluation and
accounts) is tested in seconds, without starting actors.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedopt.engine.driver import RunResult
from fedopt.engine.events_driver import drive_events
from fedopt.engine.events_worker import EventWorker, StepResult
from fedopt.engine.plan import Plan
from fedopt.engine.ray_engine.mailbox import Mailbox
from fedopt.network.meter import MeterTotals


class _Remote:
    def __init__(self, box: Mailbox) -> None:
        self.remote = box.deliver


@dataclass
class _Peer:
    deliver: _Remote


class ThreadedEventGroup:
    """``k`` shard workers stepped concurrently (an ``events_driver.EventGroup``)."""

    def __init__(self, plan: Plan, k: int) -> None:
        n = plan.topology.n
        shards = [s.astype(np.int64) for s in np.array_split(np.arange(n), k)]
        owner = np.empty(n, dtype=np.int64)
        for r, s in enumerate(shards):
            owner[s] = r
        boxes = [Mailbox(r, shards, 60.0) for r in range(k)]
        peers = [_Peer(_Remote(b)) for b in boxes]
        for b in boxes:
            b.set_peers(peers)
        self.n = n
        self.workers = [EventWorker(plan, s, owner, r, boxes[r]) for r, s in enumerate(shards)]
        self.pool = ThreadPoolExecutor(max_workers=k)

    def _all(self, method: str, *args: Any) -> list[Any]:
        futures = [self.pool.submit(getattr(w, method), *args) for w in self.workers]
        return [f.result() for f in futures]

    def step(self, until_time: float | None) -> list[StepResult]:
        return self._all("step", until_time)

    def x(self) -> torch.Tensor:
        parts = [w.hosted_x() for w in self.workers]
        rows = torch.cat([p[1] for p in parts])
        x = torch.empty((self.n, rows.shape[1]), dtype=rows.dtype)
        x[torch.cat([p[0] for p in parts])] = rows
        return x

    def evaluate(self, xbar: torch.Tensor) -> list[Any]:
        return [w.evaluate(xbar) for w in self.workers]

    def optimum_stats(self) -> list[Any]:
        return [w.optimum_stats() for w in self.workers]

    def accounts(self) -> list[Any]:
        return [w.accounts() for w in reversed(self.workers)]  # any order merges alike

    def meter_totals(self) -> MeterTotals:
        total = MeterTotals()
        for w in self.workers:
            total = total.merge(w.meter.totals)
        return total

    def derived_constants(self) -> dict[str, Any]:
        return self.workers[0].derived_constants()

    def snapshot(self) -> list[dict[str, Any]]:
        return [w.snapshot() for w in self.workers]

    def restore(self, snaps: list[dict[str, Any]]) -> None:
        for w, s in zip(self.workers, snaps, strict=True):
            w.restore(s)

    def edge_meters(self) -> tuple[np.ndarray, np.ndarray]:
        return (
            sum(w.meter.edge_messages for w in self.workers).numpy(),
            sum(w.meter.edge_bytes for w in self.workers).numpy(),
        )


def run_sharded(plan: Plan, k: int, **schedule: Any) -> tuple[RunResult, ThreadedEventGroup]:
    """Run ``plan`` on ``k`` in-process shard workers; ``schedule``: resume/checkpoint hooks."""
    group = ThreadedEventGroup(plan, k)
    try:
        result = drive_events(plan, group, lambda r: None, lambda t: None, **schedule)
    finally:
        group.pool.shutdown()
    return result, group

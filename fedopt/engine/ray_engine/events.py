"""The event schedule on Ray: each actor hosts a shard of event-algorithm nodes.

Every actor runs an :class:`~fedopt.engine.events_worker.EventWorker` on its shard and
regenerates the same seeded event stream; cross-shard edge events swap endpoint state
rows actor to actor through a :class:`~fedopt.engine.ray_engine.mailbox.Mailbox`. The
driver runs :func:`~fedopt.engine.events_driver.drive_events`, the one event driver the
local runner calls too: it only asks for the next block, and at evaluations gathers the
iterates and each actor's partial loss values and accounts (the driver builds no
oracle), so a run gives the same bits, counts and per-edge meters as on the local
engine. Checkpoints hold every actor's snapshot; a run resumes on as many actors (dead
actors are not restarted: ``engine.max_restarts`` is refused at compile time).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fedopt.engine.events_driver import drive_events
from fedopt.engine.events_worker import EventWorker, StepResult
from fedopt.engine.output import EngineOutput
from fedopt.engine.plan import Plan
from fedopt.engine.ray_engine.actor import load_plan, own_shards
from fedopt.engine.ray_engine.engine import (
    RayGroup,
    connect,
    plan_resources,
    transport_stats,
    wire_up,
)
from fedopt.engine.ray_engine.mailbox import Mailbox, grpc_host
from fedopt.engine.ray_engine.placement import shard_nodes
from fedopt.engine.records import Accounts
from fedopt.engine.worker import EvalPartial
from fedopt.network.meter import MeterTotals
from fedopt.problems.base import OptimumStats
from fedopt.transport.meters import TransportStats


class EventActor:
    """Hosts ``shards[rank]`` of an event-schedule run (methods are called remotely)."""

    def __init__(
        self,
        plugins: dict[str, tuple[str, str]],
        plan_bytes: bytes,
        rank: int,
        shards: list[np.ndarray],
        threads: int,
        meter_enabled: bool = True,
    ) -> None:
        plan = load_plan(plugins, plan_bytes, threads)
        shards = own_shards(shards)
        owner = np.empty(plan.topology.n, dtype=np.int64)
        for r, s in enumerate(shards):
            owner[s] = r
        self.rank = rank
        self.mailbox = Mailbox(rank, shards, plan.config.engine.timeout_s)
        self.grpc = plan.config.engine.grpc
        self.worker = EventWorker(plan, shards[rank], owner, rank, self.mailbox, meter_enabled)

    def info(self) -> dict[str, Any]:
        """Where this actor runs: Ray node id, pid, threads, hosted nodes."""
        import ray

        hosted = self.worker.hosted
        return {
            "rank": self.rank,
            "ray_node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "device": "cpu",
            "threads": torch.get_num_threads(),
            "nodes": [int(hosted[0]), int(hosted[-1])],
            "num_nodes": len(hosted),
            "schedule": "events",
        }

    def set_peers(self, handles: list[Any]) -> None:
        self.mailbox.set_peers(handles)

    def start_transport(self, token: str) -> str:
        """``engine.transport: grpc``: start this actor's server; return its address."""
        return self.mailbox.start_grpc(self.grpc, grpc_host(self.grpc), token)

    def connect_transport(self, addresses: list[str]) -> None:
        self.mailbox.connect_grpc(addresses)

    def transport_stats(self) -> TransportStats | None:
        return self.mailbox.stats()

    def deliver(self, key: Any, src: int, payload: Any) -> None:
        self.mailbox.deliver(key, src, payload)

    def step(self, until_time: float | None) -> StepResult:
        out = self.worker.step(until_time)
        self.mailbox.flush()
        return out

    def hosted_x(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.worker.hosted_x()

    def evaluate(self, xbar: torch.Tensor) -> EvalPartial:
        return self.worker.evaluate(xbar)

    def optimum_stats(self) -> OptimumStats | None:
        return self.worker.optimum_stats()

    def accounts(self) -> Accounts:
        return self.worker.accounts()

    def meter_totals(self) -> MeterTotals:
        return self.worker.meter.totals

    def derived_constants(self) -> dict[str, Any]:
        return self.worker.derived_constants()

    def meter_edges(self) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.worker.meter
        return m.edge_messages, m.edge_bytes

    def snapshot(self) -> dict[str, Any]:
        return self.worker.snapshot()

    def restore(self, snap: dict[str, Any]) -> None:
        self.worker.restore(snap)


class RayEventGroup:
    """The driver's view of the event actors (an ``events_driver.EventGroup``)."""

    def __init__(self, group: RayGroup, n: int) -> None:
        self.group = group
        self.n = n
        self.blocks = 0

    def step(self, until_time: float | None) -> list[StepResult]:
        self.blocks += 1
        return self.group.call("step", until_time, what=f"event block {self.blocks}")

    def x(self) -> torch.Tensor:
        parts = self.group.call("hosted_x", what="gathering iterates")
        ids = torch.cat([p[0] for p in parts])
        rows = torch.cat([p[1] for p in parts])
        x = torch.empty((self.n, rows.shape[1]), dtype=rows.dtype)
        x[ids] = rows
        return x

    def evaluate(self, xbar: torch.Tensor) -> list[EvalPartial]:
        return self.group.call("evaluate", xbar, what="evaluation")

    def optimum_stats(self) -> list[OptimumStats | None]:
        return self.group.call("optimum_stats")

    def accounts(self) -> list[Accounts]:
        return self.group.call("accounts", what="counters and ledgers")

    def meter_totals(self) -> MeterTotals:
        totals = MeterTotals()
        for t in self.group.call("meter_totals"):
            totals = totals.merge(t)
        return totals

    def derived_constants(self) -> dict[str, Any]:
        return self.group.derived_constants()

    def snapshot(self) -> list[dict[str, Any]]:
        return self.group.call("snapshot", what="checkpoint")

    def restore(self, snaps: list[dict[str, Any]]) -> None:
        self.group.restore(snaps)


def run_ray_events(
    plan: Plan,
    on_record: Callable[[dict[str, Any]], None] = lambda r: None,
    on_round: Callable[[int], None] = lambda t: None,
    meter_enabled: bool = True,
    resume: dict[str, Any] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    on_restore: Callable[[list[dict[str, Any]]], None] | None = None,
) -> EngineOutput:
    """Run an event-schedule ``plan`` on Ray actors; same results as the local engine."""
    import ray

    eng = plan.config.engine
    started = connect(eng.address)
    actors: list[Any] = []
    try:
        count, cpu_each, _ = plan_resources(plan, ray.cluster_resources())
        shards = shard_nodes(plan, count)
        threads = eng.threads or max(1, int(cpu_each))
        remote_cls = ray.remote(EventActor)
        plan_bytes = ray.put(pickle.dumps(plan))
        actors = [
            remote_cls.options(num_cpus=cpu_each, max_concurrency=len(shards) + 4).remote(
                plan.plugin_sources, plan_bytes, rank, shards, threads, meter_enabled
            )
            for rank in range(len(shards))
        ]
        group = RayGroup(actors, shards, eng.timeout_s)
        infos = group.call("info", what="start-up")
        wire_up(group, plan)
        result = drive_events(
            plan,
            RayEventGroup(group, plan.topology.n),
            on_record,
            on_round,
            resume=resume,
            on_checkpoint=on_checkpoint,
            on_restore=on_restore,
        )
        edges = group.call("meter_edges")
        return EngineOutput(
            result=result,
            edge_messages=sum(e[0] for e in edges).numpy(),
            edge_bytes=sum(e[1] for e in edges).numpy(),
            device="cpu",
            threads=threads,
            workers=infos,
            transport=transport_stats(group, plan),
        )
    finally:
        for a in actors:
            ray.kill(a)
        if started:
            ray.shutdown()

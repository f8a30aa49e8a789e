"""The worker actor: a :class:`~fedopt.engine.worker.Worker` hosting one shard of nodes.

The actor builds its nodes' oracle, data and state inside itself from the plan and the
seed (nothing large comes from the driver), keeps its tensors on its own device, and
talks to its peers through :class:`~fedopt.engine.ray_engine.comm.RayComm`. It is a
threaded actor so that peers' deliveries run while a round waits for them.
"""

from __future__ import annotations

import functools
import os
import pickle
from typing import Any

import numpy as np
import torch

from fedopt.engine.plan import Plan
from fedopt.engine.ray_engine.comm import RayComm
from fedopt.engine.ray_engine.mailbox import grpc_host
from fedopt.engine.records import Accounts
from fedopt.engine.worker import EvalPartial, Worker
from fedopt.network.meter import MeterTotals
from fedopt.plugins import install_all
from fedopt.transport.meters import TransportStats


def load_plan(plugins: dict[str, tuple[str, str]], plan_bytes: bytes, threads: int) -> Plan:
    """An actor's start: set its torch threads, install the plug-ins, unpickle the plan.

    The plug-ins come first because the plan may hold objects of classes they define.
    """
    torch.set_num_threads(max(1, threads))
    install_all(plugins)
    return pickle.loads(plan_bytes)


def own_shards(shards: list[np.ndarray]) -> list[np.ndarray]:
    """Writable copies of the shard arrays an actor receives.

    Ray hands numpy arguments to an actor as zero-copy, read-only views of its object
    store; ``torch.from_numpy`` on such a view warns that the tensor is not writable
    (and writing to it would be undefined). The arrays are small (node ids), so each
    actor keeps its own copy.
    """
    return [np.array(s, dtype=np.int64, copy=True) for s in shards]


class WorkerActor:
    """Hosts ``shards[rank]``; every public method is called remotely by the driver.

    Parameters
    ----------
    plugins
        ``plan.plugin_sources``: installed first, because the plan may hold objects of
        classes defined in plug-ins.
    plan_bytes
        The pickled plan (specs and seeds only), unpickled after the plug-ins.
    rank, shards
        This actor's index and every actor's node ids.
    threads
        torch intra-op threads (set explicitly).
    gpu_fraction
        Share of one GPU this actor may allocate (0: CPU).
    meter_enabled
        False only to measure metering overhead.
    """

    def __init__(
        self,
        plugins: dict[str, tuple[str, str]],
        plan_bytes: bytes,
        rank: int,
        shards: list[np.ndarray],
        threads: int,
        gpu_fraction: float,
        meter_enabled: bool = True,
    ) -> None:
        plan = load_plan(plugins, plan_bytes, threads)
        shards = own_shards(shards)
        device = torch.device("cpu")
        if gpu_fraction > 0:
            if not torch.cuda.is_available():
                raise RuntimeError(
                    f"worker {rank}: engine.gpus_per_actor={gpu_fraction} but torch sees no "
                    f"CUDA device on this Ray node (CUDA_VISIBLE_DEVICES="
                    f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r})"
                )
            device = torch.device("cuda")
            torch.cuda.set_per_process_memory_fraction(min(1.0, gpu_fraction))
        self.rank = rank
        factory = functools.partial(RayComm, rank, shards, plan.config.engine.timeout_s)
        self.worker = Worker(
            plan, shards[rank], device, comm_factory=factory, meter_enabled=meter_enabled
        )
        self.comm: RayComm = self.worker.comm  # type: ignore[assignment]
        self.grpc = plan.config.engine.grpc

    def info(self) -> dict[str, Any]:
        """Where this actor runs: Ray node id, pid, device, threads, hosted nodes."""
        import ray

        hosted = self.comm.hosted
        return {
            "rank": self.rank,
            "ray_node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "device": str(self.worker.ctx.device),
            "threads": torch.get_num_threads(),
            "nodes": [int(hosted[0]), int(hosted[-1])],
            "num_nodes": len(hosted),
        }

    def set_peers(self, handles: list[Any]) -> None:
        self.comm.set_peers(handles)

    def start_transport(self, token: str) -> str:
        """``engine.transport: grpc``: start this actor's server; return its address."""
        return self.comm.mailbox.start_grpc(self.grpc, grpc_host(self.grpc), token)

    def connect_transport(self, addresses: list[str]) -> None:
        self.comm.mailbox.connect_grpc(addresses)

    def transport_stats(self) -> TransportStats | None:
        return self.comm.mailbox.stats()

    def deliver(self, key: int, src: int, payload: Any) -> None:
        self.comm.deliver(key, src, payload)

    def round(self, t: int, barrier: float | None) -> float:
        if barrier is not None:
            self.worker.barrier(barrier)
        out = self.worker.round(t)
        self.comm.mailbox.flush()  # every payload of the round reached its peer
        return out

    def outputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        ids, params = self.worker.outputs()
        return ids.cpu(), params.detach().cpu()

    def evaluate(self, xbar: torch.Tensor, with_test: bool) -> EvalPartial:
        return self.worker.evaluate(xbar.to(self.worker.ctx.device), with_test)

    def meter_totals(self) -> MeterTotals:
        return self.worker.meter_totals()

    def accounts(self) -> Accounts:
        return self.worker.accounts()

    def derived_constants(self) -> dict[str, Any]:
        return self.worker.derived_constants()

    def meter_edges(self) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.worker.meter
        return m.edge_messages, m.edge_bytes

    def snapshot(self, barrier: float | None) -> dict[str, Any]:
        if barrier is not None:
            self.worker.barrier(barrier)
        return self.worker.snapshot()

    def restore(self, snap: dict[str, Any]) -> None:
        self.worker.restore(snap)

    def optimum_stats(self) -> Any:
        return self.worker.optimum_stats()

"""Driver side of the Ray engine: place shards on actors, run the schedule, merge meters.

The driver sends only small control messages (round numbers, the barrier time, the
average model for evaluation); node payloads go actor to actor. Every wait has a
timeout, and a failing actor is reported with its node ids and original traceback.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import secrets
import socket
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fedopt.engine.driver import run_schedule
from fedopt.engine.local import usable_cores
from fedopt.engine.output import EngineOutput
from fedopt.engine.plan import Plan
from fedopt.engine.ray_engine.placement import shard_nodes
from fedopt.engine.records import Accounts
from fedopt.engine.worker import EvalPartial
from fedopt.errors import ConfigError, EngineError, RunDiverged
from fedopt.network.meter import MeterTotals
from fedopt.problems.base import solve_optimum

TOKEN_HINT = (
    "if the cluster uses token authentication (the default for `fedopt cluster`), set "
    "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN to the cluster's token in this shell"
)


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Initialise Ray; return True when this call started a local Ray instance."""
    import ray

    if ray.is_initialized():
        return False
    if address is None:
        ray.init(
            address="local",  # never join a cluster by accident (RAY_ADDRESS, stale files)
            num_cpus=num_cpus or usable_cores(),
            include_dashboard=False,
            logging_level=logging.ERROR,
            configure_logging=True,
        )
        return True
    _check_reachable(address)
    try:
        ray.init(address=address, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"engine.address: cannot join a Ray cluster at {address!r} ({exc}). Check "
            f"host:port (start one with `fedopt cluster start-head`); {TOKEN_HINT}"
        ) from None
    return False


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast (Ray itself retries for minutes) when ``host:port`` does not answer."""
    if address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"engine.address: cannot join a Ray cluster at {address!r}: nothing answers there "
            f"({exc}). Check host:port (start one with `fedopt cluster start-head`); "
            f"{TOKEN_HINT}"
        ) from None


def plan_resources(plan: Plan, cluster: dict[str, float]) -> tuple[int, float, float]:
    """Number of actors, CPUs and GPU share per actor; ConfigError when they do not fit."""
    eng = plan.config.engine
    n = plan.topology.n
    cpus = float(cluster.get("CPU", 0))
    gpus = float(cluster.get("GPU", 0))
    want_gpu = eng.gpus_per_actor > 0 or (eng.device in ("cuda", "auto") and gpus > 0)
    if eng.one_node_per_actor:
        actors = n
    elif eng.actors is not None:
        actors = eng.actors
    elif eng.nodes_per_actor is not None:
        actors = math.ceil(n / eng.nodes_per_actor)
    elif want_gpu:
        actors = max(1, int(gpus))
    else:
        actors = max(1, int(cpus // (eng.cpus_per_actor or 1.0)))
    actors = min(actors, n) if eng.actors is None else actors
    cpu_each = eng.cpus_per_actor if eng.cpus_per_actor is not None else min(1.0, cpus / actors)
    gpu_each = eng.gpus_per_actor if eng.gpus_per_actor > 0 else (gpus / actors if want_gpu else 0)
    if eng.device == "cuda" and gpus == 0:
        raise ConfigError(
            "engine.device: 'cuda' requested but the Ray cluster reports no GPU; use "
            "engine.device: cpu, or start Ray nodes with --num-gpus"
        )
    if actors * cpu_each > cpus + 1e-9:
        raise ConfigError(
            f"engine: {actors} actors x {cpu_each:g} CPU = {actors * cpu_each:g} CPUs, but the "
            f"cluster has {cpus:g}; lower engine.actors or engine.cpus_per_actor "
            f"(e.g. {cpus / actors:.2g})"
        )
    if gpu_each > 0 and actors * gpu_each > gpus + 1e-9:
        raise ConfigError(
            f"engine: {actors} actors x {gpu_each:g} GPU = {actors * gpu_each:g} GPUs, but the "
            f"cluster has {gpus:g}; lower engine.gpus_per_actor or engine.actors"
        )
    return actors, cpu_each, gpu_each


class RayGroup:
    """The driver's view of the actors (see :class:`~fedopt.engine.driver.WorkerGroup`)."""

    def __init__(self, actors: list[Any], shards: list[np.ndarray], timeout_s: float) -> None:
        self.actors = actors
        self.shards = shards
        self.timeout_s = timeout_s
        self._barrier: float | None = None
        self.test_rank = 0

    def _get(self, refs: list[Any], what: str) -> list[Any]:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        try:
            return ray.get(refs, timeout=self.timeout_s)
        except GetTimeoutError:
            raise EngineError(
                f"{what}: no answer from the workers within engine.timeout_s="
                f"{self.timeout_s:g} s; raise it for slow rounds"
            ) from None
        except (RayActorError, RayTaskError) as exc:
            for rank, ref in enumerate(refs):
                try:
                    ray.get(ref, timeout=0)
                except (RayActorError, RayTaskError) as err:
                    nodes = self.shards[rank]
                    raise EngineError(
                        f"worker {rank} hosting nodes {int(nodes[0])}..{int(nodes[-1])} "
                        f"({len(nodes)} nodes) failed during {what}:\n{err}"
                    ) from None
                except Exception:
                    continue
            raise EngineError(f"a worker failed during {what}:\n{exc}") from None

    def call(self, method: str, *args: Any, what: str | None = None) -> list[Any]:
        refs = [getattr(a, method).remote(*args) for a in self.actors]
        return self._get(refs, what or method)

    def round(self, t: int) -> float:
        barrier, self._barrier = self._barrier, None
        return max(self.call("round", t, barrier, what=f"round {t}"))

    def barrier(self, time: float) -> None:
        self._barrier = time

    def outputs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.call("outputs")

    def evaluate(self, xbar: torch.Tensor) -> list[EvalPartial]:
        refs = [a.evaluate.remote(xbar, r == self.test_rank) for r, a in enumerate(self.actors)]
        return self._get(refs, "evaluation")

    def meter_totals(self) -> list[MeterTotals]:
        return self.call("meter_totals")

    def accounts(self) -> list[Accounts]:
        return self.call("accounts", what="counters and ledgers")

    def derived_constants(self) -> dict[str, Any]:
        """The algorithm's derived constants, from worker 0 (every worker derives the same)."""
        return self._get([self.actors[0].derived_constants.remote()], "derived constants")[0]

    def snapshot(self) -> list[dict[str, Any]]:
        return self.call("snapshot", self._barrier, what="checkpoint")

    def restore(self, snaps: list[dict[str, Any]]) -> None:
        if len(snaps) != len(self.actors):
            raise ConfigError(
                f"checkpoint has {len(snaps)} workers but this run has {len(self.actors)}; "
                "resume with the same engine settings"
            )
        refs = [a.restore.remote(s) for a, s in zip(self.actors, snaps, strict=True)]
        self._get(refs, "restore")


def run_ray(
    plan: Plan,
    on_record: Callable[[dict[str, Any]], None] = lambda r: None,
    on_round: Callable[[int], None] = lambda t: None,
    meter_enabled: bool = True,
    resume: dict[str, Any] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    on_restore: Callable[[list[dict[str, Any]]], None] | None = None,
) -> EngineOutput:
    """Run ``plan`` on Ray actors and return the merged output.

    With ``output.checkpoint_every`` and ``engine.max_restarts``, a run whose actor dies
    is restarted on fresh actors from the latest checkpoint and ends with the same
    results as an uninterrupted run.
    """
    import ray

    eng = plan.config.engine
    started = connect(eng.address)
    latest = {"ckpt": resume}

    def keep(ckpt: dict[str, Any]) -> None:
        latest["ckpt"] = ckpt
        if on_checkpoint is not None:
            on_checkpoint(ckpt)

    restarts = 0
    try:
        while True:
            group, infos, threads = _start(plan, meter_enabled)
            try:
                x_star = _optimum(group)
                result = run_schedule(
                    plan,
                    group,
                    x_star,
                    on_record=on_record,
                    on_round=on_round,
                    resume=latest["ckpt"],
                    on_checkpoint=keep,
                    on_restore=on_restore,
                )
                edges = group.call("meter_edges")
                stats = transport_stats(group, plan)
                return EngineOutput(
                    result=result,
                    edge_messages=sum(e[0] for e in edges).numpy(),
                    edge_bytes=sum(e[1] for e in edges).numpy(),
                    device=infos[0]["device"],
                    threads=threads,
                    workers=infos,
                    restarts=restarts,
                    transport=stats,
                )
            except EngineError as exc:
                if (
                    isinstance(exc, RunDiverged)  # a restart would diverge the same way
                    or restarts >= eng.max_restarts
                    or latest["ckpt"] is None
                ):
                    raise
                restarts += 1
                logging.getLogger("fedopt").warning(
                    "restart %d/%d from round %d after: %s",
                    restarts,
                    eng.max_restarts,
                    latest["ckpt"]["round"],
                    str(exc).splitlines()[0],
                )
            finally:
                for a in group.actors:
                    ray.kill(a)
    finally:
        if started:
            ray.shutdown()


def _start(plan: Plan, meter_enabled: bool) -> tuple[RayGroup, list[dict[str, Any]], int]:
    """Create the actors for ``plan`` and wire them to each other."""
    import ray

    from fedopt.engine.ray_engine.actor import WorkerActor

    eng = plan.config.engine
    count, cpu_each, gpu_each = plan_resources(plan, ray.cluster_resources())
    shards = shard_nodes(plan, count)
    threads = eng.threads or max(1, int(cpu_each))
    remote_cls = ray.remote(WorkerActor)
    plan_bytes = ray.put(pickle.dumps(plan))  # unpickled in the actor after its plug-ins
    actors = [
        remote_cls.options(
            num_cpus=cpu_each, num_gpus=gpu_each, max_concurrency=len(shards) + 4
        ).remote(plan.plugin_sources, plan_bytes, rank, shards, threads, gpu_each, meter_enabled)
        for rank in range(len(shards))
    ]
    group = RayGroup(actors, shards, eng.timeout_s)
    try:
        infos = group.call("info", what="start-up")
        wire_up(group, plan)
    except BaseException:
        for a in actors:
            ray.kill(a)
        raise
    first_data = int(plan.data_nodes[0])
    group.test_rank = next(r for r, s in enumerate(shards) if first_data in set(s.tolist()))
    return group, infos, threads


def run_token() -> str:
    """The secret gRPC calls carry: the cluster's ``RAY_AUTH_TOKEN``, else a fresh one.

    A fresh token reaches the actors through Ray's own (authenticated) control plane.
    """
    token = os.environ.get("RAY_AUTH_TOKEN", "")
    return token if len(token) >= 16 else secrets.token_hex(32)


def wire_up(group: RayGroup, plan: Plan) -> None:
    """Tell every actor its peers: Ray handles, or (gRPC) start servers, then connect."""
    import ray
    from ray.exceptions import RayTaskError

    if plan.config.engine.transport != "grpc":
        group.call("set_peers", group.actors, what="start-up")
        return
    token = run_token()  # one secret for the whole run
    refs = [a.start_transport.remote(token) for a in group.actors]
    try:
        addresses = ray.get(refs, timeout=group.timeout_s)
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, ConfigError):
            raise ConfigError(str(cause)) from None
        raise
    group.call("connect_transport", addresses, what="start-up (gRPC channels)")


def transport_stats(group: RayGroup, plan: Plan) -> list[Any] | None:
    """Every worker's gRPC and wire meters (None with the Ray transport)."""
    if plan.config.engine.transport != "grpc":
        return None
    return group.call("transport_stats", what="transport meters")


def _optimum(group: RayGroup) -> torch.Tensor | None:
    """Closed-form optimum from every actor's partial statistics (None if unknown)."""
    return solve_optimum(group.call("optimum_stats"))

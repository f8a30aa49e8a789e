"""The event schedule on the local engine: Poisson clocks driving an event algorithm.

Events are drawn in blocks of ``engine.event_block`` from a
:class:`~fedopt.events.stream.PoissonEventStream` and applied exactly (dependency
levels). Every gossip event is metered as two messages (``y + z`` each way) on the
directed edges. Evaluations happen at block ends, every ``eval.every`` blocks; stop
rules are checked there too, except ``stop.sim_time_s``, which cuts the stream exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fedopt.algorithms import ALGORITHMS
from fedopt.engine.driver import RunResult
from fedopt.engine.local import configure_threads
from fedopt.engine.output import EngineOutput
from fedopt.engine.plan import Plan
from fedopt.errors import ConfigError
from fedopt.events import PoissonEventStream
from fedopt.events.simulate import apply_block, edge_arrays
from fedopt.events.stream import SwitchingEventStream
from fedopt.network.meter import Meter
from fedopt.problems import PROBLEMS


def run_events(
    plan: Plan,
    on_record: Callable[[dict[str, Any]], None] = lambda r: None,
    on_round: Callable[[int], None] = lambda t: None,
    meter_enabled: bool = True,
    **_: Any,
) -> EngineOutput:
    """Run an event-schedule algorithm (its ``build_events``) on one in-process worker."""
    cfg = plan.config
    stop, topo = cfg.stop, plan.topology
    if cfg.engine.kind != "local":
        raise ConfigError(
            f"engine.kind: {cfg.algorithm.name!r} runs on the event schedule, which the "
            f"{cfg.engine.kind!r} engine does not support yet; use engine.kind: local"
        )
    if not any(
        v is not None for v in (stop.sim_time_s, stop.events, stop.gradients, stop.communications)
    ):
        raise ConfigError(
            f"stop: the event schedule of {cfg.algorithm.name!r} needs stop.sim_time_s, "
            "stop.events, stop.gradients or stop.communications (stop.rounds counts rounds)"
        )
    threads = configure_threads(cfg.engine.threads)
    n = topo.n
    problem = PROBLEMS.get(cfg.problem.name)
    oracle = problem.build(
        cfg.problem,
        seed=cfg.seed,
        data_ranks=torch.arange(n),
        num_data_nodes=n,
        device=torch.device("cpu"),
    )
    setup = ALGORITHMS.get(cfg.algorithm.name).build_events(cfg.algorithm, plan, oracle)
    nodes, grad = setup.nodes, setup.grad
    stream: Any
    if setup.edge_sets is not None and setup.switch_every is not None:
        stream = SwitchingEventStream(
            n,
            setup.edge_sets,
            setup.node_rate,
            setup.edge_rate_total,
            setup.switch_every,
            cfg.seed,
            cfg.engine.event_block,
        )
    elif topo.is_time_varying:
        raise ConfigError(
            f"topology.name: {cfg.algorithm.name!r} does not support time-varying "
            "topologies yet; use a static graph"
        )
    else:
        edges = edge_arrays(topo.edges)
        stream = PoissonEventStream(
            n,
            edges,
            setup.node_rate,
            setup.edge_rate_total / len(edges),
            cfg.seed,
            cfg.engine.event_block,
        )
    rows = torch.arange(n)
    meter = Meter(len(topo.edges), cfg.network.header_bytes, enabled=meter_enabled)
    nbytes = meter.message_bytes(oracle.dim, torch.float64)
    stats = oracle.optimum_stats()
    x_star = stats.solve() if stats is not None else None
    d0 = float(((nodes.x - x_star) ** 2).sum(1).mean()) if x_star is not None else None

    counts = {"events": 0, "gradients": 0, "communications": 0}
    records: list[dict[str, Any]] = []
    wall0 = time.perf_counter()
    sim_time = 0.0

    def record(blocks: int) -> dict[str, Any]:
        x = nodes.x
        xbar = x.mean(0)
        xo = xbar.to(getattr(oracle, "dtype", torch.float32))
        values = oracle.value(xo.unsqueeze(0).expand(n, -1), rows)
        rec: dict[str, Any] = {
            "round": blocks,
            "sim_time_s": sim_time,
            "wall_time_s": time.perf_counter() - wall0,
            "loss": float((values * oracle.weights.double()).sum()),
            "consensus_distance": float(((x - xbar) ** 2).sum(1).mean()),
            "events_total": counts["events"],
            "gradients_total": counts["gradients"],
            "communications_total": counts["communications"],
            "messages_total": meter.totals.messages,
            "bytes_total": meter.totals.bytes,
        }
        if x_star is not None:
            rec["distance_to_opt"] = float(torch.linalg.vector_norm(xbar - x_star))
            rec["relative_sq_distance"] = float(((x - x_star) ** 2).sum(1).mean()) / d0
        records.append(rec)
        on_record(rec)
        return rec

    record(0)
    blocks, reason = 0, "events"
    while True:
        blk = stream.next_block()
        keep = len(blk.time)
        if stop.sim_time_s is not None:
            keep = int(np.searchsorted(blk.time, stop.sim_time_s, side="right"))
        res = apply_block(nodes, blk, keep, grad)
        if len(res.edge_i):
            src = torch.cat([res.edge_i, res.edge_j]).numpy()
            dst = torch.cat([res.edge_j, res.edge_i]).numpy()
            meter.record(torch.from_numpy(topo.edge_index(src, dst)), nbytes, "y+z")
        counts["events"] += keep
        counts["gradients"] += res.gradients
        counts["communications"] += res.communications
        blocks += 1
        sim_time = float(stop.sim_time_s) if keep < len(blk.time) else res.end_time
        on_round(blocks)
        done = None
        if keep < len(blk.time):
            done = "sim_time"
        for key in ("events", "gradients", "communications"):
            limit = getattr(stop, key)
            if done is None and limit is not None and counts[key] >= limit:
                done = key
        if done is not None or blocks % cfg.eval.every == 0:
            rec = record(blocks)
            if done is None and stop.target_loss is not None and rec["loss"] <= stop.target_loss:
                done = "target_loss"
            target = stop.target_distance
            if done is None and target is not None and rec.get("relative_sq_distance", 1) <= target:
                done = "target_distance"
        if done is not None:
            reason = done
            break
    x = nodes.x
    result = RunResult(
        records=records,
        rounds=blocks,
        sim_time_s=sim_time,
        wall_time_s=time.perf_counter() - wall0,
        stop_reason=reason,
        final_ids=rows,
        final_params=x.clone(),
        final_model=x.mean(0),
        x_star=x_star,
        totals=meter.totals,
    )
    return EngineOutput(
        result=result,
        edge_messages=meter.edge_messages.numpy(),
        edge_bytes=meter.edge_bytes.numpy(),
        device="cpu",
        threads=threads,
        workers=[{"rank": 0, "num_nodes": n, "device": "cpu", "schedule": "events"}],
    )

"""The synchronous round schedule: rounds, barriers, evaluation and stop rules.

The driver talks to workers only through :class:`~fedopt.engine.worker.Worker`'s
methods (``round``, ``barrier``, ``outputs``, ``evaluate``), so it runs unchanged over
in-process workers or remote ones. Evaluation merges per-node figures in node order,
so metrics do not depend on how nodes are placed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from fedopt.engine.plan import Plan
from fedopt.engine.reduce import canonical_sum
from fedopt.engine.worker import EvalPartial
from fedopt.network.meter import MeterTotals


class WorkerLike(Protocol):
    """The worker interface the driver needs."""

    def round(self, t: int) -> float: ...
    def barrier(self, time: float) -> None: ...
    def outputs(self) -> tuple[torch.Tensor, torch.Tensor]: ...
    def evaluate(self, xbar: torch.Tensor, with_test: bool) -> EvalPartial: ...
    def meter_totals(self) -> MeterTotals: ...


@dataclass
class RunResult:
    """What a finished schedule hands to the sinks."""

    records: list[dict[str, Any]]
    rounds: int
    sim_time_s: float
    wall_time_s: float
    stop_reason: str
    final_ids: torch.Tensor
    final_params: torch.Tensor
    final_model: torch.Tensor
    x_star: torch.Tensor | None
    totals: MeterTotals = field(default_factory=MeterTotals)


def _gather_outputs(workers: Sequence[WorkerLike]) -> tuple[torch.Tensor, torch.Tensor]:
    ids, params = zip(*(w.outputs() for w in workers), strict=True)
    ids_t = torch.cat([i.to(torch.int64) for i in ids])
    dim = max((p.shape[1] for p in params if p.ndim == 2 and p.numel()), default=0)
    params_t = torch.cat([p.reshape(-1, dim) for p in params if p.numel()])
    order = torch.argsort(ids_t)
    return ids_t[order], params_t[order]


def evaluate(
    workers: Sequence[WorkerLike],
    test_worker: int,
    x_star: torch.Tensor | None,
    block: int,
) -> tuple[dict[str, float], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Metrics at the average output model ``x_bar``.

    ``loss = sum_i p_i f_i(x_bar)``; ``consensus_distance = mean_i ||x_i - x_bar||^2``;
    ``distance_to_opt = ||x_bar - x*||`` when the optimum is known.
    """
    ids, params = _gather_outputs(workers)
    p64 = params.to(torch.float64)
    xbar = canonical_sum(p64, None, block) / len(ids)
    parts = [w.evaluate(xbar, with_test=(i == test_worker)) for i, w in enumerate(workers)]
    ranks = torch.cat([p.ranks for p in parts])
    order = torch.argsort(ranks)
    values = torch.cat([p.values for p in parts])[order]
    weights = torch.cat([p.weights.to(torch.float64) for p in parts])[order]
    dev = ((p64 - xbar) ** 2).sum(1)
    metrics: dict[str, float] = {
        "loss": float((values * weights).sum()),
        "consensus_distance": float(dev.sum() / len(ids)),
    }
    count = sum(p.count for p in parts)
    if count:
        metrics["accuracy"] = sum(p.correct for p in parts) / count
    for p in parts:
        metrics.update(p.test)
    if x_star is not None:
        metrics["distance_to_opt"] = float(torch.linalg.vector_norm(xbar - x_star))
    return metrics, xbar, ids, params


def run_schedule(
    plan: Plan,
    workers: Sequence[WorkerLike],
    x_star: torch.Tensor | None,
    on_record: Callable[[dict[str, Any]], None] = lambda r: None,
    on_round: Callable[[int], None] = lambda t: None,
) -> RunResult:
    """Run synchronous rounds until a stop rule holds.

    Each round: every worker runs its phases; the round ends at the latest node clock
    (a global barrier); evaluation every ``eval.every`` rounds and at the end.
    """
    cfg = plan.config
    stop = cfg.stop
    block = cfg.engine.chunk_size
    test_worker = 0
    max_rounds = stop.rounds if stop.rounds is not None else 2**62
    records: list[dict[str, Any]] = []
    sim_time = 0.0
    wall0 = time.perf_counter()

    last_eval: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def record(t: int) -> dict[str, float]:
        metrics, xbar, ids, params = evaluate(workers, test_worker, x_star, block)
        last_eval[:] = [(xbar, ids, params)]
        totals = _merged_totals(workers)
        rec = {
            "round": t,
            "sim_time_s": sim_time,
            "wall_time_s": time.perf_counter() - wall0,
            **metrics,
            "messages_total": totals.messages,
            "bytes_total": totals.bytes,
        }
        if totals.retransmissions:
            rec["retransmissions_total"] = totals.retransmissions
        records.append(rec)
        on_record(rec)
        return metrics

    record(0)
    t = 0
    reason = "rounds"
    while t < max_rounds:
        sim_time = max(w.round(t) for w in workers)
        for w in workers:
            w.barrier(sim_time)
        t += 1
        on_round(t)
        time_up = stop.sim_time_s is not None and sim_time >= stop.sim_time_s
        last = t >= max_rounds or time_up
        if last or t % cfg.eval.every == 0:
            metrics = record(t)
            if stop.target_loss is not None and metrics["loss"] <= stop.target_loss:
                reason = "target_loss"
                break
        if time_up:
            reason = "sim_time"
            break
    if records[-1]["round"] != t:
        record(t)
    xbar, ids, params = last_eval[0]
    return RunResult(
        records=records,
        rounds=t,
        sim_time_s=sim_time,
        wall_time_s=time.perf_counter() - wall0,
        stop_reason=reason,
        final_ids=ids,
        final_params=params,
        final_model=xbar,
        x_star=x_star,
        totals=_merged_totals(workers),
    )


def _merged_totals(workers: Sequence[WorkerLike]) -> MeterTotals:
    total = MeterTotals()
    for w in workers:
        total = total.merge(w.meter_totals())
    return total

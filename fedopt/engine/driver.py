"""The synchronous round schedule: rounds, barriers, evaluation and stop rules.

The driver talks to workers only through :class:`~fedopt.engine.worker.Worker`'s
methods (``round``, ``barrier``, ``outputs``, ``evaluate``), so it runs unchanged over
in-process workers or remote ones. Evaluation merges per-node figures in node order,
so metrics do not depend on how nodes are placed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from fedopt.algorithms.base import ALGORITHMS
from fedopt.engine.plan import Plan
from fedopt.engine.records import (
    NONFINITE_SHOWN,
    Accounts,
    MergedAccounts,
    make_record,
    mark_nonfinite,
    merge_accounts,
    replay_records,
)
from fedopt.engine.reduce import canonical_sum
from fedopt.engine.worker import EvalPartial
from fedopt.network.counters import Counters
from fedopt.network.meter import MeterTotals

__all__ = [
    "NONFINITE_SHOWN",
    "RunResult",
    "evaluate",
    "figures_at",
    "mark_nonfinite",
    "run_schedule",
]


class WorkerGroup(Protocol):
    """All workers of a run, as the driver sees them.

    ``round`` runs round ``t`` on every worker (concurrently where the engine can) and
    returns the latest node clock; ``barrier`` sets every clock before the next round.
    """

    def round(self, t: int) -> float: ...
    def barrier(self, time: float) -> None: ...
    def outputs(self) -> list[tuple[torch.Tensor, torch.Tensor]]: ...
    def evaluate(self, xbar: torch.Tensor) -> list[EvalPartial]: ...
    def meter_totals(self) -> list[MeterTotals]: ...
    def accounts(self) -> list[Accounts]: ...
    def derived_constants(self) -> dict[str, Any]: ...
    def snapshot(self) -> list[dict[str, Any]]: ...
    def restore(self, snaps: list[dict[str, Any]]) -> None: ...


class LocalGroup:
    """In-process workers called one after another (the local engine has one)."""

    def __init__(self, workers: Sequence[Any]) -> None:
        self.workers = list(workers)

    def round(self, t: int) -> float:
        return max(w.round(t) for w in self.workers)

    def barrier(self, time: float) -> None:
        for w in self.workers:
            w.barrier(time)

    def outputs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [w.outputs() for w in self.workers]

    def evaluate(self, xbar: torch.Tensor) -> list[EvalPartial]:
        return [w.evaluate(xbar, with_test=(i == 0)) for i, w in enumerate(self.workers)]

    def meter_totals(self) -> list[MeterTotals]:
        return [w.meter_totals() for w in self.workers]

    def accounts(self) -> list[Accounts]:
        return [w.accounts() for w in self.workers]

    def derived_constants(self) -> dict[str, Any]:
        return self.workers[0].derived_constants()  # every worker derives the same

    def snapshot(self) -> list[dict[str, Any]]:
        return [w.snapshot() for w in self.workers]

    def restore(self, snaps: list[dict[str, Any]]) -> None:
        if len(snaps) != len(self.workers):
            raise ValueError(
                f"checkpoint has {len(snaps)} workers but this run has {len(self.workers)}; "
                "resume with the same engine settings"
            )
        for w, s in zip(self.workers, snaps, strict=True):
            w.restore(s)


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
    derived: dict[str, Any] = field(default_factory=dict)
    """Constants the algorithm derived (``Algorithm.derived_constants``)."""
    counters: Counters = field(default_factory=Counters)
    """Work counted by kind over all workers (``<kind>_total``)."""
    ledgers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The algorithm's merged ledgers at the end (``Ledger.to_record``)."""
    evaluation: str = "average_model"
    """``Algorithm.evaluation``: what ``loss`` and ``accuracy`` are measured on."""
    metrics: dict[str, float] = field(default_factory=dict)
    """The algorithm's own metrics at the end (``Algorithm.metrics``, reduced)."""


def _gather_outputs(group: WorkerGroup) -> tuple[torch.Tensor, torch.Tensor]:
    ids, params = zip(*group.outputs(), strict=True)
    ids_t = torch.cat([i.to(torch.int64) for i in ids])
    dim = max((p.shape[1] for p in params if p.ndim == 2 and p.numel()), default=0)
    params_t = torch.cat([p.reshape(-1, dim) for p in params if p.numel()])
    order = torch.argsort(ids_t)
    return ids_t[order], params_t[order]


def figures_at(group: Any, x: torch.Tensor) -> dict[str, float]:
    """``loss = sum_i p_i f_i(x)``, training ``accuracy`` and the test figures at ``x``.

    ``group.evaluate(x)`` gives every worker's :class:`~fedopt.engine.worker.EvalPartial`
    (round or event schedule); values are summed in data-rank order, so the figures do
    not depend on the placement. With ``eval.grad_norm``, also
    ``grad_norm_sq = ||sum_i p_i grad f_i(x)||^2``, the per-node terms summed in rank
    order (the same on every engine).
    """
    parts = group.evaluate(x)
    ranks = torch.cat([p.ranks for p in parts])
    order = torch.argsort(ranks)
    values = torch.cat([p.values for p in parts])[order]
    weights = torch.cat([p.weights.to(torch.float64) for p in parts])[order]
    out: dict[str, float] = {"loss": float((values * weights).sum())}
    count = sum(p.count for p in parts)
    if count:
        out["accuracy"] = sum(p.correct for p in parts) / count
    for p in parts:
        out.update(p.test)
    if parts and all(p.grads is not None for p in parts):
        grads = torch.cat([p.grads for p in parts])[order]
        total = canonical_sum(grads)
        out["grad_norm_sq"] = float(total.square().sum())
    return out


def node_mean_figures(group: WorkerGroup, params: torch.Tensor) -> dict[str, float]:
    """Mean over the reported models of each one's figures on the global objective.

    Every row ``x_i`` of ``params`` (node order) is evaluated like the average model:
    ``loss_i = sum_j p_j f_j(x_i)`` over every data node, accuracy on all training data,
    test figures on the whole test set; each figure is then averaged over the rows
    (``math.fsum``, exactly rounded). This is DIMAT's reported curve: the accuracy of
    every agent's own model on the full test set, averaged over agents.
    """
    rows = [figures_at(group, params[i]) for i in range(len(params))]
    keys = [k for k in rows[0] if all(k in r for r in rows)] if rows else []
    return {k: math.fsum(r[k] for r in rows) / len(rows) for k in keys}


def evaluate(
    group: WorkerGroup,
    x_star: torch.Tensor | None,
    block: int,
    mode: str = "average_model",
    buf_dim: int = 0,
) -> tuple[dict[str, float], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Metrics of the reported models; ``mode`` is the algorithm's ``evaluation``.

    ``"average_model"``: ``loss = sum_i p_i f_i(x_bar)`` and ``accuracy`` (and test
    figures) at the average output model ``x_bar``. ``"node_models"``: ``loss``,
    ``accuracy`` and the test figures are the mean over the reported models of each
    model's own figures (:func:`node_mean_figures`), and the figures at ``x_bar`` are
    kept as ``avg_model_loss``, ``avg_model_accuracy``, ``avg_model_test_*``. Either
    way ``consensus_distance = mean_i ||x_i - x_bar||^2``, and when the optimum is known
    ``distance_to_opt = ||x_bar - x*||`` and ``mean_sq_distance = mean_i ||x_i - x*||^2``.

    With per-node buffers (``buf_dim > 0``) the reported rows are packed ``[x_i, b_i]``:
    ``x_bar`` carries the mean buffers ``b_bar`` (the average model is evaluated on the
    average running statistics), and the distances count the parameters only.
    """
    ids, params = _gather_outputs(group)
    p64 = params.to(torch.float64)
    xbar = canonical_sum(p64, None, block) / len(ids)
    at_avg = figures_at(group, xbar)
    x, xb = p64, xbar
    if buf_dim:
        x, xb = p64[:, :-buf_dim], xbar[:-buf_dim]
    dev = ((x - xb) ** 2).sum(1)
    figures = node_mean_figures(group, params) if mode == "node_models" else at_avg
    metrics: dict[str, float] = {
        "loss": figures["loss"],
        "consensus_distance": float(dev.sum() / len(ids)),
    }
    metrics.update({k: v for k, v in figures.items() if k != "loss"})
    if x_star is not None:
        metrics["distance_to_opt"] = float(torch.linalg.vector_norm(xb - x_star))
        metrics["mean_sq_distance"] = float(((x - x_star) ** 2).sum(1).mean())
    if mode == "node_models":
        metrics.update({f"avg_model_{k}": v for k, v in at_avg.items()})
    return metrics, xbar, ids, params


def run_schedule(
    plan: Plan,
    group: WorkerGroup,
    x_star: torch.Tensor | None,
    on_record: Callable[[dict[str, Any]], None] = lambda r: None,
    on_round: Callable[[int], None] = lambda t: None,
    resume: dict[str, Any] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    on_restore: Callable[[list[dict[str, Any]]], None] | None = None,
) -> RunResult:
    """Run synchronous rounds until a stop rule holds.

    Each round: every worker runs its phases; the round ends at the latest node clock
    (a global barrier); evaluation every ``eval.every`` rounds and at the end. With
    ``output.checkpoint_every`` the workers' snapshots and the records so far go to
    ``on_checkpoint``; ``resume`` (such a checkpoint) restores them and continues, with
    the same results as an uninterrupted run. ``on_restore`` receives the records kept
    from the checkpoint (default: replayed through ``on_record``).
    """
    cfg = plan.config
    stop = cfg.stop
    block = cfg.engine.reduce_block  # the canonical sums' block (defines the bits)
    max_rounds = stop.rounds if stop.rounds is not None else 2**62
    records: list[dict[str, Any]] = []
    sim_time = 0.0
    wall0 = time.perf_counter()

    last_eval: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    accounts: list[MergedAccounts] = []
    algo = ALGORITHMS.get(cfg.algorithm.name)
    mode = algo.evaluation
    reductions = dict(algo.metric_reductions)

    def record(t: int) -> dict[str, float]:
        metrics, xbar, ids, params = evaluate(group, x_star, block, mode, plan.buf_dim)
        last_eval[:] = [(xbar, ids, params)]
        accounts[:] = [merge_accounts(group.accounts(), reductions, block)]
        rec = make_record(
            t,
            sim_time,
            time.perf_counter() - wall0,
            metrics,
            _merged_totals(group),
            accounts[0],
            records[0] if records else None,
            ids,
            params,
        )
        records.append(rec)
        on_record(rec)
        return metrics

    every_ckpt = cfg.output.checkpoint_every
    if resume is not None:
        group.restore(resume["workers"])
        t, sim_time = int(resume["round"]), float(resume["sim_time"])
        replay_records(records, resume["records"], on_record, on_restore)
    else:
        record(0)
        t = 0
    reason = "rounds"
    while t < max_rounds:
        sim_time = group.round(t)
        group.barrier(sim_time)
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
        if on_checkpoint is not None and every_ckpt and t % every_ckpt == 0 and t < max_rounds:
            on_checkpoint(
                {
                    "round": t,
                    "sim_time": sim_time,
                    "records": list(records),
                    "workers": group.snapshot(),
                }
            )
    if records[-1]["round"] != t or not last_eval:
        if records[-1]["round"] == t:
            records.pop()
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
        totals=_merged_totals(group),
        derived=group.derived_constants(),
        counters=accounts[0].counters,
        ledgers=accounts[0].ledgers,
        evaluation=mode,
        metrics=accounts[0].metrics,
    )


def _merged_totals(group: WorkerGroup) -> MeterTotals:
    total = MeterTotals()
    for t in group.meter_totals():
        total = total.merge(t)
    return total

"""Event algorithms count work by kind, report metrics and keep ledgers, like round ones.

Gradient events (and ``grads_per_edge_event`` per edge event) are counted by the worker
in the same :class:`~fedopt.network.counters.Counters` an algorithm charges through
``EventContext.count``; records carry ``<kind>_total``, the algorithm's metrics and its
merged ledgers; ``summary.json`` the same; checkpoints keep them. The test algorithm
``counting_gossip`` (defined here) is asynchronous gossip SGD that also charges 3
``queries`` per gradient event and one ``merges`` per endpoint of each gossip event,
keeps a ledger of gradient events and reports two metrics.
"""

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pytest
import torch
from helpers import experiment
from threaded_events import run_sharded

from fedopt.algorithms.async_gossip import AsyncGossipSGD, AsyncGossipSGDConfig
from fedopt.algorithms.base import ALGORITHMS, EventContext, EventSetup
from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.engine.events_worker import EventWorker
from fedopt.run import execute, run_experiment

LSQ = {"name": "least_squares", "dim": 4, "samples_per_node": 30, "dtype": "float64"}


@dataclass
class EventLedger:
    """Gradient events applied (summed over workers) and the latest event time (max)."""

    gradient_events: int = 0
    last_time: float = 0.0

    def merge(self, other: "EventLedger") -> "EventLedger":
        return EventLedger(
            self.gradient_events + other.gradient_events, max(self.last_time, other.last_time)
        )

    def to_record(self) -> dict[str, Any]:
        return {"gradient_events": self.gradient_events, "last_time": self.last_time}


class CountingNodes:
    """Gossip nodes that charge one ``merges`` per endpoint of every gossip event."""

    def __init__(self, inner: Any, ctx: EventContext) -> None:
        self.inner, self.ctx = inner, ctx

    @property
    def S(self) -> torch.Tensor:
        return self.inner.S

    @property
    def t(self) -> torch.Tensor:
        return self.inner.t

    @property
    def x(self) -> torch.Tensor:
        return self.inner.x

    def x_rows(self, ids: torch.Tensor) -> torch.Tensor:
        return self.inner.x_rows(ids)

    def apply(self, gn, gt, ei, ej, et, grad) -> None:  # type: ignore[no-untyped-def]
        self.ctx.count("merges", torch.cat([ei, ej]))  # each worker its own endpoints
        self.inner.apply(gn, gt, ei, ej, et, grad)
        if len(gn):
            old = self.ctx.ledgers.get("events", EventLedger())
            self.ctx.ledgers["events"] = old.merge(EventLedger(len(gn), float(gt.max())))


class CountingGossipConfig(AsyncGossipSGDConfig):
    name: Literal["counting_gossip"] = "counting_gossip"  # type: ignore[assignment]


class CountingGossip(AsyncGossipSGD):
    Config = CountingGossipConfig
    metric_reductions: ClassVar[dict[str, str]] = {"x_max_abs": "max"}

    @classmethod
    def build_events(cls, config: Any, plan: Any, ctx: EventContext) -> EventSetup:
        setup = super().build_events(config, plan, ctx)
        inner = setup.grad

        def grad(rows: torch.Tensor, X: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
            ctx.count("queries", rows, 3)
            return inner(rows, X, ids)

        nodes = CountingNodes(setup.nodes, ctx)

        def metrics(ids: torch.Tensor) -> dict[str, torch.Tensor]:
            x = nodes.x_rows(ids)
            return {"x_norm": torch.linalg.vector_norm(x, dim=1), "x_max_abs": x.abs().amax(1)}

        setup.grad, setup.nodes, setup.metrics = grad, nodes, metrics
        return setup


@pytest.fixture
def counting(monkeypatch) -> None:
    """``counting_gossip`` registered for this test only."""
    monkeypatch.setitem(ALGORITHMS._entries, "counting_gossip", CountingGossip)


def raw(name: str = "counting_gossip", **extra: Any) -> dict:
    algo = {"name": name, "lr": 0.05}
    return experiment(
        topology={"name": "ring", "n": 8},
        algorithm=algo,
        problem={**LSQ, "batch_size": 5, "init_scale": 1.0},
        stop={"events": 1000},
        engine={"threads": 1, "event_block": 100},
        **extra,
    )


def stream_counts(plan: Any, events: int) -> tuple[int, int]:
    """``(gradient events, edge events)`` among the first ``events`` of the plan's stream,
    drawn again from a fresh worker's stream (independent of the counters)."""
    stream = EventWorker(plan, np.arange(plan.topology.n)).stream
    kinds = []
    while sum(len(k) for k in kinds) < events:
        kinds.append(stream.next_block().kind)
    kind = np.concatenate(kinds)[:events]
    return int((kind == 0).sum()), int((kind == 1).sum())


@pytest.mark.parametrize("name", ["dadao", "async_gossip_sgd", "continuized"])
def test_gradients_total_is_the_exact_count_of_gradient_events(name: str) -> None:
    problem = LSQ if name != "async_gossip_sgd" else {**LSQ, "batch_size": 5}
    r = raw(name)
    r["problem"] = problem
    if name != "async_gossip_sgd":
        r["algorithm"] = {"name": name}
    plan = compile_plan(validate(r))
    out = execute(plan)
    grads, edges = stream_counts(plan, 1000)
    per_edge = 2 if name == "continuized" else 0
    last = out.result.records[-1]
    assert last["events_total"] == 1000 and last["communications_total"] == edges
    assert last["gradients_total"] == grads + per_edge * edges > 0
    assert out.result.counters.as_dict() == {"gradients": grads + per_edge * edges}


def test_an_event_algorithm_counts_kinds_reports_metrics_and_keeps_ledgers(counting) -> None:
    plan = compile_plan(validate(raw()))
    out = execute(plan)
    grads, edges = stream_counts(plan, 1000)
    last = out.result.records[-1]
    assert last["gradients_total"] == grads and last["queries_total"] == 3 * grads
    assert last["merges_total"] == 2 * edges == 2 * last["communications_total"]
    assert last["ledgers"]["events"]["gradient_events"] == grads
    x = out.result.final_params.double()
    assert last["x_max_abs"] == float(x.abs().max())
    assert last["x_norm"] == pytest.approx(float(torch.linalg.vector_norm(x, dim=1).mean()))
    assert out.result.metrics == {"x_max_abs": last["x_max_abs"], "x_norm": last["x_norm"]}
    assert out.result.ledgers == last["ledgers"]
    first = out.result.records[0]
    assert first["gradients_total"] == 0 and "queries_total" not in first
    assert "ledgers" not in first  # no gradient event yet: the ledger does not exist


def test_shard_workers_count_and_merge_like_one_worker(counting) -> None:
    plan = compile_plan(validate(raw()))
    local = execute(plan)
    sharded, _ = run_sharded(plan, 3)
    strip = [{k: v for k, v in r.items() if k != "wall_time_s"} for r in local.result.records]
    assert [{k: v for k, v in r.items() if k != "wall_time_s"} for r in sharded.records] == strip
    assert sharded.counters == local.result.counters and sharded.ledgers == local.result.ledgers


def test_summary_json_carries_the_counters_metrics_and_ledgers(counting, tmp_path: Path) -> None:
    out = run_experiment(validate(raw()), out_dir=tmp_path / "r", progress=False)
    summary = json.loads((out / "summary.json").read_text())
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("gradients_total", "queries_total", "merges_total"):
        assert summary[key] == last[key] > 0
    assert summary["final_x_norm"] == last["x_norm"]
    assert summary["final_x_max_abs"] == last["x_max_abs"]
    assert summary["ledgers"] == last["ledgers"]


def test_event_checkpoints_keep_counters_and_ledgers(counting) -> None:
    r = raw(output={"checkpoint_every": 3})
    plan = compile_plan(validate(r))
    saved: list[dict] = []
    whole = execute(plan, on_checkpoint=saved.append)
    assert saved[1]["workers"][0]["counters"]["queries"] > 0
    resumed = execute(plan, resume=copy.deepcopy(saved[1]))
    strip = [{k: v for k, v in r.items() if k != "wall_time_s"} for r in whole.result.records]
    assert [{k: v for k, v in r.items() if k != "wall_time_s"} for r in resumed.result.records] == (
        strip
    )
    assert resumed.result.ledgers == whole.result.ledgers
    assert torch.equal(resumed.result.final_params, whole.result.final_params)


def test_a_checkpoint_without_worker_counters_resumes_with_the_gradient_count() -> None:
    """Event checkpoints written before counters were kept per worker still resume."""
    plan = compile_plan(validate(raw("async_gossip_sgd", output={"checkpoint_every": 4})))
    saved: list[dict] = []
    whole = execute(plan, on_checkpoint=saved.append)
    old = copy.deepcopy(saved[0])
    for w in old["workers"]:
        del w["counters"], w["ledgers"]
    resumed = execute(plan, resume=old)
    grads = whole.result.records[-1]["gradients_total"]
    assert resumed.result.records[-1]["gradients_total"] == grads > 0


def test_a_metric_of_the_wrong_shape_and_node_models_evaluation_are_refused(
    counting, monkeypatch
) -> None:
    plan = compile_plan(validate(raw()))
    w = EventWorker(plan, np.arange(8))
    w.setup.metrics = lambda ids: {"bad": torch.zeros(3)}
    with pytest.raises(ValueError, match=r"metric 'bad' has shape \(3,\).*shape \(8,\)"):
        w.accounts()
    monkeypatch.setattr(CountingGossip, "evaluation", "node_models")
    with pytest.raises(TypeError, match="evaluates the average model only"):
        EventWorker(plan, np.arange(8))

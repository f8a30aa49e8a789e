"""Counters by kind, their compute-time costs, algorithm metrics, ledgers and node-model
evaluation, all through the one record maker."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import experiment, run

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.engine.ledger import merge_ledgers
from fedopt.engine.records import reduce_metric
from fedopt.engine.reduce import canonical_sum
from fedopt.engine.worker import Worker
from fedopt.errors import ConfigError
from fedopt.network.counters import Counters, canonical_kinds, merge_counters, register_kind
from fedopt.run import execute, run_experiment

PLUGIN = str(Path(__file__).parent / "counting_plugin.py")


def counting(name: str = "counting_dsgd", **sections: object) -> dict:
    raw = experiment(
        topology={"name": "ring", "n": 6},
        algorithm={"name": name, "lr": 0.1},
        problem={
            "name": "logistic",
            "dim": 5,
            "samples_per_node": 20,
            "batch_size": 4,
            "generator": "seeded",
            "heterogeneity": 1.0,
        },
        stop={"rounds": 4},
        eval={"every": 2},
        **sections,
    )
    raw["plugins"] = [PLUGIN]
    return raw


def no_wall(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in records]


# -- counters ------------------------------------------------------------------------


def test_counters_add_merge_and_record_fields() -> None:
    a = Counters({"queries": 3, "gradients": 2})
    b = Counters({"merges": 1, "queries": 4})
    total = merge_counters([a, b])
    assert total.as_dict() == {"gradients": 2, "queries": 7, "merges": 1}
    assert list(total) == ["gradients", "queries", "merges"]  # canonical, not insertion
    assert total.to_record() == {"gradients_total": 2, "queries_total": 7, "merges_total": 1}
    assert a.as_dict() == {"gradients": 2, "queries": 3}  # merge leaves operands alone
    assert Counters().to_record() == {"gradients_total": 0}  # gradients always written
    assert total["forwards"] == 0
    register_kind("zz_custom")
    assert canonical_kinds({"zz_custom", "backwards", "gradients"}) == [
        "gradients",
        "backwards",
        "zz_custom",
    ]


def test_counters_refuse_unknown_kinds_and_negative_counts() -> None:
    with pytest.raises(ValueError, match=r"unknown counter kind 'querys'.*queries"):
        Counters().add("querys", 1)
    with pytest.raises(ValueError, match="negative"):
        Counters().add("gradients", -1)
    with pytest.raises(ValueError, match="lower-case"):
        register_kind("Bad Kind")


def test_fedavg_counts_exact_gradients_and_legacy_record_fields() -> None:
    # 4 clients x 3 local steps x 5 rounds = 60 gradients; time as in test_sim_time
    _, result, _ = run(
        experiment(
            topology={"name": "star", "n": 5},
            algorithm={"name": "fedavg", "lr": 0.1, "local_steps": 3, "client_fraction": 1.0},
            problem={"name": "quadratic", "dim": 4},
            network={"latency_s": 0.005, "bandwidth_Bps": 4800.0},
            compute={"step_time_s": 0.02},
            stop={"rounds": 5},
            eval={"every": 1},
        )
    )
    assert [r["gradients_total"] for r in result.records] == [12 * t for t in range(6)]
    assert result.counters.as_dict() == {"gradients": 60}
    per_round = (0.005 + 48 / 4800) + 0.06 + (0.005 + 52 / 4800)
    assert result.sim_time_s == pytest.approx(5 * per_round, rel=1e-12)
    assert list(result.records[-1]) == [  # the fields (and order) records always had
        "round",
        "sim_time_s",
        "wall_time_s",
        "loss",
        "consensus_distance",
        "distance_to_opt",
        "mean_sq_distance",
        "messages_total",
        "bytes_total",
        "gradients_total",
        "relative_sq_distance",
    ]


def test_cost_s_gradients_is_step_time_s() -> None:
    base = dict(topology={"name": "ring", "n": 4}, compute={"speed_spread": 0.3})
    _, a, _ = run(experiment(**base | {"compute": {"speed_spread": 0.3, "step_time_s": 0.07}}))
    _, b, _ = run(
        experiment(**base | {"compute": {"speed_spread": 0.3, "cost_s": {"gradients": 0.07}}})
    )
    assert no_wall(a.records) == no_wall(b.records)
    assert a.sim_time_s > 0.07 * 5 * 0.5  # the cost is really charged


def test_compute_cost_s_is_checked_at_validation() -> None:
    with pytest.raises(ConfigError, match="unknown counter kind 'query'"):
        validate(experiment(compute={"cost_s": {"query": 0.1}}))
    with pytest.raises(ConfigError, match="give only one"):
        validate(experiment(compute={"step_time_s": 0.1, "cost_s": {"gradients": 0.2}}))
    with pytest.raises(ConfigError, match="finite and >= 0"):
        validate(experiment(compute={"cost_s": {"queries": -1.0}}))


def test_every_kind_is_counted_and_costs_its_time() -> None:
    # per round, every node: 1 gradient (0.1 s) + 2 queries (0.5 s each) + 1 hvp (0.25 s)
    raw = counting(
        network={"latency_s": 0.0, "bandwidth_Bps": 1e15},
        compute={"step_time_s": 0.1, "cost_s": {"queries": 0.5, "hvp_calls": 0.25}},
    )
    _, result, _ = run(raw)
    last = result.records[-1]
    assert result.counters.as_dict() == {"gradients": 24, "queries": 48, "hvp_calls": 24}
    assert (last["gradients_total"], last["queries_total"], last["hvp_calls_total"]) == (24, 48, 24)
    assert "per_sample_gradients_total" not in last  # only kinds with non-zero use
    assert result.sim_time_s == pytest.approx(4 * 1.35, rel=1e-9)
    free = counting(network={"latency_s": 0.0, "bandwidth_Bps": 1e15}, compute={"step_time_s": 0.1})
    _, zero, _ = run(free)
    assert zero.sim_time_s == pytest.approx(4 * 0.1, rel=1e-9)  # other kinds cost 0 by default
    assert zero.records[-1]["queries_total"] == 48


# -- algorithm metrics and ledgers -----------------------------------------------------


def test_algorithm_metrics_and_ledgers_in_records_and_summary(tmp_path: Path) -> None:
    raw = counting(engine={"threads": 1, "chunk_size": 4}, output={"dir": str(tmp_path / "r")})
    out = run_experiment(validate(raw), progress=False)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert [r["ledgers"]["counting"] for r in records] == [
        {"node_rounds": 0, "last_round": -1},
        {"node_rounds": 12, "last_round": 1},
        {"node_rounds": 24, "last_round": 3},
    ]
    assert summary["ledgers"] == {"counting": {"node_rounds": 24, "last_round": 3}}
    assert summary["queries_total"] == 48 and summary["hvp_calls_total"] == 24
    x = torch.from_numpy(np.load(out / "final_params.npy")).double()
    norms = torch.linalg.vector_norm(x, dim=1)
    assert records[-1]["x_norm"] == float(canonical_sum(norms, None, 4)) / 6
    assert records[-1]["x_max_abs"] == float(x.abs().max())
    assert summary["final_x_norm"] == records[-1]["x_norm"]
    assert summary["evaluation"] == "average_model"


def test_counters_and_ledgers_survive_a_checkpoint() -> None:
    plan = compile_plan(validate(counting()))
    a = Worker(plan, np.arange(6), torch.device("cpu"))
    for t in range(3):
        a.round(t)
    snap = a.snapshot()
    b = Worker(plan, np.arange(6), torch.device("cpu"))
    b.restore(snap)
    a.round(3)
    b.round(3)
    ra, rb = a.accounts(), b.accounts()
    assert ra.counters == rb.counters == Counters({"gradients": 24, "queries": 48, "hvp_calls": 24})
    assert ra.ledgers["counting"].to_record() == rb.ledgers["counting"].to_record()
    assert rb.ledgers["counting"].to_record() == {"node_rounds": 24, "last_round": 3}


def test_merge_ledgers_and_reductions() -> None:
    class Max:
        def __init__(self, v: int) -> None:
            self.v = v

        def merge(self, other: Max) -> Max:
            return Max(max(self.v, other.v))

        def to_record(self) -> dict:
            return {"v": self.v}

    merged = merge_ledgers([{"m": Max(3)}, {}, {"m": Max(5), "k": Max(1)}])
    assert list(merged) == ["k", "m"] and merged["m"].to_record() == {"v": 5}
    with pytest.raises(TypeError, match="ledger 'bad'"):
        merge_ledgers([{"bad": 3}])  # type: ignore[dict-item]
    v = torch.tensor([1.0, float("nan"), 3.0, 8.0], dtype=torch.float64)
    assert reduce_metric(v, "mean", 2) == 4.0
    assert (reduce_metric(v, "sum", 2), reduce_metric(v, "max", 2)) == (12.0, 8.0)
    assert reduce_metric(v, "min", 2) == 1.0
    assert reduce_metric(torch.full((2,), float("nan"), dtype=torch.float64), "mean", 2) is None
    with pytest.raises(ValueError, match="median"):
        reduce_metric(v, "median", 2)


# -- evaluation: average model or node models -----------------------------------------


def test_node_models_evaluation_is_the_mean_of_each_model_on_the_global_objective() -> None:
    _, avg, _ = run(counting())
    _, nodes, worker = run(counting("counting_dsgd_nodes"))
    assert nodes.evaluation == "node_models"
    for ra, rn in zip(avg.records, nodes.records, strict=True):
        assert rn["avg_model_loss"] == ra["loss"]  # the average model's figures, renamed
        assert rn["avg_model_accuracy"] == ra["accuracy"]
        assert rn["consensus_distance"] == ra["consensus_distance"]
        assert rn["ledgers"] == ra["ledgers"] and rn["x_norm"] == ra["x_norm"]
    last = nodes.records[-1]
    o = worker.oracle
    k = len(o.data_ranks)
    losses, accs = [], []
    for x in nodes.final_params:
        values = o.value(x.unsqueeze(0).expand(k, -1), torch.arange(k)).double()
        losses.append(float((values * o.weights.double()).sum()))
        sums = o.evaluate(x)
        accs.append(sums["correct"] / sums["count"])
    assert last["loss"] == math.fsum(losses) / len(losses)
    assert last["accuracy"] == math.fsum(accs) / len(accs)
    assert last["consensus_distance"] > 0
    assert last["loss"] > last["avg_model_loss"]  # Jensen: the logistic loss is convex


def test_event_records_come_from_the_same_record_maker() -> None:
    raw = experiment(
        topology={"name": "ring", "n": 8},
        algorithm={"name": "dadao"},
        problem={"name": "least_squares", "dim": 5, "samples_per_node": 50, "dtype": "float64"},
        stop={"sim_time_s": 20.0},
        engine={"threads": 1, "event_block": 256},
    )
    result = execute(compile_plan(validate(raw))).result
    first, last = result.records[0], result.records[-1]
    assert list(last)[:5] == ["round", "sim_time_s", "wall_time_s", "loss", "consensus_distance"]
    assert first["relative_sq_distance"] == 1.0
    assert last["relative_sq_distance"] == last["mean_sq_distance"] / first["mean_sq_distance"]
    assert last["events_total"] == last["gradients_total"] + last["communications_total"]
    assert result.counters.as_dict() == {"gradients": last["gradients_total"]} != {}

"""Generic checks for event-schedule algorithms (Poisson clocks), run from YAML dicts.

Driven by ``tests/algorithm_info.py``: adding an event algorithm = adding one
:class:`~algorithm_info.AlgorithmInfo` with ``schedule="events"`` there.
"""

import copy
import json
import warnings
from pathlib import Path

import pytest
import torch
from algorithm_info import EVENT_INFOS

from fedopt.algorithms import ALGORITHMS
from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.errors import ConfigError
from fedopt.run import execute, run_experiment

INFOS = {info.name: info for info in EVENT_INFOS}
DADAO = INFOS["dadao"]


def test_every_event_algorithm_has_an_entry() -> None:
    events = {name for name, algo in ALGORITHMS.items() if algo.schedule == "events"}
    assert events == set(INFOS)


def run(raw: dict):
    return execute(compile_plan(validate(raw)))


@pytest.mark.parametrize("name", sorted(INFOS))
def test_event_algorithm_converges_meters_exactly_and_is_deterministic(name: str) -> None:
    info = INFOS[name]
    raw = info.raw
    a, b = run(raw), run(raw)
    last = a.result.records[-1]
    assert last[info.metric] < info.tol
    assert a.result.sim_time_s == 400.0 and a.result.stop_reason == "sim_time"
    # every gossip event is two messages of y+z (dim float64) plus the header
    assert a.result.totals.messages == 2 * last["communications_total"]
    assert a.result.totals.bytes == a.result.totals.messages * (5 * 8 + 32)
    assert int(a.edge_messages.sum()) == a.result.totals.messages
    # gradient clocks tick at rate 1 per node
    assert abs(last["gradients_total"] / 400.0 - 8) < 0.8
    assert torch.equal(a.result.final_params, b.result.final_params)
    strip = [{k: v for k, v in r.items() if k != "wall_time_s"} for r in a.result.records]
    assert strip == [{k: v for k, v in r.items() if k != "wall_time_s"} for r in b.result.records]


def test_summary_reports_gradient_and_communication_totals(tmp_path: Path) -> None:
    raw = copy.deepcopy(DADAO.raw)
    raw["stop"] = {"events": 2000}
    out = run_experiment(validate(raw), out_dir=tmp_path / "r", progress=False)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["events_total"] >= 2000 and summary["stop_reason"] == "events"
    assert summary["gradients_total"] + summary["communications_total"] == summary["events_total"]
    assert summary["messages_total"] == 2 * summary["communications_total"]


def error_of(**changes: object) -> str:
    raw = copy.deepcopy(DADAO.raw)
    raw.update(changes)
    with pytest.raises(ConfigError) as info:
        run(raw)
    return str(info.value)


def test_non_strongly_convex_problem_is_rejected() -> None:
    msg = error_of(problem={"name": "logistic", "dim": 4, "samples_per_node": 20, "l2": 0.0})
    assert "algorithm.mu" in msg and "strongly convex" in msg and "problem.l2" in msg


def test_disconnected_graph_is_rejected(tmp_path: Path) -> None:
    f = tmp_path / "two.edgelist"
    f.write_text("0 1\n2 3\n")
    msg = error_of(topology={"name": str(f)})
    assert "disconnected" in msg


def test_event_stop_rule_needed_and_other_limits() -> None:
    assert "stop.sim_time_s, stop.events" in error_of(stop={"rounds": 10})
    msg = error_of(topology={"name": "one_peer_exponential", "n": 8})
    assert "needs a sequence of connected graphs" in msg and "random_geometric_sequence" in msg
    with pytest.raises(ConfigError, match=r"algorithm\.lambda_mix"):
        validate({**DADAO.raw, "algorithm": {"name": "dadao", "lambda_mix": 0}})


def test_rate_below_threshold_warns_and_fails_to_converge() -> None:
    raw = copy.deepcopy(DADAO.raw)
    raw["algorithm"] = {"name": "dadao", "lambda_mix": 0.5 * 9.7774}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = run(raw)
    assert any("below the threshold" in str(w.message) for w in caught)
    assert not out.result.records[-1]["relative_sq_distance"] < 1e-3


def test_dadao_on_a_time_varying_sequence_of_connected_graphs() -> None:
    raw = copy.deepcopy(DADAO.raw)
    raw["topology"] = {
        "name": "random_geometric_sequence",
        "n": 16,
        "params": {"count": 10, "radius": 0.4},
    }
    raw["stop"] = {"sim_time_s": 300.0}
    out = run(raw)
    last = out.result.records[-1]
    assert last["relative_sq_distance"] < 1e-6  # linear rate: ~4e-18 by t=600
    assert out.result.totals.messages == 2 * last["communications_total"]


def test_records_at_every_time_tick_leave_the_run_unchanged() -> None:
    raw = copy.deepcopy(DADAO.raw)
    raw["stop"] = {"sim_time_s": 100.0}
    plain = run(raw)
    raw["eval"] = {"every_time_s": 12.5}
    ticked = run(raw)
    times = [r["sim_time_s"] for r in ticked.result.records]
    assert times == [12.5 * k for k in range(9)]  # 0, 12.5, ..., 100 (the stop)
    assert torch.equal(ticked.result.final_params, plain.result.final_params)
    last = ticked.result.records[-1]
    assert last["events_total"] == plain.result.records[-1]["events_total"]
    grads = [r["gradients_total"] for r in ticked.result.records]
    assert grads == sorted(grads) and 8 * 100 * 0.9 < grads[-1] < 8 * 100 * 1.1

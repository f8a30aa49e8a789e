"""The event schedule on Ray: same bits, counts and per-edge meters as the local engine."""

import copy

import pytest
import torch
from helpers import experiment

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.run import execute

LSQ = {
    "name": "least_squares",
    "dim": 5,
    "samples_per_node": 50,
    "noise": 0.5,
    "heterogeneity": 3.0,
    "dtype": "float64",
}
CASES = {
    "dadao-ring": experiment(
        topology={"name": "ring", "n": 8},
        algorithm={"name": "dadao"},
        problem=LSQ,
        stop={"sim_time_s": 25.0},
        engine={"threads": 1, "event_block": 256},
    ),
    "dadao-time-varying": experiment(
        topology={"name": "random_geometric_sequence", "n": 10, "params": {"count": 4}},
        algorithm={"name": "dadao"},
        problem=LSQ,
        stop={"sim_time_s": 20.0},
        eval={"every_time_s": 3.0},
        engine={"threads": 1, "event_block": 256},
    ),
    "async-gossip-sgd": experiment(
        topology={"name": "grid", "n": 9},
        algorithm={"name": "async_gossip_sgd", "lr": 0.05},
        problem={**LSQ, "batch_size": 8},
        stop={"events": 700},
        engine={"threads": 1, "event_block": 256},
    ),
}


def _strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in records]


@pytest.mark.parametrize(
    ("case", "actors"),
    [("dadao-ring", 2), ("dadao-ring", 3), ("dadao-time-varying", 2), ("async-gossip-sgd", 3)],
)
def test_event_run_on_ray_equals_local(ray_session, case: str, actors: int) -> None:
    raw = CASES[case]
    local = execute(compile_plan(validate(raw)))
    ray_raw = copy.deepcopy(raw)
    ray_raw["engine"].update(kind="ray", actors=actors)
    out = execute(compile_plan(validate(ray_raw)))
    assert len(out.workers) == actors
    assert torch.equal(out.result.final_params, local.result.final_params)
    assert _strip(out.result.records) == _strip(local.result.records)
    assert (out.edge_messages == local.edge_messages).all()
    assert (out.edge_bytes == local.edge_bytes).all()
    assert out.result.derived == local.result.derived and local.result.derived
    last = out.result.records[-1]
    assert last["events_total"] == last["gradients_total"] + last["communications_total"]
    assert out.result.totals.messages == 2 * last["communications_total"] > 0


def test_bench_dadao_on_ray_counts_like_local(ray_session) -> None:
    from fedopt.bench.dadao import bench_dadao

    local = bench_dadao(12, 3, events=1500, graph="ring", block=512)
    on_ray = bench_dadao(12, 3, events=1500, graph="ring", engine="ray", actors=2, block=512)
    assert on_ray["actors"] == 2
    for key in ("events", "gradients_total", "communications_total", "final_relative_error"):
        assert on_ray[key] == local[key]


def test_event_checkpoint_on_ray_resumes_with_the_local_bits(ray_session) -> None:
    raw = copy.deepcopy(CASES["dadao-time-varying"])
    raw["output"] = {"checkpoint_every": 3}
    local = execute(compile_plan(validate(raw)))
    raw["engine"].update(kind="ray", actors=2)
    plan = compile_plan(validate(raw))
    saved: list[dict] = []
    first = execute(plan, on_checkpoint=saved.append)
    assert [c["round"] for c in saved] == list(range(3, local.result.rounds, 3))
    assert len(saved[0]["workers"]) == 2  # one snapshot per actor
    blocks: list[int] = []
    resumed = execute(plan, resume=saved[1], on_round=blocks.append)
    assert blocks == list(range(7, local.result.rounds + 1))  # only the blocks after 6
    for out in (first, resumed):
        assert torch.equal(out.result.final_params, local.result.final_params)
        assert _strip(out.result.records) == _strip(local.result.records)
        assert (out.edge_messages == local.edge_messages).all()

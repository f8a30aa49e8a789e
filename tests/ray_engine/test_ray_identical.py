"""The Ray engine gives the local engine's numbers bit for bit, on any placement."""

import copy

import numpy as np
import pytest
import torch
from helpers import experiment

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.run import execute

CASES = {
    "dsgd-logistic-torus": experiment(
        topology={"name": "torus", "n": 16},
        algorithm={"name": "dsgd", "lr": 0.1, "local_steps": 2},
        problem={
            "name": "logistic",
            "dim": 10,
            "samples_per_node": 40,
            "batch_size": 8,
            "generator": "seeded",
            "heterogeneity": 0.5,
        },
        network={"loss": 0.2},
        compute={"speed_spread": 0.5, "straggler_prob": 0.2},
        stop={"rounds": 4},
        eval={"every": 2},
    ),
    "fedavg-digits-mlp": experiment(
        topology={"name": "star", "n": 13},
        algorithm={"name": "fedavg", "lr": 0.1, "local_steps": 3, "client_fraction": 0.5},
        problem={
            "name": "digits_mlp",
            "hidden": 8,
            "batch_size": 8,
            "partition": {"kind": "dirichlet", "alpha": 0.5},
        },
        stop={"rounds": 3},
        eval={"every": 1},
    ),
    "dsgd-one-peer-exp": experiment(
        topology={"name": "one_peer_exponential", "n": 8},
        algorithm={"name": "dsgd", "lr": 0.2},
        problem={"name": "quadratic", "dim": 5, "noise_std": 0.1},
        stop={"rounds": 5},
    ),
}
ENGINES = {
    "1-actor": {"actors": 1},
    "2-actors": {"actors": 2},
    "3-actors-partition": {"actors": 3, "placement": "partition"},
}


def run_on(raw: dict, **engine: object):
    raw = copy.deepcopy(raw)
    # blocks of 4 rows: the canonical sums are split across actors
    raw["engine"] = {"threads": 1, "chunk_size": 4, "reduce_block": 4, **engine}
    return execute(compile_plan(validate(raw)))


def assert_identical(a, b) -> None:
    def strip(recs: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in recs]

    assert strip(a.result.records) == strip(b.result.records)
    assert torch.equal(a.result.final_ids, b.result.final_ids)
    assert torch.equal(a.result.final_params, b.result.final_params)
    assert np.array_equal(a.edge_messages, b.edge_messages)
    assert np.array_equal(a.edge_bytes, b.edge_bytes)
    assert a.result.sim_time_s == b.result.sim_time_s


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_ray_equals_local(ray_session, case: str, engine: str) -> None:
    local = run_on(CASES[case], kind="local")
    ray_out = run_on(CASES[case], kind="ray", **ENGINES[engine])
    assert len(ray_out.workers) == ENGINES[engine]["actors"]
    assert_identical(local, ray_out)


def test_one_node_per_actor_equals_local(ray_session) -> None:
    raw = CASES["dsgd-one-peer-exp"]
    local = run_on(raw, kind="local")
    ray_out = run_on(raw, kind="ray", one_node_per_actor=True)
    assert len(ray_out.workers) == 8
    assert_identical(local, ray_out)


def test_server_is_pinned_to_its_own_actor(ray_session) -> None:
    out = run_on(CASES["fedavg-digits-mlp"], kind="ray", actors=3)
    assert out.workers[0]["nodes"] == [0, 0] and out.workers[0]["num_nodes"] == 1

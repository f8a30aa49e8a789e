"""Logical payloads and the neighbours pattern give the local engine's numbers on Ray."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import experiment

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.run import execute

PROBE = str(Path(__file__).resolve().parents[1] / "plugins" / "payload_probe.py")
HEADER = 32

CASES = {
    "torus": experiment(
        plugins=[PROBE],
        topology={"name": "torus", "n": 16},
        algorithm={"name": "payload_probe"},
        network={"loss": 0.2},
        stop={"rounds": 3},
    ),
    "ring-faults": experiment(
        plugins=[PROBE],
        topology={"name": "ring", "n": 9},
        algorithm={"name": "payload_probe", "check_equal": False},
        faults={"crashes": [{"nodes": [4], "from_round": 1}], "drop": 0.2, "partial_receipt": 1},
        stop={"rounds": 3},
    ),
}


def run_on(raw: dict, **engine: object):
    raw = copy.deepcopy(raw)
    raw["engine"] = {"threads": 1, "chunk_size": 4, **engine}
    return execute(compile_plan(validate(raw)))


@pytest.mark.parametrize("actors", [2, 3])
@pytest.mark.parametrize("case", sorted(CASES))
def test_payload_probe_ray_equals_local(ray_session, case: str, actors: int) -> None:
    local = run_on(CASES[case], kind="local")
    ray_out = run_on(CASES[case], kind="ray", actors=actors)
    assert torch.equal(local.result.final_params, ray_out.result.final_params)
    assert np.array_equal(local.edge_bytes, ray_out.edge_bytes)
    assert np.array_equal(local.edge_messages, ray_out.edge_messages)
    assert local.result.totals.by_kind == ray_out.result.totals.by_kind
    assert local.result.sim_time_s == ray_out.result.sim_time_s
    if case == "torus":  # lossless count is exact; retransmissions repeat the same size
        nbr_msgs, nbr_bytes = ray_out.result.totals.by_kind["nbr"]
        assert nbr_msgs == 3 * 64 and nbr_bytes % (22 + HEADER) == 0

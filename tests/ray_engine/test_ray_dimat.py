"""DIMAT's activation-matching merge gives the local engine's bits on 2 Ray actors.

Agents 0-2 and 3-4 live on different actors, so on the ring every actor receives models
from the other one and BN-resets, runs and permutes them on its own agents' data.
"""

import copy

import numpy as np
import pytest
import torch
from helpers import experiment

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.run import execute

RAW = experiment(
    topology={"name": "ring", "n": 5},
    algorithm={"name": "dimat", "epochs": 1, "pretrain_epochs": 1},
    problem={
        "name": "digits_model",
        "model": {"name": "digits_cnn_bn", "channels": [3, 4]},
        "batch_size": 64,
        "batchnorm": "running",
        "same_init": False,
    },
    stop={"rounds": 2},
    eval={"every": 1},
)


def _run(**engine: object):
    raw = copy.deepcopy(RAW)
    raw["engine"] = {"threads": 1, **engine}
    return execute(compile_plan(validate(raw)))


@pytest.mark.slow  # two actor starts, ~21 s on the 2-core machine
def test_dimat_ray_equals_local(ray_session) -> None:
    local, ray_out = _run(kind="local"), _run(kind="ray", actors=2)
    assert local.result.final_params.shape == (5, 319 + 14)  # parameters, then buffers
    assert torch.equal(local.result.final_params, ray_out.result.final_params)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rs]  # noqa: E731
    assert strip(local.result.records) == strip(ray_out.result.records)
    assert np.array_equal(local.edge_bytes, ray_out.edge_bytes)
    assert local.result.totals.by_kind == ray_out.result.totals.by_kind

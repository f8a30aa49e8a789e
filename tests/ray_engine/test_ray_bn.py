"""FedAvg with running BatchNorm statistics gives the local engine's bits on 2 Ray actors."""

import copy

import numpy as np
import torch
from helpers import experiment

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.run import execute

RAW = experiment(
    topology={"name": "star", "n": 5},
    algorithm={"name": "fedavg", "lr": 0.1, "local_steps": 2, "client_fraction": 0.75},
    problem={
        "name": "digits_model",
        "model": {"name": "digits_cnn_bn", "channels": [3, 4]},
        "batch_size": 8,
        "partition": {"kind": "dirichlet", "alpha": 0.5},
        "batchnorm": "running",
    },
    stop={"rounds": 2},
    eval={"every": 1},
)


def _run(**engine: object):
    raw = copy.deepcopy(RAW)
    raw["engine"] = {"threads": 1, **engine}
    return execute(compile_plan(validate(raw)))


def test_fedavg_running_bn_ray_equals_local(ray_session) -> None:
    local, ray_out = _run(kind="local"), _run(kind="ray", actors=2)
    assert local.result.final_params.shape == (1, 319 + 14)  # parameters, then buffers
    assert torch.equal(local.result.final_params, ray_out.result.final_params)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rs]  # noqa: E731
    assert strip(local.result.records) == strip(ray_out.result.records)
    assert np.array_equal(local.edge_bytes, ray_out.edge_bytes)
    assert local.result.totals.by_kind == ray_out.result.totals.by_kind

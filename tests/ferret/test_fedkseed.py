"""FedKSeed and FedMeZO on a tiny neural model: replay, tables, bytes, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import experiment

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.engine.local import run_local
from fedopt.engine.worker import Worker
from fedopt.errors import ConfigError

HEADER, DIM = 32, 610


def raw(alg: dict, rounds: int = 3) -> dict:
    base = {"lr": 1e-3, "eps": 1e-3, "local_steps": 20, "client_fraction": 0.2}
    return experiment(
        topology={"name": "star", "n": 11},
        algorithm={**base, **alg},
        problem={"name": "digits_mlp", "hidden": 8, "batch_size": 8},
        stop={"rounds": rounds},
        eval={"every": rounds},
    )


def test_replaying_the_seed_table_reproduces_the_local_models() -> None:
    K = 64
    plan = compile_plan(validate(raw({"name": "fedkseed", "K": K})))
    worker = Worker(plan, np.arange(plan.topology.n), torch.device("cpu"))
    algo = worker.algorithm
    w = worker.state["w"][0].clone()
    ids, rows = torch.tensor([3, 7]), worker.ctx.data_rows[torch.tensor([3, 7])]
    models, steps = algo.local(w, ids, rows, 0)
    table = torch.zeros(2, K, dtype=torch.float64)
    for idx, g in steps:
        table.index_put_((torch.arange(2), idx), g, accumulate=True)
    assert int((table != 0).sum(dim=1).max()) <= 20  # one seed per step
    for i in range(2):
        replayed = w.double() - algo.config.lr * algo.replay(table[i], DIM)[0]
        assert torch.allclose(replayed, models[i].double(), rtol=0, atol=1e-6)


def test_one_client_per_round_server_replay_equals_the_client_model() -> None:
    r = raw({"name": "fedkseed", "K": 64, "client_fraction": 0.1, "wire_dtype": "float64"}, 1)
    plan = compile_plan(validate(r))
    worker = Worker(plan, np.arange(plan.topology.n), torch.device("cpu"))
    w0 = worker.state["w"][0].clone()
    worker.round(0)
    ids = torch.tensor([c for c in range(1, 11)])
    from fedopt.algorithms.fedavg import sample_clients

    client = sample_clients(0, ids, 0.1, 0)
    rows = worker.ctx.data_rows[client]
    model, _ = worker.algorithm.local(w0, client, rows, 0)
    assert torch.allclose(worker.state["w"][0], model[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("accounting", ["true_size", "paper"])
def test_fedkseed_bytes_per_round(accounting: str) -> None:
    K, m, R = 256, 2, 3
    result, _ = run_local(
        compile_plan(validate(raw({"name": "fedkseed", "K": K, "accounting": accounting}, R)))
    )
    size = (4 if accounting == "true_size" else 2) * K
    assert result.totals.by_kind["table"] == [m * R, m * R * (size + HEADER)]
    assert result.totals.by_kind["model"] == [
        m * R,
        m * (8 + HEADER) + (R - 1) * m * (size + HEADER),
    ]
    rec = result.records[-1]
    assert rec["forwards_total"] == R * m * 2 * 20


def test_fedmezo_sends_full_models_and_counts_forwards() -> None:
    m, R = 2, 2
    result, _ = run_local(compile_plan(validate(raw({"name": "fedmezo"}, R))))
    assert result.totals.by_kind["update"] == [m * R, m * R * (4 * DIM + HEADER)]
    assert result.records[-1]["forwards_total"] == R * m * 2 * 20
    assert result.records[-1]["basis_entries_total"] == R * m * 20 * DIM


@pytest.mark.parametrize(
    ("alg", "match"),
    [
        ({"name": "fedkseed", "K": 0}, "algorithm.K"),
        ({"name": "fedkseed", "accounting": "paper", "wire_dtype": "float64"}, "2 bytes per"),
        ({"name": "fedmezo", "client_fraction": 0.01}, "rounds to 0 sampled clients"),
    ],
)
def test_bad_inputs(alg: dict, match: str) -> None:
    with pytest.raises((ConfigError, ValueError), match=match):
        compile_plan(validate(raw(alg)))


@pytest.mark.parametrize("name", ["fedkseed", "fedmezo"])
def test_a_problem_without_function_values_is_refused(name: str) -> None:
    r = raw({"name": name})
    r["problem"] = {"name": "quadratic", "dim": 5}
    with pytest.raises(ConfigError, match="needs capability 'batch_values'"):
        compile_plan(validate(r))

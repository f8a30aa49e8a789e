"""``eval.grad_norm``: the squared norm of the full gradient of F at the evaluated model."""

from __future__ import annotations

import torch
from helpers import experiment, run

from fedopt.problems import PROBLEMS


def _raw(**eval_section: object) -> dict:
    return experiment(
        topology={"name": "star", "n": 6},
        algorithm={"name": "fedavg", "lr": 0.05, "local_steps": 2},
        problem={"name": "least_squares", "dim": 4, "dtype": "float64", "heterogeneity": 1.0},
        stop={"rounds": 6},
        eval={"every": 3, **eval_section},
    )


def test_grad_norm_is_the_norm_of_the_weighted_full_gradient() -> None:
    plan, result, _ = run(_raw(grad_norm=True))
    cfg = plan.config
    n_data = len(plan.data_nodes)
    oracle = PROBLEMS.get(cfg.problem.name).build(
        cfg.problem,
        seed=cfg.seed,
        data_ranks=torch.arange(n_data),
        num_data_nodes=n_data,
        device=torch.device("cpu"),
    )
    x = result.final_model.to(torch.float64)
    rows = torch.arange(n_data)
    g = (oracle.full_grad(x.expand(n_data, -1), rows) * oracle.weights.unsqueeze(1)).sum(0)
    last = result.records[-1]
    assert [r["round"] for r in result.records] == [0, 3, 6]
    assert abs(last["grad_norm_sq"] - float(g.square().sum())) <= 1e-12 * float(g.square().sum())
    assert result.records[0]["grad_norm_sq"] > 3 * last["grad_norm_sq"]  # it descends


def test_grad_norm_is_off_by_default() -> None:
    _, result, _ = run(_raw())
    assert all("grad_norm_sq" not in r for r in result.records)

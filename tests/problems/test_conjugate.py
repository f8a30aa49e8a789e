"""``conjugate_grad`` inverts ``full_grad`` (``grad f* = (grad f)^-1``) where available."""

import pytest
import torch
from helpers import experiment

from fedopt.config import validate
from fedopt.problems import PROBLEMS
from fedopt.problems.capabilities import Capability


@pytest.mark.parametrize(
    "problem",
    [
        {"name": "least_squares", "dim": 5, "samples_per_node": 20, "dtype": "float64"},
        {"name": "least_squares", "dim": 8, "samples_per_node": 3, "l2": 0.5, "dtype": "float64"},
        {"name": "quadratic", "dim": 5, "mu": 0.2, "L": 3.0, "dtype": "float64"},
    ],
)
def test_conjugate_grad_inverts_the_gradient(problem: dict) -> None:
    cfg = validate(experiment(problem=problem)).problem
    oracle = PROBLEMS.get(problem["name"]).build(
        cfg, seed=3, data_ranks=torch.arange(6), num_data_nodes=6, device=torch.device("cpu")
    )
    assert oracle.provides(Capability.CONJUGATE_GRADIENTS)
    rows = torch.tensor([4, 1, 5])
    x = torch.randn(
        3, problem["dim"], dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    back = oracle.conjugate_grad(oracle.full_grad(x, rows), rows)
    assert torch.allclose(back, x, atol=1e-10)


def test_singular_least_squares_has_no_conjugate_gradient() -> None:
    problem = {"name": "least_squares", "dim": 8, "samples_per_node": 3, "dtype": "float64"}
    cfg = validate(experiment(problem=problem)).problem
    oracle = PROBLEMS.get("least_squares").build(
        cfg, seed=0, data_ranks=torch.arange(2), num_data_nodes=2, device=torch.device("cpu")
    )
    with pytest.raises(ValueError, match="l2 > 0"):
        oracle.conjugate_grad(torch.zeros(1, 8, dtype=torch.float64), torch.tensor([0]))

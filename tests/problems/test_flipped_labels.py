"""Label flipping: the attacker's gradient is the honest one with labels y -> K - 1 - y."""

import pytest
import torch
from helpers import experiment

from fedopt.config import validate
from fedopt.problems import PROBLEMS
from fedopt.problems.capabilities import Capability


@pytest.mark.parametrize("batch_size", [0, 8])
def test_flipped_gradient_uses_the_same_batch_with_flipped_labels(batch_size: int) -> None:
    problem = {"name": "digits_softmax", "batch_size": batch_size}
    cfg = validate(experiment(problem=problem)).problem
    oracle = PROBLEMS.get("digits_softmax").build(
        cfg, seed=0, data_ranks=torch.arange(4), num_data_nodes=4, device=torch.device("cpu")
    )
    assert oracle.provides(Capability.LABELS)
    rows = torch.tensor([0, 3])
    X = 0.01 * torch.randn(2, oracle.dim, generator=torch.Generator().manual_seed(0))
    honest = oracle.grad(X, rows, step=5)
    flipped = oracle.flipped_grad(X, rows, step=5)
    assert not torch.allclose(honest, flipped)
    # flip the labels by hand and recompute the honest gradient: it must equal flipped
    saved = (oracle.labels.clone(), oracle._labels_flat)
    oracle.labels.copy_(9 - oracle.labels)
    try:
        by_hand = oracle.grad(X, rows, step=5)
    finally:
        oracle.labels.copy_(saved[0])
    assert torch.allclose(by_hand, flipped, atol=1e-6)


def test_problems_without_labels_cannot_flip() -> None:
    cfg = validate(experiment(problem={"name": "quadratic", "dim": 3})).problem
    oracle = PROBLEMS.get("quadratic").build(
        cfg, seed=0, data_ranks=torch.arange(2), num_data_nodes=2, device=torch.device("cpu")
    )
    assert not oracle.provides(Capability.LABELS)
    assert not hasattr(oracle, "flipped_grad")

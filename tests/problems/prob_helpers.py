"""Helpers of the problem tests: small configurations and oracle builders."""

from __future__ import annotations

import torch

import fedopt.problems as P

# One small configuration per registered problem, stochastic where the problem allows it.
SMALL: dict[str, dict[str, object]] = {
    "quadratic": {"name": "quadratic", "dim": 7, "noise_std": 0.3},
    "least_squares": {"name": "least_squares", "dim": 5, "samples_per_node": 20, "batch_size": 4},
    "logistic": {
        "name": "logistic",
        "dim": 12,
        "samples_per_node": 40,
        "batch_size": 8,
        "l2": 0.01,
    },
    "digits_softmax": {"name": "digits_softmax", "batch_size": 16, "l2": 0.001},
    "digits_mlp": {
        "name": "digits_mlp",
        "hidden": 8,
        "batch_size": 16,
        "partition": {"kind": "dirichlet", "alpha": 0.5},
    },
    "digits_model": {  # the BatchNorm CNN, batch statistics only, one node at a time
        "name": "digits_model",
        "model": {"name": "digits_cnn_bn", "channels": [3, 4]},
        "batch_size": 8,
        "l2": 0.001,
        "partition": {"kind": "dirichlet", "alpha": 0.5},
    },
    "tiny_lm": {  # a width-16 byte transformer from its random initialisation
        "name": "tiny_lm",
        "seq_len": 8,
        "batch_size": 3,
        "value_sequences": 2,
        "eval_sequences": 16,
        "model": {"layers": 1, "d_model": 8, "heads": 2, "context": 8, "mlp_ratio": 2},
        "pretrain": {"steps": 0},
    },
    "fc10_regression": {  # 242 training rows: unequal nodes (41/40 for 6 nodes)
        "name": "fc10_regression",
        "samples": 303,
        "batch_size": 8,
    },
}


def build(spec: dict[str, object], ranks: list[int], n: int, seed: int = 3) -> P.Oracle:
    """Build the oracle of ``spec`` for data ranks ``ranks`` out of ``n`` data nodes."""
    config = P.parse_problem_config(spec)
    problem = P.PROBLEMS.get(config.name)
    return problem.build(
        config,
        seed=seed,
        data_ranks=torch.tensor(ranks, dtype=torch.int64),
        num_data_nodes=n,
        device=torch.device("cpu"),
    )


def random_params(oracle: P.Oracle, n: int, seed: int = 0, scale: float = 0.3) -> torch.Tensor:
    """Reproducible parameters ``[n, dim]`` in the oracle's dtype."""
    gen = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(n, oracle.dim, generator=gen, dtype=torch.float64)
    return x.to(oracle.init_params(torch.arange(1)).dtype)

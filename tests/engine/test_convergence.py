"""D-SGD on a ring and FedAvg on a star reach the closed-form optimum of a quadratic."""

import torch
from helpers import experiment, run


def test_dsgd_ring_converges_to_quadratic_optimum() -> None:
    _, result, _ = run(
        experiment(
            topology={"name": "ring", "n": 8},
            algorithm={"name": "dsgd", "lr": 0.3, "lr_decay": 0.05},
            problem={"name": "quadratic", "dim": 6, "mu": 0.5, "L": 2.0, "dtype": "float64"},
            stop={"rounds": 3000},
            eval={"every": 500},
        )
    )
    first, last = result.records[0], result.records[-1]
    assert first["distance_to_opt"] > 1.0
    assert last["distance_to_opt"] < 2e-3
    assert last["consensus_distance"] < 1e-3  # O(lr_t^2) with lr_t = 0.3 / (1 + 0.05 t)


def test_dsgd_exact_consensus_without_heterogeneity_cta() -> None:
    _, result, _ = run(
        experiment(
            topology={"name": "ring", "n": 8},
            algorithm={"name": "dsgd", "lr": 0.2, "variant": "cta"},
            problem={
                "name": "quadratic",
                "dim": 4,
                "mu": 0.5,
                "L": 2.0,
                "heterogeneity": 0.0,
                "dtype": "float64",
            },
            stop={"rounds": 400},
            eval={"every": 400},
        )
    )
    assert result.records[-1]["distance_to_opt"] < 1e-8


def test_fedavg_star_converges_to_quadratic_optimum() -> None:
    _, result, _ = run(
        experiment(
            topology={"name": "star", "n": 11},
            algorithm={"name": "fedavg", "lr": 0.4, "local_steps": 1},
            problem={"name": "quadratic", "dim": 6, "mu": 0.5, "L": 2.0, "dtype": "float64"},
            stop={"rounds": 200},
            eval={"every": 50},
        )
    )
    assert result.records[0]["distance_to_opt"] > 1.0
    assert result.records[-1]["distance_to_opt"] < 1e-8


def test_gossip_only_preserves_the_average() -> None:
    _, result, worker = run(
        experiment(
            topology={"name": "torus", "n": 16},
            algorithm={"name": "dsgd", "local_steps": 0},
            problem={"name": "quadratic", "dim": 3, "dtype": "float64", "same_init": False},
            stop={"rounds": 200},
            eval={"every": 200},
        )
    )
    x0 = worker.oracle.init_params(torch.arange(16)).to(torch.float64)
    assert result.records[0]["consensus_distance"] > 0.1
    assert torch.allclose(result.final_model, x0.mean(0), atol=1e-12)
    assert result.records[-1]["consensus_distance"] < 1e-12

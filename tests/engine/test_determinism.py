"""Same config and seed give identical metrics and bitwise-identical parameters."""

import torch
from helpers import experiment, run


def test_dsgd_results_do_not_depend_on_chunk_size() -> None:
    raw = experiment(
        topology={"name": "torus", "n": 16},
        algorithm={"name": "dsgd", "lr": 0.1, "local_steps": 3},
        problem={
            "name": "logistic",
            "dim": 10,
            "samples_per_node": 50,
            "batch_size": 8,
            "generator": "seeded",
        },
        stop={"rounds": 5},
    )
    _, a, _ = run({**raw, "engine": {"threads": 1, "chunk_size": 3}})
    _, b, _ = run({**raw, "engine": {"threads": 1, "chunk_size": 1024}})
    assert torch.equal(a.final_params, b.final_params)
    assert a.records[-1]["loss"] == b.records[-1]["loss"]


def test_different_seed_differs() -> None:
    raw = experiment(problem={"name": "quadratic", "dim": 4, "noise_std": 0.1})
    _, a, _ = run(raw)
    _, b, _ = run({**raw, "seed": 1})
    assert not torch.equal(a.final_params, b.final_params)

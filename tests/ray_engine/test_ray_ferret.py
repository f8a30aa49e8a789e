"""Ferret on the Ray engine: sampled clients over 2 actors give the local numbers bit for bit."""

import pytest
from helpers import experiment
from test_ray_identical import assert_identical, run_on

CASES = {
    variant: experiment(
        topology={"name": "star", "n": 11},
        algorithm={
            "name": "ferret",
            "variant": variant,
            "K": 16,
            "lr": 0.2,
            "local_steps": 2,
            "grad_accum": 2,
            "client_fraction": 0.3,
            "server_lr": 1.0 if variant == "paper" else 3.0,
        },
        problem={"name": "digits_mlp", "hidden": 8, "batch_size": 8},
        stop={"rounds": 3},
        eval={"every": 1},
    )
    for variant in ("paper", "reference")
}


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(CASES))
def test_ferret_on_two_actors_equals_local(ray_session, variant: str) -> None:
    local = run_on(CASES[variant], kind="local")
    ray_out = run_on(CASES[variant], kind="ray", actors=2)
    assert len(ray_out.workers) == 2
    assert_identical(local, ray_out)

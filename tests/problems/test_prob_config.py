"""Configuration errors name the field path, the value and the fix."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

import fedopt.problems as P
from fedopt.errors import ConfigError


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"name": "quadratic", "dim": -3}, "problem.dim"),
        ({"name": "least_squares", "dim": 0}, "problem.dim"),
        ({"name": "logistic", "dim": -1}, "problem.dim"),
        ({"name": "quadratic", "mu": 5.0, "L": 1.0}, "problem.L"),
        ({"name": "quadratic", "mu": 0.0}, "problem.mu"),
        ({"name": "quadratic", "noise_std": -1.0}, "problem.noise_std"),
        ({"name": "least_squares", "l2": -0.1}, "problem.l2"),
        ({"name": "logistic", "generator": "mnist"}, "problem.generator"),
        ({"name": "logistic", "data": "lazy"}, "problem.data"),
        ({"name": "logistic", "memory_budget_gb": 0}, "problem.memory_budget_gb"),
        (
            {"name": "digits_softmax", "partition": {"kind": "dirichlet", "alpha": 0}},
            "problem.partition.alpha",
        ),
        ({"name": "digits_softmax", "partition": {"alpha": -1.0}}, "problem.partition.alpha"),
        ({"name": "digits_mlp", "partition": {"kind": "pathological"}}, "problem.partition.kind"),
        (
            {"name": "digits_mlp", "partition": {"shards_per_node": 0}},
            "problem.partition.shards_per_node",
        ),
        ({"name": "digits_mlp", "test_fraction": 1.0}, "problem.test_fraction"),
        ({"name": "digits_mlp", "hidden": 0}, "problem.hidden"),
        ({"name": "quadratic", "dims": 3}, "problem.dims"),
        ({"name": "quadratc"}, "problem.name"),
        ({"dim": 3}, "problem.name"),
    ],
)
def test_config_errors_name_the_field(spec: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        P.parse_problem_config(spec)
    message = str(info.value)
    assert path in message
    assert len(message) > len(path) + 10  # says what is wrong / how to fix it


def test_messages_show_the_value_and_a_hint() -> None:
    with pytest.raises(ConfigError, match=r"problem\.dim: .*greater than or equal to 1.*-3"):
        P.parse_problem_config({"name": "quadratic", "dim": -3})
    with pytest.raises(ConfigError, match="Did you mean 'dim'"):
        P.parse_problem_config({"name": "quadratic", "dims": 3})
    with pytest.raises(ConfigError, match="Did you mean 'quadratic'"):
        P.parse_problem_config({"name": "quadratc"})
    with pytest.raises(ConfigError, match=r"problem\.L: must be >= problem\.mu"):
        P.parse_problem_config({"name": "quadratic", "mu": 5.0, "L": 1.0})


def test_build_accepts_a_mapping_and_validates_it() -> None:
    problem = P.PROBLEMS.get("quadratic")
    ranks = torch.arange(2)
    oracle = problem.build(
        {"name": "quadratic", "dim": 3},
        seed=0,
        data_ranks=ranks,
        num_data_nodes=2,
        device=torch.device("cpu"),
    )
    assert oracle.dim == 3
    with pytest.raises(ConfigError, match=r"problem\.dim"):
        problem.build(
            {"name": "quadratic", "dim": -1},
            seed=0,
            data_ranks=ranks,
            num_data_nodes=2,
            device=torch.device("cpu"),
        )


def test_configs_are_frozen_with_documented_fields() -> None:
    for _, problem in P.PROBLEMS.items():
        config = problem.Config()
        with pytest.raises(ValidationError):
            config.name = "other"  # type: ignore[misc]
        for field_name, field in problem.Config.model_fields.items():
            if field_name != "name":
                assert field.description, f"{problem.Config.__name__}.{field_name}"

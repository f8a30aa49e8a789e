"""One formatter for every pydantic error: the problem registry's own path and the
experiment's path word the same mistake the same way."""

import pytest
from helpers import experiment

from fedopt.config import validate
from fedopt.errors import ConfigError
from fedopt.problems.registry import parse_problem_config


def _message(call) -> str:
    with pytest.raises(ConfigError) as err:
        call()
    return str(err.value)


@pytest.mark.parametrize(
    ("problem", "line"),
    [
        (
            {"name": "quadratic", "dimm": 3},
            "problem.dimm: unknown key 'dimm'. Did you mean 'dim'?",
        ),
        ({"name": "quadratic", "dim": 0}, "problem.dim: Input should be greater than or equal"),
    ],
)
def test_problem_errors_read_alike_on_both_paths(problem: dict, line: str) -> None:
    direct = _message(lambda: parse_problem_config(problem))
    via_experiment = _message(lambda: validate(experiment(problem=problem)))
    assert direct.startswith(line)
    assert direct in via_experiment  # the same line, inside the experiment's list

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


PLUGIN = """
from typing import Literal

from pydantic import model_validator

from fedopt.algorithms.base import ALGORITHMS
from fedopt.algorithms.dsgd import DSGD, DSGDConfig

CALLS = []


class OnceConfig(DSGDConfig):
    name: Literal["validated_once"] = "validated_once"

    @model_validator(mode="after")
    def _count(self):
        CALLS.append(1)
        return self


@ALGORITHMS.register("validated_once")
class ValidatedOnce(DSGD):
    Config = OnceConfig
"""


def test_each_section_is_validated_once(tmp_path) -> None:
    import sys

    plugin = tmp_path / "validated_once.py"
    plugin.write_text(PLUGIN)
    raw = experiment(algorithm={"name": "validated_once", "lr": 0.1})
    raw["plugins"] = [str(plugin)]
    validate(raw)
    module = next(m for n, m in sys.modules.items() if n.startswith("fedopt_plugin_validated"))
    assert len(module.CALLS) == 1

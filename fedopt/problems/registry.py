"""The problem registry and the parser of the ``problem`` section of an experiment."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from fedopt.errors import ConfigError
from fedopt.problems._common import config_error
from fedopt.registry import Registry

PROBLEMS: Registry[Any] = Registry("problem", field="problem.name")
"""Registered :class:`~fedopt.problems.base.Problem` subclasses by name."""


def parse_problem_config(data: Mapping[str, Any]) -> Any:
    """Validate the ``problem`` section into the registered problem's ``Config``.

    Parameters
    ----------
    data
        The mapping written in the experiment file, e.g.
        ``{"name": "logistic", "dim": 100}``.

    Raises
    ------
    ConfigError
        When the name is unknown or a field is invalid; the message names the dotted
        field path (``problem.dim``), the value and the fix.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"problem: expected a mapping with at least a 'name' key, got {data!r}.")
    if "name" not in data:
        raise ConfigError(
            f"problem.name: required field is missing; set it to one of: {', '.join(PROBLEMS)}."
        )
    problem = PROBLEMS.get(str(data["name"]))
    try:
        return problem.Config.model_validate(dict(data))
    except ValidationError as exc:
        raise config_error(exc, problem.Config, "problem") from None

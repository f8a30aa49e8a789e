"""Every float of the experiment file is finite, every integer fits int64 (issue 10, item 3).

The walk covers every section model, every model nested in them (fault windows, the
partition, the attack spec) and every registered algorithm's and problem's config, so a
new float field is covered the day it is added. Infinity is accepted only where its
meaning is documented in the field's description.
"""

from __future__ import annotations

import copy
import math
import typing
from typing import Any

import pytest
from helpers import experiment
from pydantic import BaseModel

from fedopt.algorithms import ALGORITHMS
from fedopt.config import validate
from fedopt.config.schema import ExperimentConfig
from fedopt.errors import ConfigError
from fedopt.fields import Section
from fedopt.problems import PROBLEMS

INF_DOCUMENTED = {
    "network.bandwidth_Bps",  # a link without transmission delay
    "algorithm.epsilon",  # private algorithms: no privacy, no noise
    "algorithm.clip",  # ... and no clipping
    "algorithm.clip_grad",
    "algorithm.clip_diff",
}
"""Fields where ``inf`` has a documented meaning (said in their description)."""

REQUIRED: dict[str, dict[str, Any]] = {
    # the fields a nested model needs before one of its floats can be tried alone
    "CrashConfig": {"nodes": [0]},
    "LinkFailureConfig": {"links": [[0, 1]]},
    "PartitionConfig": {"groups": [[0, 1]]},
    "ByzantineConfig": {"count": 1, "attack": {"name": "sign_flip"}},
    "AttackSpec": {"name": "sign_flip"},
}


def _models(annotation: Any) -> list[tuple[type[BaseModel], bool]]:
    """``(model, inside a list)`` for every pydantic model an annotation refers to."""
    if typing.get_origin(annotation) is list:
        return [(m, True) for m, _ in _models(typing.get_args(annotation)[0])]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, False)]
    if typing.get_origin(annotation) is dict:
        return []
    return [found for arg in typing.get_args(annotation) for found in _models(arg)]


def _is_float(annotation: Any) -> bool:
    args = typing.get_args(annotation) or (annotation,)
    return float in args


def _float_list(annotation: Any) -> bool:
    return any(
        typing.get_origin(a) is list and typing.get_args(a) == (float,)
        for a in typing.get_args(annotation) or (annotation,)
    )


def float_fields(model: type[BaseModel], path: tuple[Any, ...]) -> list[tuple[tuple, Any, str]]:
    """``(path, how to set it, field description)`` of every float field below ``model``."""
    found = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if _is_float(ann):
            found.append(((*path, name), "scalar", field.description or ""))
        elif _float_list(ann):
            found.append(((*path, name), "list", field.description or ""))
        for sub, in_list in _models(ann):
            if sub in (ExperimentConfig,):
                continue
            found += float_fields(sub, (*path, name, 0) if in_list else (*path, name))
    return found


def _section_cases() -> list[tuple[tuple, Any, str]]:
    cases = []
    for name, field in ExperimentConfig.model_fields.items():
        if name in ("algorithm", "problem"):
            continue
        for sub, _ in _models(field.annotation):
            cases += float_fields(sub, (name,))
    return cases


def _registered_cases() -> list[tuple[tuple, Any, str]]:
    cases = []
    for section, registry in (("algorithm", ALGORITHMS), ("problem", PROBLEMS)):
        for name, entry in registry.items():
            for path, kind, desc in float_fields(entry.Config, (section,)):
                cases.append(((path[0], name, *path[1:]), kind, desc))
    return cases


CASES = _section_cases() + _registered_cases()


def _raw_with(path: tuple, value: Any) -> tuple[dict[str, Any], str]:
    """A valid experiment with ``value`` at ``path``, and the field's dotted name."""
    raw = experiment()
    if path[0] in ("algorithm", "problem"):
        section, name, *rest = path
        registry = ALGORITHMS if section == "algorithm" else PROBLEMS
        raw[section] = {"name": name}
        node, model, path = raw[section], registry.get(name).Config, (section, *rest)
        steps = rest
    else:
        node, model, steps = raw, ExperimentConfig, list(path)
    for part in steps[:-1]:
        if isinstance(part, int):  # the list entry was made with its field
            continue
        sub, in_list = _models(model.model_fields[part].annotation)[0]
        entry = copy.deepcopy(REQUIRED.get(sub.__name__, {}))
        if in_list:
            node[part] = [entry]
            node = entry
        else:
            current = node.get(part)
            node[part] = current if isinstance(current, dict) else entry
            for key, val in entry.items():
                node[part].setdefault(key, val)
            node = node[part]
        model = sub
    node[steps[-1]] = value
    return raw, ".".join(str(p) for p in path)


def test_every_section_model_is_a_finite_section() -> None:
    seen = set()

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        assert issubclass(model, Section), f"{model.__name__} must derive from fedopt Section"
        for field in model.model_fields.values():
            for sub, _ in _models(field.annotation):
                walk(sub)

    for name, field in ExperimentConfig.model_fields.items():
        if name not in ("algorithm", "problem"):
            for sub, _ in _models(field.annotation):
                walk(sub)
    for registry in (ALGORITHMS, PROBLEMS):
        for _, entry in registry.items():
            walk(entry.Config)
    assert len(seen) > 20


def test_the_walk_finds_the_floats_of_every_section() -> None:
    sections = {p[0] for p, _, _ in CASES}
    assert {"topology", "network", "compute", "stop", "eval", "engine", "faults"} <= sections
    names = {".".join(map(str, p)) for p, _, _ in CASES}
    assert "algorithm.dsgd.lr" in names and "problem.quadratic.mu" in names
    assert "faults.crashes.0.from_time_s" in names and "compute.speeds" in names
    assert len(CASES) > 80


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_floats_are_refused_naming_the_field(bad: float) -> None:
    for path, kind, desc in CASES:
        raw, dotted = _raw_with(path, [1.0, bad] if kind == "list" else bad)
        shown = f"{dotted}.1" if kind == "list" else dotted
        if dotted in INF_DOCUMENTED and bad == math.inf:
            assert "inf" in desc, f"{dotted}: say what inf means in the description"
            value: Any = validate(raw)  # accepted: a documented meaning
            for part in dotted.split("."):
                value = getattr(value, part)
            assert math.isinf(value)
            continue
        with pytest.raises(ConfigError) as info:
            validate(raw)
        msg = str(info.value)
        line = next((x.strip() for x in msg.splitlines() if x.strip().startswith(shown)), None)
        assert line is not None, f"{dotted}={bad}: error does not name the field:\n{msg}"
        assert repr(bad) in line or str(bad) in line, line


def test_string_nan_from_the_command_line_is_refused() -> None:
    from fedopt.config import apply_overrides

    raw = apply_overrides(experiment(), ["algorithm.lr=nan", "network.latency_s=inf"])
    with pytest.raises(ConfigError) as info:
        validate(raw)
    msg = str(info.value)
    assert "algorithm.lr: Input should be a finite number (got 'nan')" in msg
    assert "network.latency_s: Input should be a finite number (got 'inf')" in msg


def test_infinite_bandwidth_runs_as_latency_only(tmp_path) -> None:
    from helpers import run

    raw = experiment(network={"bandwidth_Bps": "inf", "latency_s": 0.5}, stop={"rounds": 2})
    raw["compute"] = {"step_time_s": 0.0}
    _, result, _ = run(raw)
    assert result.records[-1]["sim_time_s"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("section", "value", "expect"),
    [
        ("topology", {"name": "small_world", "n": 8, "params": {"p": math.nan}}, "topology.params"),
        (
            "byzantine",
            {"count": 1, "attack": {"name": "alie", "factor": math.inf}},
            "byzantine.attack",
        ),
        (
            "algorithm",
            {"name": "fedavg", "aggregator": "trimmed_mean", "aggregator_params": {"f": math.nan}},
            "algorithm.aggregator_params.f",
        ),
    ],
)
def test_free_form_values_are_finite_too(section: str, value: dict, expect: str) -> None:
    raw = experiment(**{section: value})
    with pytest.raises(ConfigError) as info:
        validate(raw)
    msg = str(info.value)
    assert expect in msg and "finite" in msg, msg


def test_integers_must_fit_int64_everywhere() -> None:
    raw = experiment(topology={"name": "small_world", "n": 8, "params": {"k": 2**64}})
    with pytest.raises(ConfigError) as info:
        validate(raw)
    assert "topology.params: k must fit a signed 64-bit integer" in str(info.value)
    raw = experiment(output={"save_params_max": 2**63})
    with pytest.raises(ConfigError) as info:
        validate(raw)
    assert "output.save_params_max: must fit a signed 64-bit integer" in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("topology.n", 2**31),
        ("network.header_bytes", 2**31),
        ("stop.rounds", 2**31),
        ("problem.dim", 2**40 + 1),
        ("problem.samples_per_node", 2**31),
        ("algorithm.local_steps", 2**31),
    ],
)
def test_physical_counts_have_upper_bounds(field: str, value: int) -> None:
    from fedopt.config import apply_overrides

    base = experiment(problem={"name": "least_squares"})
    raw = apply_overrides(base, [f"{field}={value}"])
    with pytest.raises(ConfigError) as info:
        validate(raw)
    msg = str(info.value)
    assert f"{field}: Input should be less than or equal to" in msg and str(value) in msg, msg


def test_the_command_line_exits_2_naming_field_and_value(capsys: pytest.CaptureFixture) -> None:
    from pathlib import Path

    from fedopt.cli import main

    quick = str(Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml")
    assert main(["validate", quick, "--set", "algorithm.lr=.nan"]) == 2
    err = capsys.readouterr().err
    assert "algorithm.lr: Input should be a finite number (got nan)" in err
    assert main(["validate", quick, "--set", "compute.straggler_slowdown=.inf"]) == 2
    err = capsys.readouterr().err
    assert "compute.straggler_slowdown: Input should be a finite number (got inf)" in err

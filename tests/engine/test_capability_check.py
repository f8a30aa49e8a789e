"""The compiler refuses a problem lacking a capability the algorithm ``requires``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import experiment

from fedopt.algorithms import ALGORITHMS
from fedopt.algorithms.base import split_requirements
from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.errors import ConfigError
from fedopt.problems import PROBLEMS
from fedopt.problems.capabilities import Capability, require

LOGISTIC = {"name": "logistic", "dim": 4, "samples_per_node": 20, "l2": 0.1}
MSDA_ON_LOGISTIC = (
    "problem.name: algorithm 'msda' needs capability 'conjugate_gradients' which problem "
    "'logistic' does not provide; problems that provide it: least_squares, quadratic. "
    "Fix: set problem.name to one of them, or use something that does not need "
    "'conjugate_gradients'"
)


@pytest.mark.parametrize("algorithm", ["msda", "continuized"])
def test_dual_methods_refuse_problems_without_conjugate_gradients(algorithm: str) -> None:
    raw = experiment(algorithm={"name": algorithm}, problem=LOGISTIC)
    with pytest.raises(ConfigError) as err:
        compile_plan(validate(raw))
    assert str(err.value) == MSDA_ON_LOGISTIC.replace("'msda'", repr(algorithm))


def test_the_capability_is_checked_before_the_topology() -> None:
    # a disconnected graph would also be refused; the missing capability is named first
    topo = {"name": "erdos_renyi", "n": 8, "params": {"p": 0.0}}
    raw = experiment(algorithm={"name": "msda"}, problem=LOGISTIC, topology=topo)
    with pytest.raises(ConfigError, match="needs capability 'conjugate_gradients'"):
        compile_plan(validate(raw))


def test_the_same_experiment_compiles_on_a_problem_that_provides_it() -> None:
    raw = experiment(algorithm={"name": "msda"}, problem={"name": "quadratic", "dim": 3})
    assert compile_plan(validate(raw)).topology.n == 8


def test_fedopt_validate_exits_2_with_the_message(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(experiment(algorithm={"name": "msda"}, problem=LOGISTIC)))
    out = subprocess.run(
        [sys.executable, "-m", "fedopt", "validate", str(path)], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: {MSDA_ON_LOGISTIC}"
    assert out.stdout == ""


def test_label_flipping_needs_labels() -> None:
    with pytest.raises(ConfigError) as err:
        require(
            {Capability.LABELS},
            "attack 'label_flip'",
            "quadratic",
            PROBLEMS.get("quadratic"),
            field="byzantine.attack",
        )
    assert str(err.value).startswith(
        "byzantine.attack: attack 'label_flip' needs capability 'labels' which problem "
        "'quadratic' does not provide; problems that provide it: digits_mlp, digits_model, "
        "digits_softmax, image_model, logistic."
    )
    require({Capability.LABELS}, "attack 'label_flip'", "logistic", PROBLEMS.get("logistic"))


def test_a_capability_nobody_provides_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as err:
        require({Capability.MODEL}, "algorithm 'x'", "quadratic", PROBLEMS.get("quadratic"))
    want = "digits_mlp, digits_model, digits_softmax, image_model, tiny_lm."
    assert f"problems that provide it: {want}" in str(err.value)
    monkeypatch.setattr("fedopt.problems.capabilities.providers", lambda cap: [])
    with pytest.raises(ConfigError, match="problems that provide it: none registered"):
        require({Capability.MODEL}, "algorithm 'x'", "quadratic", PROBLEMS.get("quadratic"))


def test_requires_splits_into_topology_and_capabilities() -> None:
    topo, caps = split_requirements("msda", ALGORITHMS.get("msda").requires)
    assert topo == {"connected"} and caps == {Capability.CONJUGATE_GRADIENTS}
    topo, caps = split_requirements("x", frozenset({"star", "per_sample_gradients"}))
    assert topo == {"star"} and caps == {Capability.PER_SAMPLE_GRADIENTS}
    with pytest.raises(TypeError, match="'x': requires names 'zeroth_order'"):
        split_requirements("x", frozenset({"zeroth_order"}))


def test_every_registered_algorithm_requires_valid_entries() -> None:
    for name in ALGORITHMS:
        split_requirements(name, ALGORITHMS.get(name).requires)

"""Shared test helpers: build and run small experiments in-process."""

from __future__ import annotations

import copy
from typing import Any

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.engine.local import run_local

BASE: dict[str, Any] = {
    "name": "t",
    "seed": 0,
    "topology": {"name": "ring", "n": 8},
    "algorithm": {"name": "dsgd", "lr": 0.1},
    "problem": {"name": "quadratic", "dim": 5},
    "stop": {"rounds": 5},
    "engine": {"threads": 1},
}


def experiment(**sections: Any) -> dict[str, Any]:
    """BASE with whole sections replaced."""
    raw = copy.deepcopy(BASE)
    raw.update(copy.deepcopy(sections))
    return raw


def run(raw: dict[str, Any]):
    """Compile and run on the local engine; return (plan, result, worker)."""
    plan = compile_plan(validate(raw))
    result, worker = run_local(plan)
    return plan, result, worker

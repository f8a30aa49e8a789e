"""Helpers of the sweep tests: a tiny base experiment (a module with a unique name, so
that ``import sweep_helpers`` never meets the top-level conftest)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

TINY: dict[str, Any] = {
    "name": "tiny",
    "seed": 0,
    "topology": {"name": "ring", "n": 4},
    "algorithm": {"name": "dsgd", "lr": 0.1},
    "problem": {"name": "quadratic", "dim": 4, "mu": 0.5, "L": 2.0},
    "stop": {"rounds": 12},
    "eval": {"every": 3},
    "engine": {"threads": 1},
}
"""D-SGD on a ring of 4, a 4-dimensional quadratic, 12 rounds: a few ms per run."""


def tiny(**changes: Any) -> dict[str, Any]:
    """A copy of :data:`TINY` with top-level sections replaced."""
    out = copy.deepcopy(TINY)
    out.update(changes)
    return out

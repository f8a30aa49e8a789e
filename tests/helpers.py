"""Shared test helpers: build and run small experiments in-process."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

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


def crash_and_resume(cfg, algorithm: type, at_round: int, tmp_path: Path, monkeypatch):
    """Run ``cfg`` uninterrupted, then again with ``algorithm.round`` killed at
    ``at_round`` and resumed from its checkpoint; return both run directories
    ``(reference, resumed)``. The killed run must have left its checkpoint."""
    from fedopt.run import checkpoint_path, run_experiment

    ref = run_experiment(cfg, out_dir=tmp_path / "ref", progress=False)
    original = algorithm.round

    def crash(self, state, t):
        if t == at_round:
            raise KeyboardInterrupt("driver killed")
        return original(self, state, t)

    monkeypatch.setattr(algorithm, "round", crash)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, out_dir=out, progress=False)
    assert checkpoint_path(out).is_file()
    monkeypatch.setattr(algorithm, "round", original)
    return ref, run_experiment(cfg, out_dir=out, progress=False, resume=True)


def run_records(path: Path) -> list[dict[str, Any]]:
    """A run directory's records without their wall times."""
    lines = (path / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "wall_time_s"} for x in lines]

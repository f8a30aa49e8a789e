"""A run whose loss or parameters become NaN or infinite stops with a clear message
(issue 10, item 3), and its run directory is kept, marked as diverged, in strict JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from fedopt.cli import main
from fedopt.engine.driver import mark_nonfinite

CONFIG = {
    "name": "blowup",
    "seed": 0,
    "topology": {"name": "ring", "n": 4},
    "algorithm": {"name": "dsgd", "lr": 50.0},
    "problem": {"name": "quadratic", "dim": 3},
    "stop": {"rounds": 500},
    "engine": {"threads": 1},
}


def refuse(token: str) -> None:
    raise AssertionError(f"non-standard JSON constant {token}")


def test_huge_step_size_stops_with_a_diverged_run_directory(tmp_path: Path, capsys) -> None:
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 1
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("error: the run diverged at round ")
    assert "algorithm.lr (now 50)" in err and "last finite loss" in err
    assert str(out) in err and "ids 0, 1, 2, 3" in err

    summary = json.loads((out / "summary.json").read_text(), parse_constant=refuse)
    assert summary["stop_reason"] == "diverged"
    diverged = summary["diverged"]
    assert diverged["nodes"] == [0, 1, 2, 3] and diverged["nonfinite_nodes_count"] == 4
    assert summary["rounds"] == diverged["round"] < 500
    assert math.isfinite(diverged["last_finite_loss"])
    lines = (out / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line, parse_constant=refuse) for line in lines]
    assert [r["round"] for r in records] == list(range(diverged["round"]))
    assert all(math.isfinite(r["loss"]) for r in records)
    assert records[-1]["loss"] == diverged["last_finite_loss"]
    json.loads((out / "env.json").read_text(), parse_constant=refuse)
    # a diverged run is fedopt's own: --overwrite may replace it
    ok = ["run", str(config), "--out", str(out), "--quiet", "--overwrite"]
    assert main([*ok, "--set", "algorithm.lr=0.1", "--set", "stop.rounds=3"]) == 0
    assert json.loads((out / "summary.json").read_text())["stop_reason"] == "rounds"


def test_event_schedule_divergence_is_caught_too(tmp_path: Path, capsys) -> None:
    raw = {
        "name": "ev",
        "seed": 0,
        "topology": {"name": "ring", "n": 4},
        "algorithm": {"name": "async_gossip_sgd", "lr": 1.0e3},
        "problem": {"name": "quadratic", "dim": 3},
        "stop": {"sim_time_s": 200.0},
        "engine": {"threads": 1, "event_block": 16},
    }
    config = tmp_path / "ev.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 1
    assert "diverged at round" in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["stop_reason"] == "diverged"


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_mark_nonfinite_names_the_first_nodes(bad: float) -> None:
    params = torch.zeros(20, 3)
    params[[2, 5, 7, 8, 9, 11, 12, 13, 19], 1] = bad
    rec: dict = {}
    mark_nonfinite(rec, torch.arange(20), params)
    assert rec == {"nonfinite_count": 9, "nonfinite_nodes": [2, 5, 7, 8, 9, 11, 12, 13]}
    clean: dict = {}
    mark_nonfinite(clean, torch.arange(20), torch.zeros(20, 3))
    assert clean == {}

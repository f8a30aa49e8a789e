"""Bad sweeps are refused before anything runs, with every problem in one message.

Each message names the key (or value, or folder) and the fix; the CLI prints it as one
``error:`` line block with exit code 2 and no traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_helpers import tiny

from fedopt.errors import ConfigError
from fedopt.sweep import parse_sweep, run_sweep
from fedopt.sweep.expand import expand, prepare

ROOT = Path(__file__).resolve().parents[2]


def plan(data: dict) -> None:
    spec = parse_sweep(data)
    prepare(spec, expand(spec))


def test_axis_key_that_does_not_exist_names_the_closest() -> None:
    with pytest.raises(ConfigError) as err:
        plan({"experiment": tiny(), "grid": {"algorithm.lrr": [0.1, 0.2]}, "seeds": 2})
    msg = str(err.value)
    assert "grid.algorithm.lrr: the key 'algorithm.lrr' does not exist in the experiment" in msg
    assert "Did you mean 'algorithm.lr'?" in msg
    assert "4 cells" in msg and "nothing was run" in msg
    assert msg.count("algorithm.lrr: the key") == 1  # once for the key, not once per cell


def test_unknown_section_key_in_a_named_option() -> None:
    with pytest.raises(ConfigError, match=r"grid.method: the key 'topology.nn' does not exist"):
        plan({"experiment": tiny(), "grid": {"method": {"big": {"topology.nn": 8}}}})


def test_empty_axes_and_zip_lengths() -> None:
    with pytest.raises(ConfigError) as err:
        plan(
            {
                "experiment": tiny(),
                "grid": {"algorithm.lr": [], "method": {}},
                "zip": {"topology.n": [4, 8], "problem.dim": [2, 3, 4]},
                "seeds": 0,
            }
        )
    msg = str(err.value)
    assert "grid.algorithm.lr: empty list; an axis needs at least one value" in msg
    assert "grid.method: no options" in msg
    assert "zip: lists of different lengths (topology.n: 2, problem.dim: 3)" in msg
    assert "seeds: 0: give a count >= 1" in msg


def test_values_failing_validation_are_all_reported_per_cell() -> None:
    with pytest.raises(ConfigError) as err:
        plan(
            {
                "experiment": tiny(),
                "grid": {"algorithm.lr": [0.1, -1.0], "topology.n": [4, 0]},
                "seeds": 1,
            }
        )
    msg = str(err.value)
    assert "3 of 4 cells do not validate" in msg
    assert "algorithm.lr: Input should be greater than 0 (got -1.0)" in msg
    assert "[2 cells (lr=-1/n=4/seed0, lr=-1/n=0/seed0)]" in msg
    assert "topology.n:" in msg and "lr=0.1/n=0/seed0" in msg


def test_compile_refusals_are_reported_before_anything_runs() -> None:
    # MSDA needs conjugate gradients, which the logistic problem does not have
    logistic = {"name": "logistic", "dim": 3, "samples_per_node": 10}
    with pytest.raises(ConfigError, match=r"conjugate.*\[cell 'msda'\]"):
        plan(
            {
                "experiment": tiny(problem=logistic),
                "cells": {"dsgd": None, "msda": {"algorithm.name": "msda"}},
            }
        )


def test_unknown_top_key_exclude_and_halving_rules() -> None:
    with pytest.raises(ConfigError) as err:
        parse_sweep(
            {
                "experiment": tiny(),
                "grids": {"algorithm.lr": [0.1]},
                "halving": {"key": "algorithm.lr", "factor": 2.0, "tolerance": 0.9},
                "select": {"metric": "minimum(loss)"},
            }
        )
    msg = str(err.value)
    assert "grids: unknown key 'grids'. Did you mean 'grid'?" in msg
    assert "halving.factor: 2: each try multiplies the step by it, so it must be in (0, 1)" in msg
    assert "halving.tolerance: 0.9" in msg
    assert "select.metric: metric 'minimum(loss)' is not understood" in msg
    with pytest.raises(ConfigError) as err:
        plan(
            {
                "experiment": tiny(),
                "grid": {"algorithm.lr": [0.1, 0.2]},
                "exclude": [{"lrr": 0.1}, {"lr": 0.3}],
            }
        )
    msg = str(err.value)
    assert "exclude[0]: 'lrr' is not an axis or a key of this sweep. Did you mean 'lr'?" in msg
    assert "exclude[1]: {'lr': 0.3} matches no cell (a typo in a value?); lr takes 0.1, 0.2" in msg


def test_a_key_set_by_two_axes_and_halving_on_an_axis() -> None:
    with pytest.raises(ConfigError) as err:
        parse_sweep(
            {
                "experiment": tiny(),
                "grid": {"algorithm.lr": [0.1]},
                "zip": {"algorithm.lr": [0.2], "topology.n": [4]},
                "halving": {"key": "algorithm.lr"},
            }
        )
    msg = str(err.value)
    assert "zip: 'algorithm.lr' is also set by grid.algorithm.lr" in msg
    assert "halving.key: 'algorithm.lr' is also an axis" in msg


def test_a_sweep_directory_holding_a_different_sweep(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_sweep(parse_sweep({"name": "first", "experiment": tiny()}), out, jobs=1, progress=False)
    other = parse_sweep({"name": "second", "experiment": tiny()})
    with pytest.raises(ConfigError) as err:
        run_sweep(other, out, jobs=1, progress=False)
    assert "holds a different sweep, 'first'" in str(err.value)
    assert "not 'second'; choose another --out" in str(err.value)
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"is not a sweep directory \(no sweep.json; it holds "):
        run_sweep(other, user, jobs=1, progress=False)
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"]


def test_a_changed_cell_needs_overwrite_and_a_users_folder_is_never_touched(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    data = {"name": "s", "experiment": tiny(), "grid": {"algorithm.lr": [0.1, 0.2]}}
    run_sweep(parse_sweep(data), out, jobs=1, progress=False)
    data["set"] = {"stop.rounds": 6}
    with pytest.raises(ConfigError) as err:
        run_sweep(parse_sweep(data), out, jobs=1, progress=False)
    msg = str(err.value)
    assert "2 finished cells were run with a different config; pass --overwrite" in msg
    assert "lr=0.1: stop.rounds: 12 -> 6" in msg
    outcome = run_sweep(parse_sweep(data), out, jobs=1, progress=False, overwrite=True)
    assert outcome.counts == {"complete": 2}
    assert json.loads((out / "lr=0.1" / "summary.json").read_text())["rounds"] == 6
    (out / "lr=0.2" / "mine.txt").write_text("do not delete")
    data["set"] = {"stop.rounds": 3}
    with pytest.raises(ConfigError, match=r"lr=0.2.*holds files fedopt did not write \(mine.txt\)"):
        run_sweep(parse_sweep(data), out, jobs=1, progress=False, overwrite=True)
    assert (out / "lr=0.2" / "mine.txt").read_text() == "do not delete"


def test_cli_prints_one_error_without_traceback(write_sweep, tmp_path: Path) -> None:
    path = write_sweep({"experiment": tiny(), "grid": {"algorithm.lrr": [0.1]}})
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedopt",
            "sweep",
            str(path),
            "--out",
            str(tmp_path / "o"),
            "--jobs",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert r.returncode == 2
    assert r.stderr.startswith("error: invalid sweep: 1 of 1 cells do not validate")
    assert "Did you mean 'algorithm.lr'?" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_a_sweep_directory_in_use_by_another_sweep_is_refused(tmp_path: Path) -> None:
    from fedopt.sweep.manifest import SweepLock

    out = tmp_path / "out"
    spec = parse_sweep({"name": "busy", "experiment": tiny()})
    with SweepLock(out), pytest.raises(ConfigError) as err:
        run_sweep(spec, out, jobs=1, progress=False)
    assert f"another fedopt sweep is running in this directory (pid {os.getpid()})" in str(
        err.value
    )
    assert run_sweep(spec, out, jobs=1, progress=False).counts == {"complete": 1}

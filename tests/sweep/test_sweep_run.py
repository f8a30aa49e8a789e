"""Running sweeps: cells equal `fedopt run`, resume skips finished cells, failures are
recorded while the others finish, a dying worker is survived, Ctrl-C leaves no partial
run directory and the same command resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sweep_helpers import HERE, tiny

import fedopt.sweep.executors as executors
from fedopt.config import load_experiment
from fedopt.errors import RunInterrupted
from fedopt.run import run_experiment
from fedopt.sweep import load_sweep, parse_sweep, run_sweep
from fedopt.sweep.manifest import MANIFEST

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = str(HERE / "faulty_plugin.py")


def manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST).read_text())


def records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "wall_time_s"} for x in lines]


def test_cell_equals_fedopt_run_of_the_same_config(tmp_path: Path, write_sweep) -> None:
    base = write_sweep(tiny(), "base.yaml")
    sweep = parse_sweep(
        {"experiment": "base.yaml", "grid": {"algorithm.lr": [0.2]}, "seeds": [3]}, folder=tmp_path
    )
    run_sweep(sweep, tmp_path / "sw", jobs=1, progress=False)
    cell = tmp_path / "sw" / "lr=0.2" / "seed3"
    # fedopt run BASE --set algorithm.lr=0.2 --set seed=3 --out DIR
    config = load_experiment(base, ["algorithm.lr=0.2", "seed=3"])
    ref = run_experiment(config, base_dir=tmp_path, out_dir=tmp_path / "ref", progress=False)
    a = json.loads((cell / "summary.json").read_text())
    b = json.loads((ref / "summary.json").read_text())
    for key in ("params_sha256", "final_loss", "bytes_total", "messages_total", "rounds"):
        assert a[key] == b[key]
    assert records(cell) == records(ref)
    assert (cell / "config.yaml").read_text() == (ref / "config.yaml").read_text()
    assert sorted(p.name for p in cell.iterdir()) == sorted(p.name for p in ref.iterdir())


def test_resume_skips_finished_cells(tmp_path: Path, monkeypatch) -> None:
    calls: list[str] = []
    real = executors.run_cell

    def counting(task):
        calls.append(task.name)
        return real(task)

    monkeypatch.setattr(executors, "run_cell", counting)
    data = {
        "name": "r",
        "experiment": tiny(),
        "grid": {"algorithm.lr": [0.1, 0.2, 0.3]},
        "seeds": 2,
    }
    out = tmp_path / "out"
    first = run_sweep(parse_sweep(data), out, jobs=1, progress=False)
    assert len(calls) == 6 and first.skipped == 0 and first.counts == {"complete": 6}
    # a finished cell removed by hand and a new axis value: only those two run
    import shutil

    shutil.rmtree(out / "lr=0.2" / "seed1")
    data["grid"]["algorithm.lr"].append(0.4)
    calls.clear()
    second = run_sweep(parse_sweep(data), out, jobs=1, progress=False)
    assert sorted(calls) == ["lr=0.2/seed1", "lr=0.4/seed0", "lr=0.4/seed1"]
    assert second.skipped == 5 and second.counts == {"complete": 8}
    calls.clear()
    third = run_sweep(parse_sweep(data), out, jobs=1, progress=False)
    assert calls == [] and third.skipped == 8
    entry = manifest(out)["cells"]["lr=0.1/seed0"]
    assert entry["status"] == "complete" and entry["attempts"] == 1
    assert len(entry["config_sha256"]) == 64


def test_failed_cell_is_recorded_and_the_others_complete_in_a_pool(tmp_path: Path) -> None:
    base = tiny(plugins=[PLUGIN], algorithm={"name": "faulty_dsgd", "lr": 0.1}, engine={})
    data = {
        "name": "f",
        "experiment": base,
        "cells": {
            "ok1": None,
            "raises": {"algorithm.fail_at": 3},
            "killed": {"algorithm.kill_at": 2},
            "ok2": {"algorithm.lr": 0.2},
            "ok3": {"algorithm.lr": 0.3},
            "ok4": {"algorithm.lr": 0.4},
        },
    }
    out = tmp_path / "out"
    outcome = run_sweep(parse_sweep(data), out, jobs=2, progress=False)
    cells = manifest(out)["cells"]
    assert {n: c["status"] for n, c in cells.items()} == {
        "ok1": "complete",
        "raises": "failed",
        "killed": "failed",
        "ok2": "complete",
        "ok3": "complete",
        "ok4": "complete",
    }
    assert "RuntimeError: faulty_dsgd: told to fail at round 3" in cells["raises"]["error"]
    assert "the worker process running it died (killed by SIGKILL)" in cells["killed"]["error"]
    assert sorted(n for n, _ in outcome.failed) == ["killed", "raises"]
    names = sorted(p.name for p in out.iterdir())
    assert names == [".sweep.lock", "ok1", "ok2", "ok3", "ok4", "sweep.json"]  # no partials
    assert (out / "ok2" / "summary.json").is_file()
    assert len({cells[n]["pid"] for n in ("ok1", "ok2", "raises")}) >= 2  # two workers
    # the pool pinned each cell's torch threads to cores / jobs (engine.threads unset)
    env = json.loads((out / "ok1" / "env.json").read_text())
    assert env["torch_threads"] == max(1, len(os.sched_getaffinity(0)) // 2)


def test_ctrl_c_in_process_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    base = tiny(
        plugins=[PLUGIN],
        algorithm={"name": "faulty_dsgd", "lr": 0.1, "sleep_s": 0.03},
        stop={"rounds": 10},
    )
    data = {"name": "i", "experiment": base, "grid": {"algorithm.lr": [0.1, 0.2, 0.3]}}
    out = tmp_path / "out"
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(RunInterrupted, match="cells are done; run the same command again"):
            run_sweep(parse_sweep(data), out, jobs=1, progress=False)
    finally:
        timer.cancel()
    cells = manifest(out)["cells"]
    assert [c["status"] for c in cells.values()].count("complete") < 3
    assert "running" not in [c["status"] for c in cells.values()]
    assert [p.name for p in out.rglob("*") if ".partial-" in p.name] == []
    done = [n for n, c in cells.items() if c["status"] == "complete"]
    again = run_sweep(parse_sweep(data), out, jobs=1, progress=False)
    assert again.counts == {"complete": 3} and again.skipped == len(done)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(tmp_path: Path, write_sweep) -> None:
    base = tiny(
        plugins=[PLUGIN],
        algorithm={"name": "faulty_dsgd", "lr": 0.1, "sleep_s": 0.05},
        stop={"rounds": 16},
    )
    path = write_sweep(
        {"name": "c", "experiment": base, "grid": {"algorithm.lr": [0.1, 0.2, 0.3, 0.4]}}
    )
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "fedopt",
        "sweep",
        str(path),
        "--out",
        str(out),
        "--jobs",
        "2",
        "--no-report",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until cells are running
        if (out / MANIFEST).is_file() and any(
            c["status"] == "running" for c in manifest(out)["cells"].values()
        ):
            break
        time.sleep(0.1)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted by SIGINT" in err and "run the same command again to resume" in err
    left = [p.name for p in out.rglob("*") if ".partial-" in p.name or ".old-" in p.name]
    assert left == []
    statuses = [c["status"] for c in manifest(out)["cells"].values()]
    assert "running" not in statuses and statuses.count("complete") < 4
    done = statuses.count("complete")
    again = run_sweep(load_sweep(path), out, jobs=1, progress=False)  # the same sweep again
    assert again.counts == {"complete": 4} and again.skipped == done

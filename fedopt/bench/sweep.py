"""``fedopt bench sweep``: a sweep of small cells against the ideal, side by side.

The sweep is D-SGD on a ring of ``nodes`` with a ``dim``-dimensional quadratic, ``rounds``
rounds, over 8 step sizes x ``cells / 8`` seeds. Three measurements, one after another:

1. ``serial_sum_s``: every cell run one after another in this process with one torch
   thread, each timed by the function a pool worker calls (validation, the run, the run
   directory). The ideal is ``ideal_s = serial_sum_s / jobs``.
2. ``wall_s``: :func:`~fedopt.sweep.runner.run_sweep` with ``jobs`` workers into a
   fresh directory, from the call to its return: planning, validation of every cell,
   the workers' start (a torch import each, in parallel) and shutdown included.
   ``ratio = wall_s / ideal_s``.
3. ``cli_wall_s``: ``fedopt sweep`` in a new process (what a user types), against
   ``ideal_s + import_s``, where ``import_s`` is what any fedopt command pays to start
   (an interpreter importing fedopt and torch): ``cli_ratio``.

The issue's target is a ratio of at most 1.3. The fixed part (the workers' start,
about 2 s) is hidden behind the driver's own start on the command line, not in (2).
``ratio_to_in_pool_ideal`` compares (2) with the cells' own times inside the pool
(``in_pool_cell_sum_s / jobs``): on a machine that other work keeps busy the cells run
slower in parallel than alone, and this ratio shows what the pool itself costs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _root() -> str:
    return str(Path(__file__).resolve().parents[2])


def bench_sweep(
    cells: int = 64,
    jobs: int | None = None,
    rounds: int = 1000,
    nodes: int = 32,
    dim: int = 2000,
) -> dict[str, Any]:
    """Run the benchmark and return its JSON record."""
    from fedopt.engine.local import CORES_ENV, usable_cores
    from fedopt.sweep import parse_sweep, run_sweep
    from fedopt.sweep.expand import expand, prepare
    from fedopt.sweep.worker import CellTask, run_cell

    jobs = jobs or usable_cores()
    seeds = max(1, cells // 8)
    data = {
        "name": "bench-sweep",
        "experiment": {
            "name": "bench-sweep-cell",
            "topology": {"name": "ring", "n": nodes},
            "algorithm": {"name": "dsgd", "lr": 0.05},
            "problem": {"name": "quadratic", "dim": dim, "L": 2.0, "mu": 0.5},
            "stop": {"rounds": rounds},
            "eval": {"every": max(1, rounds // 10)},
        },
        "grid": {"algorithm.lr": [0.02 * (k + 1) for k in range(8)]},
        "seeds": seeds,
    }
    spec = parse_sweep(data)
    tmp = Path(tempfile.mkdtemp(prefix="fedopt-bench-sweep-"))
    try:
        preps = prepare(spec, expand(spec))
        serial = []
        previous = os.environ.get(CORES_ENV)
        try:
            for p in preps:
                task = CellTask(
                    p.cell.name,
                    p.cell.raw,
                    str(p.cell.base_dir),
                    str(tmp / "serial" / p.cell.name),
                    False,
                    1,
                )
                result = run_cell(task)
                if result["status"] != "complete":
                    raise RuntimeError(f"bench cell {p.cell.name}: {result['error']}")
                serial.append(result["wall_s"])
        finally:
            if previous is None:
                os.environ.pop(CORES_ENV, None)
            else:
                os.environ[CORES_ENV] = previous
        t0 = time.perf_counter()
        outcome = run_sweep(spec, tmp / "parallel", jobs=jobs, progress=False, log=lambda s: None)
        wall = time.perf_counter() - t0
        if outcome.failed:
            raise RuntimeError(f"bench sweep: {outcome.failed[0]}")
        manifest = json.loads((tmp / "parallel" / "sweep.json").read_text())
        in_pool = [c["wall_s"] for c in manifest["cells"].values()]
        path = tmp / "sweep.yaml"
        path.write_text(json.dumps(data))  # JSON is YAML
        env = {**os.environ, "PYTHONPATH": _root() + os.pathsep + os.environ.get("PYTHONPATH", "")}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import fedopt.sweep.runner"], env=env, check=True)
        import_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "fedopt",
                "sweep",
                str(path),
                "--out",
                str(tmp / "cli"),
                "--jobs",
                str(jobs),
                "--quiet",
                "--no-report",
            ],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        cli_wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = sum(serial)
    ideal = total / jobs
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover - not on every platform
        load = None
    return {
        "system": "fedopt",
        "workload": "sweep",
        "cells": len(serial),
        "jobs": jobs,
        "cores": usable_cores(),
        "cell_s_mean": round(total / len(serial), 4),
        "serial_sum_s": round(total, 3),
        "ideal_s": round(ideal, 3),
        "wall_s": round(wall, 3),
        "ratio": round(wall / ideal, 3),
        "in_pool_cell_sum_s": round(sum(in_pool), 3),
        "ratio_to_in_pool_ideal": round(wall / (sum(in_pool) / jobs), 3),
        "import_s": round(import_s, 3),
        "cli_wall_s": round(cli_wall, 3),
        "cli_ratio": round(cli_wall / (ideal + import_s), 3),
        "load_avg_1min_after": load,
    }

"""Run one cell: the function every executor calls, in this process, a pool worker or a
Ray task.

A cell is run by :func:`fedopt.run.run_experiment` with the cell's experiment, its base
folder and its run directory, exactly as ``fedopt run`` would. Its torch threads are
pinned through ``$FEDOPT_CORES`` (:func:`fedopt.engine.local.usable_cores`) unless the
experiment sets ``engine.threads`` itself. A failure is returned, not raised: the sweep
records it and goes on with the other cells.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fedopt.config.load import validate
from fedopt.engine.local import CORES_ENV
from fedopt.errors import ConfigError, RunDiverged, RunInterrupted
from fedopt.run import checkpoint_path, run_experiment


@dataclass(frozen=True)
class CellTask:
    """What a worker needs to run one cell (picklable).

    Attributes
    ----------
    name
        The cell's name.
    raw
        Its experiment mapping.
    base_dir
        The experiment's folder (inputs resolve there).
    out_dir
        Its run directory.
    overwrite
        Replace a previous run there (a finished cell whose config changed).
    cores
        Torch threads for the cell when ``engine.threads`` is not set (None: all).
    """

    name: str
    raw: dict[str, Any]
    base_dir: str
    out_dir: str
    overwrite: bool
    cores: int | None


def run_cell(task: CellTask) -> dict[str, Any]:
    """Run one cell; return ``{name, status, wall_s, error, traceback, host, pid}``.

    ``status`` is ``complete``, ``diverged`` (the run directory is kept, marked so),
    ``failed`` (nothing is left behind; ``error`` says why) or ``interrupted`` (a
    signal; nothing is left behind; ``signum``).
    """
    t0 = time.perf_counter()
    out: dict[str, Any] = {
        "name": task.name,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "error": None,
        "traceback": None,
    }
    previous = os.environ.get(CORES_ENV)
    if task.cores is not None:
        os.environ[CORES_ENV] = str(task.cores)
    try:
        base = Path(task.base_dir)
        config = validate(task.raw, base)
        target = Path(task.out_dir)
        resume = checkpoint_path(target).is_file()
        kw: dict[str, Any] = {
            "base_dir": base,
            "out_dir": target,
            "overwrite": task.overwrite,
            "progress": False,
        }
        try:
            run_experiment(config, resume=resume, **kw)
        except ConfigError as exc:
            if not (resume and "checkpoint" in str(exc)):
                raise
            run_experiment(config, **kw)  # a checkpoint of another config: start afresh
        out["status"] = "complete"
    except RunDiverged as exc:
        out.update(status="diverged", error=str(exc))
    except RunInterrupted as exc:
        out.update(status="interrupted", error=str(exc), signum=exc.signum)
    except KeyboardInterrupt:
        out.update(status="interrupted", error="interrupted by SIGINT", signum=signal.SIGINT)
    except Exception as exc:
        out.update(
            status="failed",
            error=f"{type(exc).__name__}: {exc}" if not isinstance(exc, ConfigError) else str(exc),
            traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:]),
        )
    finally:
        if previous is None:
            os.environ.pop(CORES_ENV, None)
        else:
            os.environ[CORES_ENV] = previous
    out["wall_s"] = time.perf_counter() - t0
    return out


def worker_main(conn: Any) -> None:
    """A pool worker: run the cells it is sent until it is sent ``None``.

    SIGINT is ignored between cells (the driver decides when to stop); while a cell runs,
    :func:`~fedopt.run.run_experiment` turns SIGINT and SIGTERM into a clean stop that
    removes the cell's partial run directory.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        result = run_cell(task)
        conn.send(result)
        if result["status"] == "interrupted":
            return  # the sweep is stopping: start none of the cells queued behind


def run_cell_elsewhere(task: CellTask, inputs: dict[str, bytes]) -> dict[str, Any]:
    """Run a cell in a temporary folder and return its run directory's files.

    For a machine that does not share the sweep directory (a Ray worker node): the
    input files (plug-ins, graph files) come with the task and are written under
    ``inputs/`` of a temporary folder, whose config names them there (as a run
    directory's ``config.yaml`` does). ``files`` maps each relative path of the finished
    run directory to its bytes; the driver writes them into the sweep directory.
    """
    tmp = Path(tempfile.mkdtemp(prefix="fedopt-cell-"))
    try:
        for rel, data in inputs.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        run_dir = tmp / "run"
        result = run_cell(replace(task, base_dir=str(tmp), out_dir=str(run_dir), overwrite=False))
        files: dict[str, bytes] = {}
        if run_dir.is_dir():
            for p in sorted(run_dir.rglob("*")):
                if p.is_file():
                    files[p.relative_to(run_dir).as_posix()] = p.read_bytes()
        result["files"] = files
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

"""Pool worker processes: start them early, hand them to the pool.

A worker is a fresh interpreter running ``python -m fedopt.sweep.pool_worker FD``: it
never re-imports the caller's main script (as multiprocessing's spawn and forkserver
do), and it starts whatever threads this process runs (a fork after torch has used
OpenMP threads can hang). Cells and results travel as pickles over a socket pair.

Starting one costs an interpreter and a torch import (about 2 s), in parallel for all
workers. ``fedopt sweep`` calls :func:`prestart` before it imports torch itself, so the
workers' start overlaps its own; :class:`~fedopt.sweep.executors.PoolExecutor` then
:func:`adopt` s them. This module imports nothing heavy.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

_STARTED: list[WorkerProcess] = []


class WorkerProcess:
    """One worker process and the driver's end of its connection.

    Attributes
    ----------
    task
        The cell it runs now (None: idle); set by the pool.
    """

    def __init__(self) -> None:
        here, there = socket.socketpair()
        env = dict(os.environ)
        path = env.get("PYTHONPATH", "")
        root = str(Path(__file__).resolve().parents[2])  # this fedopt, installed or not
        env["PYTHONPATH"] = root + (os.pathsep + path if path else "")
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fedopt.sweep.pool_worker", str(there.fileno())],
                pass_fds=(there.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        finally:
            there.close()
        self.conn = Connection(here.detach())
        self.task: Any = None

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask it to exit; terminate, then kill it if it does not."""
        try:
            self.conn.send(None)
        except OSError:
            pass
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.conn.close()


def prestart(n: int) -> None:
    """Start ``n`` workers now (more only: those already started count)."""
    try:
        while len(_STARTED) < n:
            _STARTED.append(WorkerProcess())
    except OSError:  # no fds or no processes left: the pool starts what it needs later
        pass


def adopt(n: int) -> list[WorkerProcess]:
    """Up to ``n`` prestarted workers that are still alive; the others are stopped."""
    alive = [w for w in _STARTED if w.process.poll() is None]
    taken, rest = alive[:n], alive[n:]
    _STARTED.clear()
    for w in rest:
        w.stop()
    return taken


def release() -> None:
    """Kill the prestarted workers no pool adopted (a sweep that failed to plan): they
    hold no work, and may still be importing."""
    for w in _STARTED:
        if w.process.poll() is None:
            w.process.kill()
        w.process.wait()
        w.conn.close()
    _STARTED.clear()

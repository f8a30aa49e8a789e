"""Where cells run: in this process, a pool of worker processes, or Ray tasks.

Every executor takes :class:`~fedopt.sweep.worker.CellTask` objects and hands back the
result dicts of :func:`~fedopt.sweep.worker.run_cell`, as they finish:

* :class:`InlineExecutor` (``--jobs 1``): one cell at a time in this process.
* :class:`PoolExecutor` (``--jobs N``): N worker processes started at once (fresh
  interpreters, :mod:`fedopt.sweep.processes`), each running one cell at a time with
  its torch threads pinned. A worker that dies (killed, out of memory) is
  reported as its cell's failure and replaced; the other cells go on. On a signal each
  running cell stops cleanly (its partial run directory removed) before the pool ends.
* :class:`RayExecutor` (``--address``): one Ray task per cell, with ``num_cpus`` its
  threads; the task runs the cell in a temporary folder of whichever node Ray picks
  and returns the run directory's files, which are written here atomically, so the
  cluster's nodes need not share a file system.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import deque
from multiprocessing.connection import wait as wait_any
from typing import Any

from fedopt.errors import ConfigError
from fedopt.sweep.processes import WorkerProcess, adopt
from fedopt.sweep.worker import CellTask, run_cell, run_cell_elsewhere


def _died(task: CellTask, exitcode: int | None) -> dict[str, Any]:
    """The result of a cell whose worker process died."""
    if exitcode is not None and exitcode < 0:
        try:
            how = f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"killed by signal {-exitcode}"
    else:
        how = f"exit code {exitcode}"
    hint = " (out of memory?)" if exitcode == -signal.SIGKILL else ""
    return {
        "name": task.name,
        "status": "failed",
        "error": f"the worker process running it died ({how}){hint}",
        "traceback": None,
        "wall_s": None,
        "died": True,
    }


class InlineExecutor:
    """Runs each cell in this process when :meth:`poll` is called (``--jobs 1``)."""

    kind = "inline"

    def __init__(self) -> None:
        self.slots = 1
        self.queue: deque[CellTask] = deque()

    def busy(self) -> int:
        """Cells submitted and not yet handed back."""
        return len(self.queue)

    def submit(self, task: CellTask) -> None:
        """Queue a cell (it runs in the next :meth:`poll`)."""
        self.queue.append(task)

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        """Run the next queued cell and return its result."""
        if not self.queue:
            return []
        return [run_cell(self.queue.popleft())]

    def interrupt(self) -> list[dict[str, Any]]:
        """Nothing runs between polls: forget the queue."""
        self.queue.clear()
        return []

    def close(self) -> None:
        """Nothing to release."""


class PoolExecutor:
    """``jobs`` worker processes, each running one cell at a time.

    While cells are short (a mean under :attr:`SHORT_S` seconds) each worker is sent
    its next cell before it finishes the current one, so it never waits for this
    process to answer (which, on a busy machine, is a scheduling delay per cell); long
    cells are sent one at a time, so the last ones are shared out evenly.

    Parameters
    ----------
    jobs
        Number of worker processes. All start at once (each imports torch once), so
        their start overlaps the validation of the cells.
    """

    kind = "pool"
    SHORT_S = 2.0

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.workers: list[WorkerProcess] = adopt(jobs)  # started early by fedopt sweep
        while len(self.workers) < jobs:
            self.workers.append(WorkerProcess())
        for w in self.workers:
            w.task = deque()
        self._walls: list[float] = []

    @property
    def slots(self) -> int:
        """Cells that may be in flight: two per worker while cells are short."""
        walls = self._walls[-50:]
        short = not walls or sum(walls) / len(walls) < self.SHORT_S
        return self.jobs * (2 if short and len(self._walls) >= self.jobs else 1)

    def busy(self) -> int:
        """Cells sent and not yet handed back."""
        return sum(len(w.task) for w in self.workers)

    def submit(self, task: CellTask) -> None:
        """Send a cell to the worker with the fewest (replacing workers that died)."""
        if len(self.workers) < self.jobs:
            w = WorkerProcess()
            w.task = deque()
            self.workers.append(w)
        w = min(self.workers, key=lambda w: len(w.task))
        w.task.append(task)
        try:
            w.conn.send(task)
        except OSError:  # it died: the next poll reports it
            pass

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        """Results of the cells that finished within ``timeout`` seconds.

        A worker that died fails the cell it was running; the cells it had not started
        come back with status ``requeue``.
        """
        running = [w for w in self.workers if w.task]
        if not running:
            return []
        ready = set(wait_any([w.conn for w in running], timeout))
        out = []
        for w in running:
            if w.conn not in ready:
                continue
            try:
                while True:  # every result this worker has sent
                    result = w.conn.recv()
                    w.task.popleft()
                    if isinstance(result.get("wall_s"), (int, float)):
                        self._walls.append(result["wall_s"])
                    out.append(result)
                    if not (w.task and w.conn.poll()):
                        break
                continue
            except (EOFError, OSError):
                pass
            try:
                code = w.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                w.process.kill()
                code = w.process.wait()
            if w.task:
                out.append(_died(w.task.popleft(), code))
            out.extend(_requeued(t) for t in w.task)
            w.conn.close()
            self.workers.remove(w)
        return out

    def interrupt(self, grace_s: float = 30.0) -> list[dict[str, Any]]:
        """Stop every running cell cleanly (SIGTERM: its partial directory is removed);
        a worker exits after an interrupted cell, so the cells queued behind it never
        start."""
        out = []
        for w in self.workers:
            if w.task:
                try:
                    os.kill(w.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace_s
        while self.busy() and time.monotonic() < deadline:
            for res in self.poll(0.2):
                if res["status"] in ("failed", "requeue") and res.get("died"):
                    res["status"] = "interrupted"
                out.append(res)
        for w in list(self.workers):
            if w.task:
                w.process.kill()
                code = w.process.wait()
                out.append({**_died(w.task.popleft(), code), "status": "interrupted"})
                out.extend({**_requeued(t), "status": "interrupted"} for t in w.task)
                w.task.clear()
        return out

    def close(self) -> None:
        """Tell every worker to exit, and make sure each did."""
        for w in self.workers:
            try:
                w.conn.send(None)
            except OSError:
                pass
        for w in self.workers:
            w.stop()
        self.workers.clear()


def _requeued(task: CellTask) -> dict[str, Any]:
    """A cell sent to a worker that died before starting it: to be sent again."""
    return {
        "name": task.name,
        "status": "requeue",
        "error": None,
        "traceback": None,
        "wall_s": None,
        "died": True,
    }


class RayExecutor:
    """One Ray task per cell on a running cluster (``--address``), or on a local Ray
    this executor starts and stops (``--address local``).

    Parameters
    ----------
    address
        ``host:port``, ``auto``, or ``local``.
    cpus
        Ray ``num_cpus`` per task (and the cell's torch threads).
    max_in_flight
        Most tasks submitted at once (default: twice the cells the cluster fits).
    """

    kind = "ray"

    def __init__(self, address: str, cpus: int, max_in_flight: int | None = None) -> None:
        import ray

        from fedopt.engine.ray_engine.engine import connect

        self.ray = ray
        self.owned = not ray.is_initialized()  # disconnect at the end only if we connected
        self.started = connect(None if address == "local" else address)
        total = float(ray.cluster_resources().get("CPU", 0))
        if total < cpus:
            if self.owned:
                ray.shutdown()
            raise ConfigError(
                f"resources.cpus: each cell asks for {cpus} CPUs, but the Ray cluster at "
                f"{address!r} has {total:g}; lower resources.cpus or add nodes"
            )
        self.cpus = cpus
        self.fits = max(1, int(total // cpus))
        self.slots = max_in_flight or 2 * self.fits
        self.remote = ray.remote(num_cpus=cpus, max_retries=1)(_ray_cell)
        self.inflight: dict[Any, CellTask] = {}
        self.inputs: dict[str, dict[str, bytes]] = {}

    def busy(self) -> int:
        """Tasks submitted and not yet handed back."""
        return len(self.inflight)

    def submit(self, task: CellTask, inputs: dict[str, bytes] | None = None) -> None:
        """Start the cell's Ray task (``inputs``: the files its experiment reads)."""
        ref = self.remote.remote(task, inputs or {})
        self.inflight[ref] = task

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        """Results of the tasks that finished within ``timeout`` seconds (the run
        directory's files still in ``files``)."""
        if not self.inflight:
            return []
        ready, rest = self.ray.wait(list(self.inflight), num_returns=1, timeout=timeout)
        if ready and rest:  # and whatever else is done already
            more, _ = self.ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        out = []
        for ref in ready:
            task = self.inflight.pop(ref)
            try:
                out.append(self.ray.get(ref))
            except Exception as exc:  # the task's worker or node died
                out.append(
                    {
                        "name": task.name,
                        "status": "failed",
                        "error": f"the Ray task running it failed: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}",
                        "traceback": None,
                        "wall_s": None,
                    }
                )
        return out

    def interrupt(self) -> list[dict[str, Any]]:
        """Cancel every task (their runs are in the nodes' temporary folders: nothing
        in the sweep directory is touched)."""
        out = []
        for ref, task in list(self.inflight.items()):
            try:
                self.ray.cancel(ref, force=False)
            except Exception:
                pass
            out.append(
                {
                    "name": task.name,
                    "status": "interrupted",
                    "error": "cancelled",
                    "traceback": None,
                    "wall_s": None,
                }
            )
        self.inflight.clear()
        return out

    def close(self) -> None:
        """Disconnect from the cluster (and stop the local Ray this executor started)."""
        if self.owned:
            self.ray.shutdown()


def _ray_cell(task: CellTask, inputs: dict[str, bytes]) -> dict[str, Any]:
    """The Ray task: :func:`run_cell_elsewhere`, tagged with the node it ran on."""
    import ray

    result = run_cell_elsewhere(task, inputs)
    ctx = ray.get_runtime_context()
    result["ray_node_id"] = ctx.get_node_id()
    try:
        result["node_ip"] = ray.util.get_node_ip_address()
    except Exception:
        result["node_ip"] = None
    return result

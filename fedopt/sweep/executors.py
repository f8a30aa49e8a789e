"""Where cells run: in this process, a pool of worker processes, or Ray tasks.

Every executor takes :class:`~fedopt.sweep.worker.CellTask` objects and hands back the
result dicts of :func:`~fedopt.sweep.worker.run_cell`, as they finish:

* :class:`InlineExecutor` (``--jobs 1``): one cell at a time in this process.
* :class:`PoolExecutor` (``--jobs N``): N worker processes started once (forkserver,
  so torch is imported once and each worker forks from it), each running one cell at
  a time with its torch threads pinned. A worker that dies (killed, out of memory) is
  reported as its cell's failure and replaced; the other cells go on. On a signal each
  running cell stops cleanly (its partial run directory removed) before the pool ends.
* :class:`RayExecutor` (``--address``): one Ray task per cell, with ``num_cpus`` its
  threads; the task runs the cell in a temporary folder of whichever node Ray picks
  and returns the run directory's files, which are written here atomically, so the
  cluster's nodes need not share a file system.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from collections import deque
from multiprocessing.connection import wait as wait_any
from pathlib import Path
from typing import Any

from fedopt.errors import ConfigError
from fedopt.sweep.worker import CellTask, run_cell, run_cell_elsewhere, worker_main


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


class _Worker:
    def __init__(self, ctx: Any) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=worker_main, args=(child,), daemon=True)
        self.process.start()
        child.close()
        self.task: CellTask | None = None


class PoolExecutor:
    """``jobs`` worker processes, each running one cell at a time.

    Parameters
    ----------
    jobs
        Number of worker processes (started as cells need them).
    """

    kind = "pool"

    def __init__(self, jobs: int) -> None:
        methods = mp.get_all_start_methods()
        if "forkserver" in methods:
            self.ctx = mp.get_context("forkserver")
            self.ctx.set_forkserver_preload(["fedopt.sweep.worker"])
        else:  # pragma: no cover - Windows
            self.ctx = mp.get_context("spawn")
        self.slots = jobs
        self.workers: list[_Worker] = []

    def busy(self) -> int:
        """Cells running now."""
        return sum(w.task is not None for w in self.workers)

    def submit(self, task: CellTask) -> None:
        """Send a cell to an idle worker (starting one if fewer than ``jobs`` exist)."""
        idle = next((w for w in self.workers if w.task is None), None)
        if idle is None:
            if len(self.workers) >= self.slots:
                raise RuntimeError("PoolExecutor.submit: no free worker")
            idle = _Worker(self.ctx)
            self.workers.append(idle)
        idle.task = task
        idle.conn.send(task)

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        """Results of the cells that finished within ``timeout`` seconds."""
        running = [w for w in self.workers if w.task is not None]
        if not running:
            return []
        handles = [w.conn for w in running] + [w.process.sentinel for w in running]
        ready = set(wait_any(handles, timeout))
        out = []
        for w in running:
            assert w.task is not None
            if w.conn in ready:
                try:
                    out.append(w.conn.recv())
                    w.task = None
                    continue
                except (EOFError, OSError):
                    pass
            if w.conn in ready or w.process.sentinel in ready:
                w.process.join(timeout=5)
                out.append(_died(w.task, w.process.exitcode))
                w.task = None
                self.workers.remove(w)
        return out

    def interrupt(self, grace_s: float = 30.0) -> list[dict[str, Any]]:
        """Stop every running cell cleanly (SIGTERM: its partial directory is removed)."""
        out = []
        for w in self.workers:
            if w.task is not None and w.process.pid is not None:
                try:
                    os.kill(w.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace_s
        while self.busy() and time.monotonic() < deadline:
            for res in self.poll(0.2):
                if res["status"] == "failed" and "worker process" in (res.get("error") or ""):
                    res["status"] = "interrupted"
                out.append(res)
        for w in self.workers:
            if w.task is not None:
                w.process.kill()
                w.process.join(timeout=5)
                out.append({**_died(w.task, w.process.exitcode), "status": "interrupted"})
                w.task = None
        return out

    def close(self) -> None:
        """Tell every worker to exit, and make sure each did."""
        for w in self.workers:
            try:
                w.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for w in self.workers:
            w.process.join(timeout=10)
            if w.process.is_alive():
                w.process.terminate()
                w.process.join(timeout=5)
            w.conn.close()
        self.workers.clear()


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
        ready, _ = self.ray.wait(
            list(self.inflight), num_returns=len(self.inflight), timeout=timeout
        )
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


def cleanup_partials(folder: Path, name: str) -> None:
    """Remove temporary folders a killed cell left (see :func:`~fedopt.sweep.manifest.
    remove_partials`)."""
    from fedopt.sweep.manifest import remove_partials

    remove_partials(folder / name)

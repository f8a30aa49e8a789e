"""``fedopt sweep``: validate every cell, then run the ones not done yet, in parallel.

Order of work:

1. Parse the sweep file and build every cell (:mod:`fedopt.sweep.expand`); validate and
   compile each one. Any problem, in any cell, stops the sweep here with one message
   listing them all: nothing has run.
2. Check the sweep directory (:mod:`fedopt.sweep.manifest`): new, empty, or the same
   sweep. Each cell's folder is classified: a finished run of the same config is
   skipped; a finished run of another config is replaced only with ``--overwrite``
   (else refused, with the keys that changed); anything fedopt did not write is
   refused.
3. Run the remaining cells on an executor (:mod:`fedopt.sweep.executors`), halving
   searches first (they are sequential, so they gate the end of the sweep). Each result
   is recorded in ``sweep.json`` as it arrives; a failed cell is recorded with its
   error and the others go on.
4. SIGINT or SIGTERM stops the running cells cleanly (no partial run directory stays)
   and records where the sweep stood; the same command resumes it.
"""

from __future__ import annotations

import fnmatch
import json
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedopt.engine.local import usable_cores
from fedopt.errors import ConfigError, RunInterrupted
from fedopt.interrupts import SignalGuard
from fedopt.results.rundir import install_run, protected_paths
from fedopt.sweep.expand import Cell, Prepared, expand, prepare, ref_columns
from fedopt.sweep.manifest import (
    FORMAT,
    Manifest,
    SweepLock,
    cell_state,
    check_sweep_dir,
    read_manifest,
    remove_partials,
)
from fedopt.sweep.search import StepSearch
from fedopt.sweep.spec import SweepSpec
from fedopt.sweep.stability import Verdict, run_stability
from fedopt.sweep.worker import CellTask

DONE = ("complete", "diverged")
"""Statuses of a cell whose run directory is finished."""


@dataclass
class SweepOutcome:
    """What a sweep did: counts per status, the failed cells' errors, the directory."""

    folder: Path
    total: int
    counts: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    searches: dict[str, dict[str, Any]] = field(default_factory=dict)
    wall_s: float = 0.0


def default_sweep_dir(spec: SweepSpec) -> Path:
    """``runs/<sweep name>``."""
    return Path("runs") / spec.name


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def read_run(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``summary.json`` and the ``metrics.jsonl`` records of a finished run directory."""
    summary = json.loads((folder / "summary.json").read_text())
    records = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines() if x]
    return summary, records


def plan_sweep(
    spec: SweepSpec,
    out: Path,
    overwrite: bool = False,
    note: Callable[[str], None] | None = None,
    cells: list[Cell] | None = None,
) -> tuple[list[Prepared], dict[str, tuple[str, str]], dict[str, Any] | None]:
    """Steps 1 and 2 of the module docstring: the validated cells, each cell folder's
    state (:func:`~fedopt.sweep.manifest.cell_state`), and the old manifest.

    Raises
    ------
    ConfigError
        For any invalid cell, a sweep directory that may not be used, a cell folder
        fedopt did not write, or (without ``overwrite``) finished cells whose config
        changed; every such problem is listed in one message.
    """
    if cells is None:
        cells = expand(spec, note=note)
    preps = prepare(spec, cells)
    inputs = [p.cell.base_dir for p in preps] + ([spec.folder] if spec.source else [])
    protected = protected_paths(None, [])
    for folder in dict.fromkeys(inputs):
        protected.append((folder.resolve(), "the folder of the sweep or experiment file"))
    old = check_sweep_dir(out, spec.name, protected)
    states = {p.cell.name: cell_state(out, p) for p in preps}
    foreign = [(n, d) for n, (s, d) in states.items() if s == "foreign"]
    if foreign:
        lines = [f"{n}: {d}" for n, d in foreign[:10]]
        more = f"\n  ... ({len(foreign)} cells in all)" if len(foreign) > 10 else ""
        raise ConfigError(
            f"sweep directory {str(out)!r}: {len(foreign)} cell folders hold things fedopt did "
            "not write, and fedopt never touches those (move them out, or choose another "
            "--out):\n  " + "\n  ".join(lines) + more
        )
    changed = [(n, d) for n, (s, d) in states.items() if s == "changed"]
    if changed and not overwrite:
        lines = [f"{n}: {d}" for n, d in changed[:10]]
        more = f"\n  ... ({len(changed)} cells in all)" if len(changed) > 10 else ""
        raise ConfigError(
            f"sweep directory {str(out)!r}: {len(changed)} finished cells were run with a "
            "different config; pass --overwrite to rerun them, or choose another --out:\n  "
            + "\n  ".join(lines)
            + more
        )
    return preps, states, old


def _axes_record(spec: SweepSpec) -> list[dict[str, Any]]:
    return [
        {
            "name": a.name,
            "kind": a.kind,
            "keys": list(a.keys),
            "where": a.where,
            "options": [o.label for o in a.options],
        }
        for a in spec.axes()
    ]


def _entry(prep: Prepared, status: str) -> dict[str, Any]:
    c = prep.cell
    return {
        "index": prep.index,
        "point": c.point,
        "search": c.search,
        "columns": dict(c.columns),
        "seed": c.seed,
        "step": c.step,
        "step_index": c.step_index,
        "experiment": c.experiment,
        "config_sha256": prep.digest,
        "status": status,
        "attempts": 0,
        "wall_s": None,
        "error": None,
    }


def _new_manifest(
    spec: SweepSpec,
    preps: list[Prepared],
    states: dict[str, tuple[str, str]],
    old: dict | None,
    keep_others: bool = False,
) -> dict[str, Any]:
    """The manifest of this run: an entry per cell (halving cells once requested).

    Cells of the old manifest that are not in this run are kept as they are with
    ``keep_others`` (``--only`` ran a subset), else moved to ``retired``.
    """
    from fedopt import __version__

    old_cells = (old or {}).get("cells", {})
    old_retired = (old or {}).get("retired", {})
    cells: dict[str, dict[str, Any]] = {}
    for p in preps:
        if p.cell.search is not None and p.cell.name not in old_cells:
            continue  # a halving cell enters the manifest when its search asks for it
        state = states[p.cell.name][0]
        entry = _entry(p, state if state in DONE else "pending")
        prev = old_cells.get(p.cell.name) or old_retired.get(p.cell.name)
        if prev and prev.get("config_sha256") == p.digest:
            for k in ("attempts", "wall_s", "host", "pid", "ray_node_id", "node_ip", "finished"):
                if k in prev:
                    entry[k] = prev[k]
            if state not in DONE and prev.get("status") == "failed":
                entry.update(status="failed", error=prev.get("error"))
        cells[p.cell.name] = entry
    names = {p.cell.name for p in preps}
    retired = {n: e for n, e in old_retired.items() if n not in names}
    others = {n: e for n, e in old_cells.items() if n not in names}
    if keep_others:
        cells.update(others)
    else:
        retired.update(others)
    columns: list[str] = list((old or {}).get("columns") or []) if keep_others else []
    for p in preps:
        for col, _ in p.cell.columns:
            if col not in columns:
                columns.append(col)
    return {
        "format": FORMAT,
        "sweep": spec.name,
        "source": str(spec.source) if spec.source else None,
        "fedopt_version": __version__,
        "created": (old or {}).get("created") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": list(sys.argv),
        "axes": _axes_record(spec),
        "columns": columns,
        "refs": ref_columns(spec),
        "seeds": list(spec.seeds) if spec.seeds is not None else None,
        "halving": asdict(spec.halving) if spec.halving else None,
        "select": asdict(spec.select) if spec.select else None,
        "report": asdict(spec.report),
        "cells": cells,
        "searches": {},
        "retired": retired,
    }


class _Progress:
    """A tqdm bar over cells on a terminal, else one line per finished cell."""

    def __init__(self, total: int, enabled: bool | None, log: Callable[[str], None]) -> None:
        self.log = log
        self.done = 0
        self.total = total
        self.bar = None
        show = enabled if enabled is not None else sys.stderr.isatty()
        if show:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="cell", desc="sweep", leave=False)
        self.quiet = enabled is False

    def grow(self, n: int) -> None:
        self.total += n
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.refresh()

    def cell(self, name: str, result: dict[str, Any]) -> None:
        self.done += 1
        wall = result.get("wall_s")
        took = f" in {wall:.1f} s" if isinstance(wall, (int, float)) else ""
        line = f"[{self.done}/{self.total}] {name}: {result['status']}{took}"
        if result["status"] == "failed":
            line += f": {(result.get('error') or '').splitlines()[0][:200]}"
        if self.bar is not None:
            self.bar.update(1)
            if result["status"] == "failed":
                self.bar.write(line, file=sys.stderr)
        elif not self.quiet:
            self.log(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_sweep(
    spec: SweepSpec,
    out: Path | None = None,
    *,
    jobs: int | None = None,
    address: str | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] = _stderr,
    only: list[str] | None = None,
) -> SweepOutcome:
    """Run a sweep (see the module docstring); return what it did.

    Parameters
    ----------
    spec
        The parsed sweep file.
    out
        The sweep directory (default ``runs/<name>``).
    jobs
        Cells run at once: worker processes (default: the usable cores divided by
        ``resources.cpus``), ``1`` runs them in this process; with ``address``, the
        most Ray tasks in flight (default: twice what the cluster fits).
    address
        A Ray cluster (``host:port`` or ``auto``; ``local`` starts a local Ray): one
        Ray task per cell.
    overwrite
        Rerun finished cells whose config changed.
    progress
        Progress bar (default: when stderr is a terminal; False: no per-cell lines).
    log
        Receives notes and per-cell lines (default: stderr).
    only
        Glob patterns: run only the cells whose name (or point) matches one (a halving
        cell: its search point); the others are left as they are.

    Raises
    ------
    ConfigError
        Before anything runs, for every problem of the sweep (see :func:`plan_sweep`).
    RunInterrupted
        SIGINT or SIGTERM: the running cells were stopped cleanly, the manifest says
        where the sweep stood.
    """
    out = Path(out) if out is not None else default_sweep_dir(spec)
    t0 = time.perf_counter()
    cells = select_cells(expand(spec, note=lambda s: log(f"note: {s}")), only)
    # the workers start now, so that their start overlaps the validation of the cells
    executor = _executor(spec, jobs, address, _demand(spec, cells))
    try:
        return _run(spec, out, cells, executor, overwrite, progress, log, t0, bool(only))
    finally:
        with SignalGuard() as guard, guard.deferred(raise_pending=False):
            executor.close()


def select_cells(cells: list[Cell], only: list[str] | None) -> list[Cell]:
    """The cells ``--only`` keeps (all without patterns).

    Raises
    ------
    ConfigError
        When no cell matches, naming a few cells to match against.
    """
    if not only:
        return cells

    def keep(c: Cell) -> bool:
        names = [c.search] if c.search is not None else [c.name, c.point]
        return any(fnmatch.fnmatchcase(n, pat) for n in names for pat in only)

    kept = [c for c in cells if keep(c)]
    if not kept:
        shown = ", ".join(c.name for c in cells[:4])
        raise ConfigError(
            f"--only {' '.join(only)}: matches no cell; cells are named like {shown} "
            "(globs: * and ?, e.g. --only 'lsq_cycle/*')"
        )
    return kept


def _demand(spec: SweepSpec, cells: list[Cell]) -> int:
    """How many cells could run at once (a halving search runs one step at a time)."""
    plain = sum(c.search is None for c in cells)
    searches = len({c.search for c in cells if c.search is not None})
    per = len(spec.seeds or [None]) if spec.halving and spec.halving.decide == "all" else 1
    return plain + searches * per


def _run(
    spec: SweepSpec,
    out: Path,
    cells: list[Cell],
    executor: Any,
    overwrite: bool,
    progress: bool | None,
    log: Callable[[str], None],
    t0: float,
    subset: bool = False,
) -> SweepOutcome:
    """:func:`run_sweep` once the cells are built and the executor started."""
    preps, states, old = plan_sweep(spec, out, overwrite, cells=cells)
    on_ray = sum(p.config.engine.kind == "ray" for p in preps)
    if on_ray and executor.kind == "pool":
        log(
            f"note: {on_ray} cells use engine.kind: ray, so each starts a Ray instance of its "
            f"own in its worker process ({executor.slots} at a time); --jobs 1 runs them one "
            "at a time, --address runs them on a cluster"
        )
    with SweepLock(out):
        # the folders again: another sweep may have finished cells before we locked
        states = {p.cell.name: cell_state(out, p) for p in preps}
        old = read_manifest(out) or old
        return _locked(spec, out, preps, states, old, executor, progress, log, t0, subset)


def _locked(
    spec: SweepSpec,
    out: Path,
    preps: list[Prepared],
    states: dict[str, tuple[str, str]],
    old: dict[str, Any] | None,
    executor: Any,
    progress: bool | None,
    log: Callable[[str], None],
    t0: float,
    subset: bool,
) -> SweepOutcome:
    """:func:`run_sweep` holding the sweep directory's lock."""
    manifest = Manifest(out, _new_manifest(spec, preps, states, old, keep_others=subset))
    by_name = {p.cell.name: p for p in preps}
    outcome = SweepOutcome(out, total=0)

    # what to run: plain cells now, halving cells when their search asks for them
    queue: deque[Prepared] = deque()
    searches: dict[str, StepSearch] = {}
    grouped: dict[str, dict[int, list[Prepared]]] = {}
    for p in preps:
        c = p.cell
        if c.search is None:
            if states[c.name][0] in DONE:
                outcome.skipped += 1
            else:
                queue.append(p)
        else:
            assert c.step_index is not None
            grouped.setdefault(c.search, {}).setdefault(c.step_index, []).append(p)
    for name, steps in grouped.items():
        assert spec.halving is not None
        searches[name] = StepSearch(name, [steps[k] for k in sorted(steps)], spec.halving)
    owner = {p.cell.name: s for s in searches.values() for ps in s.steps for p in ps}
    scheduled: set[str] = {p.cell.name for p in queue}

    def verdict_of(p: Prepared) -> Verdict:
        summary, records = read_run(out / p.cell.name)
        h = spec.halving
        assert h is not None
        return run_stability(
            summary, records, metric=h.metric, window=h.window, tolerance=h.tolerance
        )

    def advance(search: StepSearch) -> list[Prepared]:
        """Feed the search what is already on disk; return the cells it still needs."""
        while True:
            todo = []
            fed = False
            for p in search.wanted():
                name = p.cell.name
                if name in scheduled:
                    continue
                if name not in manifest.cells:
                    manifest.cells[name] = _entry(p, "pending")
                if states[name][0] in DONE:
                    search.record(name, verdict_of(p))
                    manifest.update(name, status=states[name][0])
                    outcome.skipped += 1
                    fed = True
                else:
                    todo.append(p)
            manifest.data["searches"][search.name] = search.describe()
            if todo or not fed:
                for p in todo:
                    scheduled.add(p.cell.name)
                return todo

    for search in searches.values():
        queue.extendleft(reversed(advance(search)))
    bar = _Progress(len(queue), progress, log)
    manifest.save(force=True)
    cores = _cell_cores(spec, executor)
    inputs_cache: dict[str, dict[str, bytes]] = {}

    def submit(p: Prepared) -> None:
        c = p.cell
        target = out / c.name
        again = states[c.name][0] == "changed"
        remove_partials(target)
        if executor.kind == "ray":
            task = CellTask(c.name, p.saved, str(c.base_dir), str(target), again, cores)
            executor.submit(task, _inputs(p, inputs_cache))
        else:
            task = CellTask(c.name, c.raw, str(c.base_dir), str(target), again, cores)
            executor.submit(task)
        entry = manifest.cells[c.name]
        manifest.update(c.name, status="running", attempts=int(entry.get("attempts") or 0) + 1)

    def finish(result: dict[str, Any], guard: SignalGuard) -> None:
        name = result["name"]
        p = by_name[name]
        status = result["status"]
        if executor.kind == "ray" and status in DONE:
            try:
                with guard.deferred():
                    install_run(
                        out / name,
                        _fix_env(result.pop("files"), p),
                        states[name][0] == "changed",
                        [],
                    )
            except (ConfigError, OSError) as exc:
                result.update(status="failed", error=f"writing the run directory: {exc}")
        result.pop("files", None)
        if status == "interrupted":
            manifest.update(name, status="pending", error=None)
            remove_partials(out / name)
            return
        if status == "requeue":  # its worker died before starting it: send it again
            manifest.update(name, status="pending")
            queue.appendleft(p)
            return
        fields = {
            k: result.get(k)
            for k in (
                "status",
                "wall_s",
                "error",
                "traceback",
                "host",
                "pid",
                "ray_node_id",
                "node_ip",
            )
            if k in result
        }
        fields["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        manifest.update(name, **fields)
        if result["status"] in DONE:
            states[name] = (result["status"], "")
        else:
            remove_partials(out / name)
            outcome.failed.append((name, result.get("error") or "?"))
        bar.cell(name, result)
        search = owner.get(name)
        if search is not None:
            scheduled.discard(name)
            search.record(name, verdict_of(p) if result["status"] in DONE else None)
            more = advance(search)
            bar.grow(len(more))
            queue.extendleft(reversed(more))
            manifest.data["searches"][search.name] = search.describe()

    interrupted: RunInterrupted | None = None
    try:
        with SignalGuard() as guard:
            try:
                while queue or executor.busy():
                    while queue and executor.busy() < executor.slots:
                        submit(queue.popleft())
                    manifest.save()
                    for result in executor.poll(0.5):
                        finish(result, guard)
                        if result["status"] == "interrupted":
                            raise RunInterrupted(int(result.get("signum") or 2))
            except RunInterrupted as exc:
                interrupted = exc
                with guard.deferred(raise_pending=False):
                    for result in executor.interrupt():
                        finish(result, guard)
    finally:
        with SignalGuard() as guard, guard.deferred(raise_pending=False):
            bar.close()
            for entry in manifest.cells.values():
                if entry["status"] == "running":
                    entry["status"] = "pending"
            manifest.save(force=True)
    ours = [e for n, e in manifest.cells.items() if n in by_name]  # --only: this subset
    for entry in ours:
        outcome.counts[entry["status"]] = outcome.counts.get(entry["status"], 0) + 1
    outcome.total = len(ours)
    outcome.searches = manifest.data["searches"]
    outcome.wall_s = time.perf_counter() - t0
    if interrupted is not None:
        done = sum(outcome.counts.get(s, 0) for s in DONE)
        raise RunInterrupted(
            interrupted.signum,
            f"{interrupted}: {done} of {outcome.total} cells are done; run the same command "
            f"again to resume (sweep directory {str(out)!r})",
        )
    return outcome


def _executor(spec: SweepSpec, jobs: int | None, address: str | None, cells: int) -> Any:
    from fedopt.sweep.executors import InlineExecutor, PoolExecutor, RayExecutor

    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs {jobs}: give at least 1 (1 runs the cells in this process)")
    if address is not None:
        return RayExecutor(address, spec.cpus or 1, jobs)
    n = jobs if jobs is not None else max(1, usable_cores() // (spec.cpus or 1))
    n = max(1, min(n, cells))
    return InlineExecutor() if n == 1 else PoolExecutor(n)


def _cell_cores(spec: SweepSpec, executor: Any) -> int | None:
    """Torch threads per cell: ``resources.cpus``, else the cores / jobs (local) or 1."""
    if spec.cpus is not None:
        return spec.cpus
    if executor.kind == "ray":
        return 1
    if executor.kind == "inline":
        return None
    return max(1, usable_cores() // executor.slots)


def _inputs(p: Prepared, cache: dict[str, dict[str, bytes]]) -> dict[str, bytes]:
    """The input files a cell's experiment reads, by their path in the run directory."""
    from fedopt.results.inputs import collect_inputs, read_inputs

    items = collect_inputs(p.config, p.cell.base_dir)
    key = "|".join(sorted(str(i.path) for i in items))
    if key not in cache:
        cache[key] = read_inputs(items)[0]
    return cache[key]


def _fix_env(files: dict[str, bytes], p: Prepared) -> dict[str, bytes]:
    """Put the inputs' original paths (on this machine) back into a remote run's env.json."""
    from fedopt.results.inputs import collect_inputs

    raw = files.get("env.json")
    if raw is None:
        return files
    env = json.loads(raw)
    originals = {i.copy: str(i.path) for i in collect_inputs(p.config, p.cell.base_dir)}
    for rec in env.get("inputs", []):
        if rec.get("copy") in originals:
            rec["original"] = originals[rec["copy"]]
    files["env.json"] = (json.dumps(env, indent=2, sort_keys=True) + "\n").encode()
    return files

"""Sweeps: grids over any config field and seeds, run in parallel, resumable, tabulated.

``fedopt sweep SWEEP.yaml [--out DIR] [--jobs N] [--address RAY]`` runs every cell of a
sweep file; ``fedopt sweep-report DIR`` (or ``fedopt report DIR``) tabulates and plots
it. The sweep file::

    name: lr-grid                     # the sweep's name (default: the file's stem);
                                      # its directory defaults to runs/<name>
    experiment: ../quickstart.yaml    # the base experiment: a path (relative to this
                                      # file) or an inline mapping
    set: {stop.rounds: 200}           # overrides for every cell
    grid:                             # every combination of the axes, in this order:
      algorithm.lr: [0.05, 0.1, 0.2]  #   a list over any dotted config key
      method:                         #   or named options, each a set of keys
        dsgd: {algorithm.name: dsgd}
        fedavg: {algorithm.name: fedavg, topology.name: star}
    zip:                              # paired keys: the i-th values go together
      topology.n: [16, 64]
      problem.dim: [10, 100]
    cells:                            # named cells (an axis named `cell`)
      crash: {experiment: crash.yaml} # `experiment` in an option names its base file
    seeds: 3                          # seeds 0, 1, 2 for every point (or [1, 2, 7])
    exclude:                          # remove cells: axis or key -> value, glob, list
      - {method: fedavg, lr: 0.2}
    resources: {cpus: 1}              # torch threads (Ray: num_cpus) per cell
    report: {metrics: [final_loss, "min(loss)"], by: lr, x: round, y: loss}

    halving:                          # optional: per point, halve a step size until stable
      key: algorithm.lr
      start: 1.0                      # (default: the experiment's value)
      factor: 0.5
      steps: 10                       # tries 1, 1/2, ..., 1/2**9
      metric: loss                    # the record key judged
      window: 5                       # unstable: NaN / diverged, or metric above
      tolerance: 1.05                 #   tolerance x its running minimum at `window`
                                      #   consecutive evaluations (DIFF2, diff2.md §4.6)
      decide: all                     # all seeds must be stable (first: seed 0 decides)
    select:                           # optional: model selection per group
      metric: min(loss)               # a metric (see below), mean over seeds
      mode: min
      by: [method]                    # one winner per method

``grid`` may also be a list of such mappings: the sweep is then the union of their
products (the MoNNA grid: methods x attacks, plus the attack-free reference). Every
``zip`` group and the ``cells`` are crossed with each of them. A cell is named by its
options in file order, then the halving step, then the seed (``lr=0.1/dsgd/seed0``);
that name is also its run directory under the sweep directory.

Metrics (tables, ``select.metric``): a ``summary.json`` key (``final_loss``,
``by_kind.model.messages``), a reduction over ``metrics.jsonl`` (``min(loss)``,
``max(test_accuracy)``, ``mean(..)``, ``first(..)``, ``last(..)``), or the value of a
record key at the first record that crosses a threshold
(``gradients_total@relative_sq_distance<=1e-6``); see :mod:`fedopt.sweep.metrics`.

Every cell is validated and compiled before anything runs, and every problem is reported
at once. A cell's run directory is what ``fedopt run BASE --set ... --out DIR`` writes.
The sweep directory's ``sweep.json`` records every cell's status, config hash, time,
host and error; a finished cell whose config hash matches is skipped when the sweep is
run again, a failed cell is recorded and the others go on, and Ctrl-C stops the running
cells cleanly. Modules: :mod:`~fedopt.sweep.spec` (the file), :mod:`~fedopt.sweep.expand`
(cells), :mod:`~fedopt.sweep.runner` (scheduling), :mod:`~fedopt.sweep.executors`
(process pool, Ray), :mod:`~fedopt.sweep.stability` and :mod:`~fedopt.sweep.search`
(halving), :mod:`~fedopt.sweep.results` and :mod:`~fedopt.sweep.report` (tables, plots,
selection).
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "SweepOutcome": "fedopt.sweep.runner",
    "run_sweep": "fedopt.sweep.runner",
    "SweepSpec": "fedopt.sweep.spec",
    "load_sweep": "fedopt.sweep.spec",
    "parse_sweep": "fedopt.sweep.spec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # imported on first use, so that fedopt.sweep.processes starts workers before torch
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fedopt.sweep' has no attribute {name!r}")

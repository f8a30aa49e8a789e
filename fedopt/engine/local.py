"""The embedded local engine: one in-process worker hosts every node. No Ray."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fedopt.engine.driver import LocalGroup, RunResult, run_schedule
from fedopt.engine.plan import Plan
from fedopt.engine.worker import Worker
from fedopt.errors import ConfigError

CORES_ENV = "FEDOPT_CORES"
"""Environment variable capping the cores a run uses when ``engine.threads`` is not set
(a sweep sets it to each cell's share of the machine: cores / jobs, or a Ray task's CPUs)."""


def usable_cores() -> int:
    """Cores this process may run on (respects affinity masks and cgroup-style pinning),
    at most ``$FEDOPT_CORES`` when that is set to a positive integer."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = os.cpu_count() or 1
    cap = os.environ.get(CORES_ENV, "").strip()
    if cap.isdigit() and int(cap) > 0:
        cores = min(cores, int(cap))
    return cores


def resolve_device(kind: str) -> torch.device:
    """Map ``engine.device`` to a torch device, failing clearly when CUDA is missing."""
    if kind == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if kind == "auto":
        return torch.device("cpu")
    raise ConfigError(
        f"engine.device: 'cuda' requested but no CUDA GPU is visible to torch "
        f"{torch.__version__} (torch.cuda.is_available() is False); use engine.device: cpu "
        "or auto, or install a CUDA build of torch on a GPU machine"
    )


def configure_threads(threads: int | None) -> int:
    """Set torch's intra-op threads explicitly (default: the usable cores)."""
    n = threads or usable_cores()
    torch.set_num_threads(n)
    return n


def run_local(
    plan: Plan,
    on_record: Callable[[dict[str, Any]], None] = lambda r: None,
    on_round: Callable[[int], None] = lambda t: None,
    meter_enabled: bool = True,
    **schedule: Any,
) -> tuple[RunResult, Worker]:
    """Run ``plan`` on one in-process worker hosting all nodes."""
    cfg = plan.config
    configure_threads(cfg.engine.threads)
    device = resolve_device(cfg.engine.device)
    worker = Worker(plan, np.arange(plan.topology.n), device, meter_enabled=meter_enabled)
    stats = worker.optimum_stats()
    x_star = stats.solve() if stats is not None else None
    group = LocalGroup([worker])
    result = run_schedule(plan, group, x_star, on_record=on_record, on_round=on_round, **schedule)
    return result, worker

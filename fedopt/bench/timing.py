"""Shared harness: run a config on the local engine and time the rounds only."""

from __future__ import annotations

import resource
import time
from typing import Any

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.engine.driver import LocalGroup, run_schedule
from fedopt.engine.local import configure_threads, resolve_device
from fedopt.engine.worker import Worker


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (GiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def timed_run(raw: dict[str, Any], meter: bool = True) -> dict[str, Any]:
    """Build and run an experiment dict; time set-up and the rounds separately.

    The round clock starts after the round-0 evaluation and stops after the last
    round, before the final evaluation, as the reference harnesses do.
    """
    t0 = time.perf_counter()
    cfg = validate(raw)
    plan = compile_plan(cfg)
    threads = configure_threads(cfg.engine.threads)
    import numpy as np

    worker = Worker(plan, np.arange(plan.topology.n), resolve_device("cpu"), meter_enabled=meter)
    setup_s = time.perf_counter() - t0
    marks: dict[str, float] = {}

    def on_record(rec: dict[str, Any]) -> None:
        if rec["round"] == 0:
            marks["start"] = time.perf_counter()

    def on_round(t: int) -> None:
        marks["end"] = time.perf_counter()

    result = run_schedule(plan, LocalGroup([worker]), None, on_record=on_record, on_round=on_round)
    return {
        "threads": threads,
        "setup_s": round(setup_s, 3),
        "rounds_s": marks["end"] - marks["start"],
        "result": result,
        "peak_rss_gb": round(peak_rss_gb(), 3),
    }

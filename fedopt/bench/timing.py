"""Shared harness: run an experiment dict on an engine and time the rounds only.

The round clock starts when the round-0 evaluation is recorded and stops after the
last round, before the final evaluation, as the reference harnesses do. For the Ray
engine, Ray is initialised before the clock starts, so ``startup_s`` is the time
from a ready Ray to the first round (actors, data, state).
"""

from __future__ import annotations

import resource
import time
from typing import Any

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.run import execute


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (GiB; Ray actors not included)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def timed_run(raw: dict[str, Any], meter: bool = True) -> dict[str, Any]:
    """Build and run an experiment dict; time start-up and the rounds separately."""
    plan = compile_plan(validate(raw))
    if plan.config.engine.kind == "ray":
        from fedopt.engine.ray_engine.engine import connect

        connect(plan.config.engine.address)
    t0 = time.perf_counter()
    marks: dict[str, float] = {}
    round_ends: list[float] = []

    def on_record(rec: dict[str, Any]) -> None:
        if rec["round"] == 0:
            marks["start"] = time.perf_counter()

    def on_round(t: int) -> None:
        round_ends.append(time.perf_counter())

    out = execute(plan, on_record=on_record, on_round=on_round, meter_enabled=meter)
    gaps = [b - a for a, b in zip([marks["start"], *round_ends[:-1]], round_ends, strict=True)]
    return {
        "threads": out.threads,
        "actors": len(out.workers),
        "startup_s": round(marks["start"] - t0, 3),
        "rounds_s": round_ends[-1] - marks["start"],
        "median_round_ms": round(1e3 * sorted(gaps)[len(gaps) // 2], 3),
        "result": out.result,
        "peak_rss_gb": round(peak_rss_gb(), 3),
    }

"""``fedopt bench dadao``: events per second of the exact DADAO event simulation.

Strongly convex quadratics (``problem: quadratic``, mu=1, L=10, float64) on ``n`` nodes
of a graph, DADAO's prescribed rates (gradients at rate 1 per node, gossip at
``lambda_mix = sqrt(2 chi1 chi2)`` in total). The run goes through the engine that
``--engine`` names, exactly as ``fedopt run`` would run it (event blocks applied in
dependency levels, every message metered; on Ray, cross-actor edges swap state rows),
with evaluation only at the start and the end. Reports events, gradients and
communications per second (wall time of the event loop, after set-up) and the final
relative squared distance to the optimum.
"""

from __future__ import annotations

from typing import Any

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.run import execute


def bench_dadao(
    nodes: int,
    dim: int,
    events: int = 200_000,
    graph: str = "torus",
    threads: int | None = 1,
    engine: str = "local",
    actors: int | None = None,
    address: str | None = None,
    block: int = 4096,
) -> dict[str, Any]:
    """Run the benchmark once and return its JSON record."""
    eng: dict[str, Any] = {"kind": engine, "threads": threads or 1, "event_block": block}
    if engine == "ray":
        eng.update(actors=actors or 2, address=address)
    raw = {
        "name": "bench-dadao",
        "seed": 0,
        "topology": {"name": graph, "n": nodes},
        "algorithm": {"name": "dadao"},
        "problem": {"name": "quadratic", "dim": dim, "mu": 1.0, "L": 10.0, "dtype": "float64"},
        "stop": {"rounds": None, "events": events, "sim_time_s": 1e12},
        "eval": {"every": 10**9},
        "engine": eng,
    }
    out = execute(compile_plan(validate(raw)))
    res = out.result
    last = res.records[-1]
    wall = res.wall_time_s
    done = last["events_total"]
    return {
        "system": "fedopt",
        "workload": "dadao",
        "engine": engine,
        "actors": len(out.workers),
        "graph": graph,
        "nodes": nodes,
        "dim": dim,
        "threads": out.threads,
        "events": done,
        "events_per_s": round(done / wall, 1),
        "gradients_total": last["gradients_total"],
        "communications_total": last["communications_total"],
        "messages_total": last["messages_total"],
        "sim_time": round(res.sim_time_s, 3),
        "final_relative_error": last.get("relative_sq_distance"),
        "wall_s": round(wall, 3),
    }

"""``fedopt bench gossip-ring``: D-SGD gossip (no local steps) on a ring.

Each round every node sends its ``dim`` float32 parameters to both neighbours
(Metropolis weights 1/3), so ``2 n`` messages per round, as in
``shared/bench/limit_gossip_ring.py``. Reports messages and bytes per second.
"""

from __future__ import annotations

from typing import Any

from fedopt.bench.timing import timed_run


def bench_gossip_ring(
    nodes: int,
    dim: int,
    rounds: int = 20,
    threads: int | None = None,
    meter: bool = True,
    engine: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ring gossip once and return its JSON record."""
    raw = {
        "name": "bench-gossip-ring",
        "topology": {"name": "ring", "n": nodes, "weights": "metropolis"},
        "algorithm": {"name": "dsgd", "local_steps": 0},
        "problem": {"name": "quadratic", "dim": dim, "same_init": False},
        "stop": {"rounds": rounds},
        "eval": {"every": rounds},
        "engine": {"threads": threads, **(engine or {})},
    }
    out = timed_run(raw, meter=meter)
    msgs = 2 * nodes * rounds
    return {
        "system": "fedopt",
        "workload": "gossip-ring",
        "nodes": nodes,
        "dim": dim,
        "rounds": rounds,
        "engine": (engine or {}).get("kind", "local"),
        "actors": out["actors"],
        "threads": out["threads"],
        "metering": meter,
        "rounds_s": round(out["rounds_s"], 4),
        "messages_per_s": round(msgs / out["rounds_s"], 1),
        "bytes_per_s": round(msgs * (4 * dim) / out["rounds_s"], 1),
        "messages_total": out["result"].totals.messages,
        "final_consensus_distance": out["result"].records[-1]["consensus_distance"],
        "peak_rss_gb": out["peak_rss_gb"],
    }

"""``fedopt bench fedavg-logreg``: the workload of ``shared/bench/README.md``.

Binary logistic regression, D = 100, M = 500 samples per client from
``numpy.random.default_rng(1000 + cid)``, every client in every round, 5 local SGD
steps of batch 32 at lr 0.1, sample-weighted averaging, ``w0 = 0``. Reports client
updates per second over the rounds (set-up excluded) and the final mean BCE.
"""

from __future__ import annotations

from typing import Any

from fedopt.bench.timing import timed_run


def fedavg_logreg_config(
    clients: int,
    rounds: int,
    threads: int | None,
    chunk: int,
    data: str,
    engine: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The benchmark as an experiment dict (also usable with ``fedopt run``)."""
    return {
        "name": "bench-fedavg-logreg",
        "seed": 0,
        "topology": {"name": "star", "n": clients + 1},
        "algorithm": {"name": "fedavg", "lr": 0.1, "local_steps": 5, "weighting": "samples"},
        "problem": {
            "name": "logistic",
            "dim": 100,
            "samples_per_node": 500,
            "batch_size": 32,
            "generator": "bench",
            "data": data,
        },
        "stop": {"rounds": rounds},
        "eval": {"every": rounds},
        "engine": {"threads": threads, "chunk_size": chunk, **(engine or {})},
    }


def bench_fedavg_logreg(
    clients: int,
    rounds: int,
    threads: int | None = None,
    chunk: int = 1024,
    data: str = "auto",
    meter: bool = True,
    engine: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the benchmark once and return its JSON record."""
    raw = fedavg_logreg_config(clients, rounds, threads, chunk, data, engine)
    out = timed_run(raw, meter=meter)
    res = out["result"]
    return {
        "system": "fedopt",
        "workload": "fedavg-logreg",
        "engine": (engine or {}).get("kind", "local"),
        "actors": out["actors"],
        "clients": clients,
        "rounds": rounds,
        "threads": out["threads"],
        "chunk": chunk,
        "data": data,
        "metering": meter,
        "startup_s": out["startup_s"],
        "median_round_ms": out["median_round_ms"],
        "rounds_s": round(out["rounds_s"], 4),
        "client_updates_per_s": round(clients * rounds / out["rounds_s"], 1),
        "final_loss": round(res.records[-1]["loss"], 6),
        "messages_total": res.totals.messages,
        "bytes_total": res.totals.bytes,
        "peak_rss_gb": out["peak_rss_gb"],
    }

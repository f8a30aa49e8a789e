"""``fedopt bench ferret``: generated-and-projected basis entries per second.

Ferret's hot path is generating ``K`` truncated-normal bases of a block of ``d``
entries and projecting an update on them (client, ``V Delta``) or reconstructing from
coefficients (server, ``V^T gamma``): ``K d`` entries each, never stored whole
(:mod:`fedopt.ferret.bases`, cache-sized chunks). The record puts side by side, over
the same sizes and chunks:

* ``project`` and ``reconstruct``: :func:`~fedopt.ferret.bases.project` and
  :func:`~fedopt.ferret.bases.reconstruct` (counter-based words, inverse CDF, dot);
* ``fill_dot``: the limit, a plain ``torch`` ``fill_`` of the chunk and the same
  matrix-vector product (memory bandwidth and BLAS, no random numbers);
* ``torch_trunc_normal``: what the reference code does, ``torch.nn.init.trunc_normal_``
  from a ``torch.Generator`` into the chunk and the product (not platform independent).

Each way is timed ``repeats`` times, alternated; the record gives the median entries
per second of each and the ratios to ``fill_dot``.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import torch

from fedopt.bench.device import bench_device
from fedopt.ferret import bases


def _fill_dot(K: int, d: int, x: torch.Tensor, budget: int) -> torch.Tensor:
    out = torch.zeros(K, dtype=torch.float64, device=x.device)
    rows = max(1, min(K, budget))
    buf = torch.empty(rows, max(1, budget // rows), dtype=torch.float64, device=x.device)
    for r0 in range(0, K, rows):
        r1 = min(K, r0 + rows)
        cols = max(1, budget // (r1 - r0))
        for c0 in range(0, d, cols):
            c1 = min(d, c0 + cols)
            V = buf[: r1 - r0, : c1 - c0]
            V.fill_(0.5)
            out[r0:r1] += V @ x[c0:c1]
    return out


def _torch_trunc(K: int, d: int, x: torch.Tensor, budget: int) -> torch.Tensor:
    gen = torch.Generator(device=x.device).manual_seed(0)
    a = 1.0 / math.sqrt(d)
    out = torch.zeros(K, dtype=torch.float64, device=x.device)
    rows = max(1, min(K, budget))
    for r0 in range(0, K, rows):
        r1 = min(K, r0 + rows)
        cols = max(1, budget // (r1 - r0))
        for c0 in range(0, d, cols):
            c1 = min(d, c0 + cols)
            V = torch.empty(r1 - r0, c1 - c0, dtype=torch.float64, device=x.device)
            torch.nn.init.trunc_normal_(V, 0.0, 1.0, -a, a, generator=gen)
            out[r0:r1] += V @ x[c0:c1]
    return out


def bench_ferret(
    dim: int = 100_000,
    bases_count: int = 100,
    repeats: int = 3,
    threads: int = 1,
    device: str = "cpu",
) -> dict[str, Any]:
    """Median entries/s of projection, reconstruction and the two references."""
    torch.set_num_threads(threads)
    dev = bench_device(device)
    K, d = bases_count, dim
    keys = bases.keys(0, "bench/ferret", (), K)
    x = torch.linspace(-1, 1, d, dtype=torch.float64, device=dev)
    g = torch.linspace(-1, 1, K, dtype=torch.float64, device=dev)
    budget = bases.CHUNK_ELEMENTS
    ways = {
        "project": lambda: bases.project(keys, x),
        "reconstruct": lambda: bases.reconstruct(keys, d, g),
        "fill_dot": lambda: _fill_dot(K, d, x, budget),
        "torch_trunc_normal": lambda: _torch_trunc(K, d, x, budget),
    }
    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(repeats):
        for name, fn in ways.items():
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    rate = {k: K * d / statistics.median(v) for k, v in times.items()}
    return {
        "workload": "ferret",
        "dim": d,
        "bases": K,
        "entries": K * d,
        "chunk_elements": budget,
        "threads": threads,
        "device": str(dev),
        "entries_per_s": rate,
        "ratio_to_fill_dot": {k: rate[k] / rate["fill_dot"] for k in rate},
        "seconds_median": {k: statistics.median(v) for k, v in times.items()},
    }

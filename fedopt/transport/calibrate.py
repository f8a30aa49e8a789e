"""``network.header_bytes: measured``: the per-message overhead of the gRPC data plane.

Two in-process endpoints on loopback exchange ``count`` gossip-shaped payloads (the
exchange key, one float32 row of ``d`` entries, its float64 clock, no sizes; what one
node sends one neighbour when every worker hosts one node) for two sizes ``d``. The
kernel's socket counters give the wire bytes of each batch; a line through the two
points, ``wire / count = overhead + 4 d``, gives the overhead: every byte a message puts
on TCP beyond its row (frame header and tensor table, gRPC prefix, HTTP/2 headers and
the response, window updates). With it the logical meter, hence the link model's
``latency + bytes / bandwidth``, charges each message what gRPC really sends.

The value is measured once per process and settings (about 1 s here); the run's summary
records it (``header_bytes_measured``), so a run can be repeated with the same number,
and checkpoints keep it, so a resumed run charges what its first part charged.
"""

from __future__ import annotations

import functools
import secrets
import threading

import torch

from fedopt.errors import ConfigError
from fedopt.transport.config import GrpcConfig
from fedopt.transport.endpoint import GrpcTransport
from fedopt.transport.meters import socket_bytes

MEASURED_MAX = 1 << 16  # bound used by compile-time checks before the measurement


def measure_overhead(cfg: GrpcConfig, count: int = 200, dims: tuple[int, int] = (1, 1024)) -> int:
    """Wire bytes per message beyond the payload row, fitted on loopback (rounded)."""
    token = secrets.token_hex(16)
    got = threading.Semaphore(0)
    cfg = cfg.model_copy(update={"host": "127.0.0.1", "ports": None})
    names = ["calibration receiver", "calibration sender"]
    rx = GrpcTransport(0, cfg, "127.0.0.1", token, lambda k, s, p: got.release(), names)
    per: list[float] = []
    try:
        for d in dims:
            tx = GrpcTransport(1, cfg, "127.0.0.1", token, lambda k, s, p: None, names)
            try:
                tx.connect([rx.address, tx.address])
                row, clock = torch.zeros((1, d)), torch.zeros(1, dtype=torch.float64)
                for i in range(count):
                    tx.send(0, i, (row, clock, None))
                    tx.flush()  # one message at a time, as a sparse gossip round sends
                for _ in range(count):
                    got.acquire(timeout=cfg.deadline_s)
                wire = socket_bytes({0: rx.address})
            finally:
                tx.close()
            if wire is None or wire[0] is None:
                raise ConfigError(
                    "network.header_bytes: 'measured' reads the kernel's socket counters "
                    "with `ss -tinp` (iproute2), which is not installed or shows no socket "
                    "of this process; set a number instead (e.g. 325)"
                )
            per.append(wire[0] / count)
    finally:
        rx.close()
    (d0, d1), (w0, w1) = dims, per
    slope = (w1 - w0) / (d1 - d0)
    return max(0, round(w0 - slope * d0))


@functools.lru_cache(maxsize=8)
def measured_header_bytes(cfg: GrpcConfig) -> int:
    """:func:`measure_overhead`, once per process and ``engine.grpc`` settings."""
    return min(MEASURED_MAX, measure_overhead(cfg))

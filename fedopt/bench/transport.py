"""``fedopt bench transport``: gRPC data plane vs Ray's object store, on loopback.

Part 1, the transport alone: two Ray actors, each with a
:class:`~fedopt.engine.ray_engine.mailbox.Mailbox`; the sender pushes ``count``
payloads of one float32 tensor of ``size`` bytes through the mailbox's transport
(Ray: ``peer.deliver.remote``; gRPC: a stream of <= ``chunk_bytes`` frames), the
receiver waits for each one. The time runs from the first send to the last arrival
(one machine's wall clock). Reported: messages/s and GB/s per transport and size.

Part 2, whole runs: ``fedavg-logreg`` and ``gossip-ring`` rounds per second on 2
actors with each transport (set-up excluded, :mod:`fedopt.bench.timing`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from fedopt.engine.ray_engine.mailbox import Mailbox
from fedopt.transport.config import GrpcConfig

SIZES = {"4KB": 4_000, "40MB": 40_000_000}


class BenchPeer:
    """One end of the transport benchmark (a Ray actor)."""

    def __init__(self, rank: int, grpc: dict[str, Any]) -> None:
        torch.set_num_threads(1)
        self.rank = rank
        self.grpc = GrpcConfig(**grpc)
        self.mailbox = Mailbox(rank, [np.array([0]), np.array([1])], timeout_s=600)

    def start_grpc(self, token: str) -> str:
        return self.mailbox.start_grpc(self.grpc, "127.0.0.1", token)

    def connect_grpc(self, addresses: list[str]) -> None:
        self.mailbox.connect_grpc(addresses)

    def set_peers(self, handles: list[Any]) -> None:
        self.mailbox.set_peers(handles)

    def deliver(self, key: Any, src: int, payload: Any) -> None:
        self.mailbox.deliver(key, src, payload)

    def send(self, tag: str, size: int, count: int) -> float:
        x = torch.ones(size // 4)
        t0 = time.time()
        for i in range(count):
            self.mailbox.send(1, (tag, i), (x,))
        self.mailbox.flush()
        return t0

    def receive(self, tag: str, count: int) -> tuple[float, float]:
        total = 0.0
        for i in range(count):
            (x,) = self.mailbox.wait((tag, i), [0], "benchmark payload")[0]
            total += float(x[-1])
        return time.time(), total

    def close(self) -> None:
        self.mailbox.close()


def _pair(transport: str, grpc: dict[str, Any]) -> list[Any]:
    import ray

    cls = ray.remote(BenchPeer).options(num_cpus=0, max_concurrency=8)
    peers = [cls.remote(r, grpc) for r in range(2)]
    if transport == "grpc":
        addrs = ray.get([p.start_grpc.remote("bench-token-" + "0" * 20) for p in peers])
        ray.get([p.connect_grpc.remote(addrs) for p in peers])
    else:
        ray.get([p.set_peers.remote(peers) for p in peers])
    return peers


def bench_payloads(counts: dict[str, int], grpc: dict[str, Any]) -> list[dict[str, Any]]:
    """Messages/s and GB/s per transport and payload size."""
    import ray

    rows = []
    for transport in ("ray", "grpc"):
        peers = _pair(transport, grpc)
        try:
            for name, size in SIZES.items():
                count = counts[name]
                warm = f"warm-{name}"
                ray.get([peers[1].receive.remote(warm, 1), peers[0].send.remote(warm, size, 1)])
                recv = peers[1].receive.remote(name, count)
                t0 = ray.get(peers[0].send.remote(name, size, count))
                t1, total = ray.get(recv)
                assert total == count  # every payload arrived, intact at its last element
                dt = t1 - t0
                rows.append(
                    {
                        "transport": transport,
                        "payload": name,
                        "bytes": size,
                        "count": count,
                        "seconds": round(dt, 4),
                        "messages_per_s": round(count / dt, 1),
                        "GB_per_s": round(count * size / dt / 1e9, 4),
                    }
                )
        finally:
            ray.get([p.close.remote() for p in peers])
            for p in peers:
                ray.kill(p)
    return rows


def bench_workloads(
    clients: int, nodes: int, dim: int, rounds: int, actors: int
) -> list[dict[str, Any]]:
    """fedavg-logreg and gossip-ring on ``actors`` actors with each transport."""
    from fedopt.bench.fedavg_logreg import bench_fedavg_logreg
    from fedopt.bench.gossip_ring import bench_gossip_ring

    rows = []
    for transport in ("ray", "grpc"):
        engine = {"kind": "ray", "actors": actors, "transport": transport}
        fed = bench_fedavg_logreg(
            clients=clients, rounds=rounds, threads=1, chunk=1024, data="auto", engine=engine
        )
        gos = bench_gossip_ring(nodes=nodes, dim=dim, rounds=rounds, threads=1, engine=engine)
        for rec in (fed, gos):
            keep = ("workload", "rounds_s", "messages_per_s", "client_updates_per_s", "final_loss")
            rows.append({"transport": transport, **{k: rec[k] for k in keep if k in rec}})
    return rows


def bench_transport(
    small: int = 300,
    large: int = 4,
    clients: int = 16,
    nodes: int = 16,
    dim: int = 10_000,
    rounds: int = 5,
    actors: int = 2,
    address: str | None = None,
) -> dict[str, Any]:
    """Both parts; the JSON record of ``fedopt bench transport``."""
    from fedopt.engine.ray_engine.engine import connect

    connect(address)
    grpc = {"chunk_bytes": 1 << 20, "max_message_bytes": 4 << 20}
    payloads = bench_payloads({"4KB": small, "40MB": large}, grpc)
    by = {(r["transport"], r["payload"]): r for r in payloads}
    ratio = {
        name: round(by[("ray", name)]["GB_per_s"] / by[("grpc", name)]["GB_per_s"], 2)
        for name in SIZES
    }
    return {
        "system": "fedopt",
        "workload": "transport",
        "grpc": grpc,
        "payloads": payloads,
        "ray_over_grpc_time": ratio,  # > 1: gRPC slower by that factor
        "runs": bench_workloads(clients, nodes, dim, rounds, actors),
    }

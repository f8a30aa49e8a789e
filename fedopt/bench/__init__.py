"""Throughput benchmarks (``fedopt bench``), comparable with ``shared/bench`` harnesses."""

from __future__ import annotations

import argparse
from typing import Any


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Dispatch ``fedopt bench WORKLOAD`` and return its JSON record."""
    if args.workload == "sweep":
        from fedopt.bench.sweep import bench_sweep

        return bench_sweep(
            cells=args.cells,
            jobs=args.jobs,
            rounds=args.rounds or 1000,
            nodes=args.nodes or 32,
            dim=args.dim or 2000,
        )
    if args.workload == "transport":
        from fedopt.bench.transport import bench_transport

        return bench_transport(
            small=args.messages,
            large=max(2, args.messages // 75),
            clients=args.clients or 16,
            nodes=args.nodes or 16,
            dim=args.dim or 10_000,
            rounds=args.rounds or 5,
            actors=args.actors or 2,
            address=args.address,
        )
    if args.workload == "dimat":
        from fedopt.bench.dimat import bench_dimat

        return bench_dimat(
            nodes=args.nodes or 5,
            steps=args.rounds or 10,
            repeats=args.repeats,
            threads=args.threads or 1,
            model=args.model,
        )
    if args.workload == "fzoos":
        from fedopt.bench.fzoos import bench_fzoos

        return bench_fzoos(
            clients=args.clients or 5,
            dim=args.dim or 300,
            history=args.history,
            features=args.features,
            repeats=args.repeats,
            threads=args.threads or 1,
            device=args.device,
        )
    if args.workload == "ferret":
        from fedopt.bench.ferret import bench_ferret

        return bench_ferret(
            dim=args.dim or 100_000,
            bases_count=args.bases,
            repeats=args.repeats,
            threads=args.threads or 1,
            device=args.device,
        )
    defaults = {"rounds": 10, "nodes": 1024, "dim": 100_000, "clients": 1000}
    args = argparse.Namespace(
        **{**vars(args), **{k: v for k, v in defaults.items() if getattr(args, k) is None}}
    )
    engine: dict[str, Any] = {"kind": args.engine}
    if args.engine == "ray":
        engine.update({k: v for k, v in (("actors", args.actors), ("address", args.address)) if v})
    if args.workload == "dadao":
        from fedopt.bench.dadao import bench_dadao

        return bench_dadao(
            args.nodes,
            args.dim,
            args.events,
            args.graph,
            args.threads or 1,
            args.engine,
            args.actors,
            args.address,
        )
    if args.workload == "monna":
        from fedopt.bench.monna import bench_monna

        return bench_monna(
            rounds=args.rounds, hidden=args.hidden, attack=args.attack, threads=args.threads or 1
        )
    if args.workload == "diff2":
        from fedopt.bench.diff2 import bench_diff2

        return bench_diff2(threads=args.threads or 1, rounds=max(args.rounds, 10))
    if args.workload == "fedavg-logreg":
        from fedopt.bench.fedavg_logreg import bench_fedavg_logreg

        return bench_fedavg_logreg(
            clients=args.clients,
            rounds=args.rounds,
            threads=args.threads,
            chunk=args.chunk,
            data=args.data,
            meter=not args.no_meter,
            engine=engine,
        )
    from fedopt.bench.gossip_ring import bench_gossip_ring

    return bench_gossip_ring(
        nodes=args.nodes,
        dim=args.dim,
        rounds=args.rounds,
        threads=args.threads,
        meter=not args.no_meter,
        engine=engine,
    )

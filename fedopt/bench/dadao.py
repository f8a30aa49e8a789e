"""``fedopt bench dadao``: events per second of the exact DADAO event simulation.

Strongly convex quadratics (``problem: quadratic``, mu=1, L=10) on ``n`` nodes of a
graph, DADAO's prescribed rates (gradients at rate 1 per node, gossip at
``lambda_mix = sqrt(2 chi1 chi2)`` in total), events applied in exact dependency
levels. Reports events, gradients and communications per second and the final
relative distance to the optimum.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from fedopt.engine.local import configure_threads
from fedopt.events import PoissonEventStream
from fedopt.events.dadao import DadaoConstants, DadaoNodes
from fedopt.events.simulate import edge_arrays, run_dadao
from fedopt.problems import PROBLEMS
from fedopt.topology import TopologyConfig, build_topology, spectral_facts


def bench_dadao(
    nodes: int, dim: int, events: int = 200_000, graph: str = "torus", threads: int | None = 1
) -> dict[str, Any]:
    """Run the benchmark once and return its JSON record."""
    threads = configure_threads(threads)
    plan = build_topology(TopologyConfig(name=graph, n=nodes), seed=0)
    facts = spectral_facts(plan.graph)
    cls = PROBLEMS.get("quadratic")
    cfg = cls.Config.model_validate(
        {"name": "quadratic", "dim": dim, "mu": 1.0, "L": 10.0, "dtype": "float64"}
    )
    oracle = cls.build(
        cfg,
        seed=0,
        data_ranks=torch.arange(nodes),
        num_data_nodes=nodes,
        device=torch.device("cpu"),
    )
    consts = DadaoConstants.from_problem(1.0, 10.0, facts["dadao_chi1"], facts["dadao_lambda_mix"])
    edges = edge_arrays(plan.edges)
    stream = PoissonEventStream(nodes, edges, 1.0, facts["dadao_lambda_mix"] / len(edges), seed=0)
    state = DadaoNodes(oracle.init_params(torch.arange(nodes)), consts)
    x_star = oracle.optimum_stats().solve()
    e0 = float(((state.x - x_star) ** 2).sum(1).mean())

    def grad(rows: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        return oracle.full_grad(X, rows)

    t0 = time.perf_counter()
    out = run_dadao(state, stream, grad, lambda X: 0.0, max_events=events, level_schedule=True)
    wall = time.perf_counter() - t0
    done = out.gradients + out.communications
    rel = float(((state.x - x_star) ** 2).sum(1).mean()) / e0
    return {
        "system": "fedopt",
        "workload": "dadao",
        "graph": graph,
        "nodes": nodes,
        "dim": dim,
        "threads": threads,
        "events": done,
        "events_per_s": round(done / wall, 1),
        "gradients_total": out.gradients,
        "communications_total": out.communications,
        "sim_time": round(out.time, 3),
        "lambda_mix": round(facts["dadao_lambda_mix"], 4),
        "final_relative_error": rel,
        "wall_s": round(wall, 3),
    }

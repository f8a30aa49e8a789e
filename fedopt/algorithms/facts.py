"""Problem and graph facts that algorithms derive their constants from.

Curvature bounds ``(mu, L)`` (from the config, else from the problem's per-node
bounds), the connected graph sequence of a time-varying topology, and DADAO's graph
constants ``chi1``, ``chi2``, ``lambda_mix`` (worst case over a sequence). Used by DADAO,
asynchronous gossip, the continuized method, ADOM+ and MSDA; every function raises
:class:`~fedopt.errors.ConfigError` naming the field to set when a fact is missing.
"""

from __future__ import annotations

from typing import Any

import networkx as nx
import torch

from fedopt.errors import ConfigError
from fedopt.topology import dadao_constants
from fedopt.topology.compile import union_graph


def curvature(config: Any, problem_name: str, oracle: Any) -> tuple[float, float]:
    """``(mu, L)`` from the config, else from the problem's per-node bounds."""
    bounds = oracle.curvature_bounds()
    mu, L = getattr(config, "mu", None), getattr(config, "L", None)
    if (mu is None or L is None) and bounds is None:
        raise ConfigError(
            f"algorithm.mu / algorithm.L: problem {problem_name!r} cannot bound its "
            "curvature here; set algorithm.mu and algorithm.L"
        )
    mu = mu if mu is not None else float(bounds[0].min())
    L = L if L is not None else float(bounds[1].max())
    if mu <= 0:
        raise ConfigError(
            f"algorithm.mu: {config.name} needs a strongly convex problem, but problem "
            f"{problem_name!r} has mu = {mu:g}; add problem.l2 > 0 (or set algorithm.mu)"
        )
    if L < mu:
        raise ConfigError(f"algorithm.L: must be >= mu, got L={L:g} < mu={mu:g}")
    return mu, L


def worker_curvature(config: Any, ctx: Any) -> tuple[float, float]:
    """``(mu, L)`` on a round-schedule worker: the bounds must cover every node.

    A worker that hosts only some nodes builds the oracle of every data node once to
    take the worst case over all of them (the data are keyed by rank, so it is the data
    the other workers hold), so every worker derives the same constants; set
    ``algorithm.mu`` and ``algorithm.L`` to skip that.
    """
    oracle = ctx.oracle
    problem = getattr(getattr(oracle, "config", None), "name", "?")
    everyone = ctx.data_nodes if ctx.data_nodes is not None else None
    if (config.mu is None or config.L is None) and everyone is not None:
        if len(oracle.data_ranks) < len(everyone):
            from fedopt.problems import PROBLEMS

            oracle = PROBLEMS.get(problem).build(
                oracle.config,
                seed=ctx.seed,
                data_ranks=torch.arange(len(everyone)),
                num_data_nodes=len(everyone),
                device=torch.device("cpu"),
            )
    return curvature(config, problem, oracle)


def time_varying_graphs(plan: Any) -> list[Any] | None:
    """The connected graph sequence of a time-varying topology (None when static)."""
    topo = plan.topology
    if not topo.is_time_varying:
        return None
    graphs = getattr(topo.schedule, "graphs", None)
    if graphs is None:
        raise ConfigError(
            f"topology.name: {plan.config.algorithm.name} needs a sequence of connected "
            f"graphs, but {topo.name!r} switches between disconnected ones (matchings or "
            "one-peer graphs); use topology.name: random_geometric_sequence"
        )
    for k, g in enumerate(graphs):
        if not nx.is_connected(g):
            raise ConfigError(
                f"topology: member {k} of the time-varying sequence {topo.name!r} is "
                f"disconnected; {plan.config.algorithm.name} needs every member connected"
            )
    return list(graphs)


def graph_chi(plan: Any, graphs: list[Any] | None) -> dict[str, Any]:
    """DADAO's ``chi1``, ``chi2``, ``lambda_mix`` threshold and switching period.

    The worst case over ``graphs`` (a time-varying sequence, spec 1.2 item 5), else the
    constants of the static graph; computed by
    :func:`~fedopt.topology.spectral.dadao_constants`, as ``fedopt topology`` prints them.
    """
    if graphs is None:
        topo = plan.topology
        graphs = [topo.graph if topo.graph is not None else union_graph(topo)]
    chi = dadao_constants(graphs)
    if chi["chi1"] is None or chi["chi2"] is None:
        raise ConfigError(
            f"topology: the DADAO constants of {plan.topology.name!r} (n={plan.topology.n}) "
            "could not be computed (effective resistances need n <= 2000, and the Laplacian "
            "spectrum must converge); use a smaller graph"
        )
    return chi

"""Problem and graph facts that algorithms derive their constants from.

Curvature bounds ``(mu, L)`` (from the config, else from the problem's per-node
bounds), the connected graph sequence of a time-varying topology, and DADAO's graph
constants ``chi1``, ``chi2``, ``lambda_mix`` (worst case over a sequence). Used by DADAO,
asynchronous gossip, the continuized method, ADOM+ and MSDA; every function raises
:class:`~fedopt.errors.ConfigError` naming the field to set when a fact is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import networkx as nx

from fedopt.errors import ConfigError
from fedopt.topology import dadao_constants
from fedopt.topology.compile import union_graph


def curvature(config: Any, problem_name: str, oracle: Callable[[], Any]) -> tuple[float, float]:
    """``(mu, L)`` from the config, else the worst case of the problem's per-node bounds.

    ``oracle()`` gives the oracle of every data node; it is called only when the config
    leaves ``mu`` or ``L`` unset.
    """
    mu, L = getattr(config, "mu", None), getattr(config, "L", None)
    bounds = oracle().curvature_bounds() if mu is None or L is None else None
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


def curvature_facts(config: Any, plan: Any, oracle: Callable[[], Any]) -> dict[str, float]:
    """Compile time: ``{"mu", "L"}``, the worst case over every data node, for every worker.

    Computed once by the compiler (:meth:`Algorithm.plan_facts`), so a worker hosting a
    shard never builds the other workers' oracles to find the worst case.
    """
    mu, L = curvature(config, plan.config.problem.name, oracle)
    return {"mu": mu, "L": L}


def plan_curvature(facts: Any, name: str) -> tuple[float, float]:
    """``(mu, L)`` from the plan's compile-time facts (:func:`curvature_facts`)."""
    if "mu" not in facts or "L" not in facts:
        raise RuntimeError(
            f"{name}: the plan carries no curvature facts; compile it with compile_plan"
        )
    return facts["mu"], facts["L"]


def worker_curvature(config: Any, ctx: Any) -> tuple[float, float]:
    """``(mu, L)`` on a round-schedule worker: the plan's worst case over every node."""
    return plan_curvature(ctx.facts, config.name)


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

"""DADAO: Decoupled Accelerated Decentralized Asynchronous Optimization.

Nabli & Oyallon, ICML 2023 (arXiv 2208.00779). Each node takes a gradient step at the
arrivals of its own Poisson clock (rate 1); each edge gossips at the arrivals of its
own clock (total rate ``lambda_mix = sqrt(2 chi1 chi2)`` split evenly over edges, chi
computed on Lap/|E|); between events every node's six state vectors follow a linear
ODE that is integrated exactly. The update rules and constants are in
:mod:`fedopt.events.dadao`; the engine's event driver
(:mod:`fedopt.engine.events_driver`) runs it. An edge event sends ``y + z`` both ways:
two messages of ``dim`` floats.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any, Literal

import networkx as nx
import numpy as np
import torch
from pydantic import Field

from fedopt.algorithms.base import ALGORITHMS, AlgorithmConfig, EventAlgorithm, EventSetup
from fedopt.errors import ConfigError
from fedopt.events.dadao import DadaoConstants, DadaoNodes
from fedopt.events.stream import refuse_edge_rates
from fedopt.topology import dadao_constants
from fedopt.topology.compile import union_graph


class DADAOConfig(AlgorithmConfig):
    """Hyperparameters of DADAO (every constant follows from mu, L and the graph)."""

    name: Literal["dadao"] = "dadao"
    mu: float | None = Field(None, gt=0, description="strong convexity (default: from problem)")
    L: float | None = Field(None, gt=0, description="smoothness (default: from the problem)")
    lambda_mix: float | None = Field(
        None, gt=0, description="total gossip rate (default: sqrt(2 chi1 chi2), the threshold)"
    )


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


@ALGORITHMS.register("dadao")
class DADAO(EventAlgorithm):
    """DADAO on the event schedule (the round methods are not used)."""

    Config = DADAOConfig
    requires = frozenset({"connected"})
    roles = ("gossip", "client")
    state_tensors = 10  # float64: the 6 ODE coordinates S, x0, outputs and gradients

    @classmethod
    def check_plan(cls, config: Any, plan: Any) -> None:
        """Refuse ``rate`` edge attributes and time-varying graphs that are not sequences
        of connected graphs."""
        refuse_edge_rates(plan.topology, config.name)
        time_varying_graphs(plan)

    @classmethod
    def plan_facts(cls, config: Any, plan: Any, oracle: Any) -> dict[str, Any]:
        """Worst-case ``mu``, ``L`` over every node and the graph constants (``dadao_graph``)."""
        facts: dict[str, Any] = curvature_facts(config, plan, oracle)
        chi = graph_chi(plan, time_varying_graphs(plan))
        threshold = chi["lambda_mix"]
        lam = config.lambda_mix or threshold
        if lam < threshold:
            warnings.warn(
                f"algorithm.lambda_mix={lam:g} is below the threshold sqrt(2 chi1 chi2)="
                f"{threshold:g}; DADAO may diverge (spec 1.10)",
                stacklevel=2,
            )
        facts["dadao_graph"] = chi
        return facts

    @classmethod
    def build_events(cls, config: Any, plan: Any, oracle: Any) -> EventSetup:
        mu, L = plan_curvature(plan.facts, config.name)
        graphs = time_varying_graphs(plan)
        chi = plan.facts["dadao_graph"]
        chi1, chi2 = chi["chi1"], chi["chi2"]
        threshold = chi["lambda_mix"]
        lam = config.lambda_mix or threshold
        consts = DadaoConstants.from_problem(mu, L, chi1, lam)
        x0 = oracle.init_params(torch.arange(plan.topology.n))

        def grad(rows: torch.Tensor, X: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
            return oracle.full_grad(X.to(getattr(oracle, "dtype", X.dtype)), rows)

        facts: dict[str, Any] = {
            "mu": mu,
            "L": L,
            "chi1": chi1,
            "chi2": chi2,
            "lambda_mix": lam,
            "lambda_mix_threshold": threshold,
            **{k: float(v) for k, v in dataclasses.asdict(consts).items()},
        }
        setup = EventSetup(DadaoNodes(x0, consts), 1.0, lam, grad, facts)
        if graphs is not None:  # switch graphs every 1/chi1 time units (spec 1.2)
            setup.edge_sets = [np.array(sorted(g.edges()), dtype=np.int64) for g in graphs]
            setup.switch_every = chi["switch_every"]
            facts.update(switch_every=setup.switch_every, graphs=len(graphs))
        return setup

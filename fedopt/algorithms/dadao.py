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
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from fedopt.algorithms.base import (
    ALGORITHMS,
    AlgorithmConfig,
    EventAlgorithm,
    EventContext,
    EventSetup,
)
from fedopt.algorithms.facts import (
    curvature_facts,
    graph_chi,
    plan_curvature,
    time_varying_graphs,
)
from fedopt.events.dadao import DadaoConstants, DadaoNodes
from fedopt.events.stream import refuse_edge_rates


class DADAOConfig(AlgorithmConfig):
    """Hyperparameters of DADAO (every constant follows from mu, L and the graph)."""

    name: Literal["dadao"] = "dadao"
    mu: float | None = Field(None, gt=0, description="strong convexity (default: from problem)")
    L: float | None = Field(None, gt=0, description="smoothness (default: from the problem)")
    lambda_mix: float | None = Field(
        None, gt=0, description="total gossip rate (default: sqrt(2 chi1 chi2), the threshold)"
    )


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
    def build_events(cls, config: Any, plan: Any, ctx: EventContext) -> EventSetup:
        oracle = ctx.oracle
        mu, L = plan_curvature(plan.facts, config.name)
        graphs = time_varying_graphs(plan)
        chi = plan.facts["dadao_graph"]
        chi1, chi2 = chi["chi1"], chi["chi2"]
        threshold = chi["lambda_mix"]
        lam = config.lambda_mix or threshold
        consts = DadaoConstants.from_problem(mu, L, chi1, lam)
        x0 = ctx.initial_params()

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

"""Continuized accelerated gossip: the asynchronous dual baseline of DADAO's paper.

Even et al., "Continuized accelerations of deterministic and stochastic gradient
descents, and of gossip algorithms", NeurIPS 2021 (arXiv 2106.07644). Only edges carry
Poisson clocks (total rate ``edge_rate``, split evenly over edges); at each edge event
both endpoints compute one dual gradient ``grad f_i*`` and exchange it (two messages of
``dim`` floats, two gradient computations), and between events each node's two dual
vectors mix along a linear ODE integrated exactly. The rules and constants are in
:mod:`fedopt.events.continuized`. The method needs conjugate gradients (least squares,
quadratics) and one fixed graph.

Only the time axis depends on ``edge_rate``: the constants follow the rate-weighted
Laplacian, so for a given seed the iterates after ``k`` edge events are the same at any
rate. The default ``n / 2`` makes every node compute one gradient per time unit on
average, the time unit of DADAO (spec ``dadao.md`` 1.10, item 7); the paper's
normalisation is ``edge_rate = 1``.
"""

from __future__ import annotations

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
from fedopt.algorithms.facts import curvature_facts, plan_curvature
from fedopt.errors import ConfigError
from fedopt.events.continuized import ContinuizedConstants, ContinuizedNodes, laplacian_resistances
from fedopt.events.simulate import edge_arrays
from fedopt.events.stream import refuse_edge_rates
from fedopt.problems.capabilities import Capability

MAX_NODES = 2000
"""Largest graph whose effective resistances are computed (dense pseudo-inverse)."""


class ContinuizedConfig(AlgorithmConfig):
    """Hyperparameters of continuized accelerated gossip (constants follow mu, L, graph)."""

    name: Literal["continuized"] = "continuized"
    mu: float | None = Field(None, gt=0, description="strong convexity (default: from problem)")
    L: float | None = Field(None, gt=0, description="smoothness (default: from the problem)")
    edge_rate: float | None = Field(
        None, gt=0, description="total rate of the edge clocks (default: n/2, 1 grad/node/time)"
    )


@ALGORITHMS.register("continuized")
class Continuized(EventAlgorithm):
    """Continuized accelerated gossip on the event schedule (the round methods are not used)."""

    Config = ContinuizedConfig
    requires = frozenset({"connected", Capability.CONJUGATE_GRADIENTS})
    roles = ("gossip", "client")
    state_tensors = 6  # float64: S (2 rows per node), x0, dual gradients, event copies
    edge_oracles = True  # both endpoints of an edge event take a dual gradient

    @classmethod
    def check_plan(cls, config: Any, plan: Any) -> None:
        """Refuse ``rate`` edge attributes, time-varying graphs and huge graphs
        (``requires`` covers ``grad f_i*``)."""
        topo = plan.topology
        refuse_edge_rates(topo, config.name)
        if topo.is_time_varying:
            raise ConfigError(
                f"topology.name: continuized runs on one fixed graph (its constants come "
                f"from that graph's Laplacian), but {topo.name!r} is time-varying; use a "
                "static topology such as ring, or algorithm.name: dadao"
            )
        if topo.n > MAX_NODES:
            raise ConfigError(
                f"topology.n: continuized computes every edge's effective resistance with a "
                f"dense pseudo-inverse, limited to n <= {MAX_NODES}, got n={topo.n}; use a "
                "smaller graph"
            )

    @classmethod
    def plan_facts(cls, config: Any, plan: Any, oracle: Any) -> dict[str, Any]:
        """Worst-case ``mu``, ``L`` over every node; checks every ``grad f_i*`` exists.

        ``x_i = grad f_i*(0)`` is tried on every node here, at compile time, so that a
        conjugate that is not differentiable is refused before the run.
        """
        facts = curvature_facts(config, plan, oracle)
        o = oracle()
        rows = torch.arange(len(plan.data_nodes))
        try:
            o.conjugate_grad(torch.zeros(len(rows), o.dim, dtype=torch.float64), rows)
        except ValueError as exc:
            raise ConfigError(
                f"problem: {plan.config.problem.name!r} cannot give continuized its conjugate "
                f"gradients: {exc}"
            ) from exc
        return facts

    @classmethod
    def build_events(cls, config: Any, plan: Any, ctx: EventContext) -> EventSetup:
        oracle = ctx.oracle
        mu, L = plan_curvature(plan.facts, config.name)
        n = plan.topology.n
        edges = edge_arrays(plan.topology.edges)
        rate = config.edge_rate or n / 2
        lam2, res = laplacian_resistances(n, edges, np.full(len(edges), rate / len(edges)))
        consts = ContinuizedConstants.from_problem(mu, L, lam2, float(res.max()))

        def dual_grad(rows: torch.Tensor, Y: torch.Tensor, ids: Any = None) -> torch.Tensor:
            return oracle.conjugate_grad(Y, rows)

        nodes = ContinuizedNodes(n, oracle.dim, consts, edges, res, dual_grad)
        facts = {
            "mu": mu,
            "L": L,
            "edge_rate": rate,
            "lambda2": lam2,
            "max_edge_resistance": float(res.max()),
            "eta": consts.eta,
            "gamma": consts.gamma,
            "gamma_tilde": consts.gamma_t,
        }
        return EventSetup(
            nodes, 0.0, rate, dual_grad, facts, grads_per_edge_event=2, message="dual_grad"
        )

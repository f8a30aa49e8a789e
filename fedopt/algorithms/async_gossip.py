"""Asynchronous randomized gossip SGD: the plain baseline of DADAO's paper.

Rules in :mod:`fedopt.events.gossip`. Gradient clocks tick at rate 1 per node; gossip
clocks at ``gossip_rate`` in total (default: DADAO's ``lambda_mix`` for the same graph,
so both spend the same communication budget).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from fedopt import rng
from fedopt.algorithms.base import (
    ALGORITHMS,
    AlgorithmConfig,
    EventAlgorithm,
    EventContext,
    EventSetup,
)
from fedopt.algorithms.facts import graph_chi, time_varying_graphs
from fedopt.events.gossip import GossipNodes
from fedopt.events.stream import edge_rate_attribute


class AsyncGossipSGDConfig(AlgorithmConfig):
    """Hyperparameters of asynchronous randomized gossip SGD."""

    name: Literal["async_gossip_sgd"] = "async_gossip_sgd"
    lr: float = Field(0.05, gt=0, description="step size of a gradient event")
    gossip_rate: float | None = Field(
        None, gt=0, description="total gossip rate (default: DADAO's lambda_mix)"
    )
    stochastic: bool = Field(True, description="minibatch gradients (else full gradients)")


@ALGORITHMS.register("async_gossip_sgd")
class AsyncGossipSGD(EventAlgorithm):
    """Asynchronous randomized gossip SGD on the event schedule."""

    Config = AsyncGossipSGDConfig
    requires = frozenset({"connected"})
    roles = ("gossip", "client")

    @classmethod
    def check_plan(cls, config: Any, plan: Any) -> None:
        """Time-varying graphs must be sequences of connected graphs; ``rate`` edge
        attributes, when given, positive on every edge."""
        if time_varying_graphs(plan) is None:
            edge_rate_attribute(plan.topology, config.name)

    @classmethod
    def plan_facts(cls, config: Any, plan: Any, oracle: Any) -> dict[str, Any]:
        """DADAO's graph constants (``dadao_graph``), for the default gossip rate."""
        return {"dadao_graph": graph_chi(plan, time_varying_graphs(plan))}

    @classmethod
    def build_events(cls, config: Any, plan: Any, ctx: EventContext) -> EventSetup:
        oracle = ctx.oracle
        graphs = time_varying_graphs(plan)
        chi = plan.facts["dadao_graph"]
        rate = config.gossip_rate or chi["lambda_mix"]  # DADAO's lambda_mix
        dtype = getattr(oracle, "dtype", torch.float32)
        seed = plan.config.seed

        def grad(rows: torch.Tensor, X: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
            if not config.stochastic:
                return oracle.full_grad(X.to(dtype), rows)
            # one minibatch per event, keyed by the event's global index
            steps = rng.node_keys(seed, "event_batch", ids, 0).remainder(2**31)
            out = torch.empty_like(X)
            for k in range(len(rows)):
                out[k] = oracle.grad(X[k : k + 1].to(dtype), rows[k : k + 1], int(steps[k]))[0]
            return out

        x0 = ctx.initial_params()
        facts = {"lr": config.lr, "gossip_rate": rate, "chi1": chi["chi1"], "chi2": chi["chi2"]}
        setup = EventSetup(GossipNodes(x0, config.lr), 1.0, rate, grad, facts, message="x")
        if graphs is None:  # per-edge clocks from the graph file's `rate` attribute
            setup.edge_weights = edge_rate_attribute(plan.topology, config.name)
        if graphs is not None:  # switch as DADAO does, on the same sequence
            setup.edge_sets = [np.array(sorted(g.edges()), dtype=np.int64) for g in graphs]
            setup.switch_every = chi["switch_every"]
            facts.update(switch_every=setup.switch_every, graphs=len(graphs))
        return setup

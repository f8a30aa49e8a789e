"""LEARN: robust aggregation of gradients, a local step, then robust aggregation of models.

El-Mhamdi, Farhadkhani, Guerraoui, Guirguis, Hoang & Rouault, "Collaborative Learning
in the Jungle (Decentralized, Byzantine, Heterogeneous, Asynchronous and Nonconvex
Learning)", NeurIPS 2021 — implemented from that paper, not from the MoNNA reference
code, whose LEARN loop lets only one worker's fresh gradient through (spec ``monna.md``
2.8, pitfall 10). Each round, for every honest node ``i``::

    g_i = mean of the gradients of b_t = ceil((t + 1) / batch) minibatches   (growing batch)
    broadcast g_i;  G_i = own g_i + (n - 2f - 1) honest ones + f Byzantine ones
    theta_i^half = theta_i - lr_t * TM_f(G_i)                  (trimmed mean of gradients)
    broadcast theta_i^half;  S_i likewise
    theta_i <- TM_f(S_i)                                        (trimmed mean of models)

so every node sends two vectors per round (kinds ``gradient`` and ``model``) and its
gradient cost grows linearly with ``t`` (capped by ``max_minibatches``): the overhead
MoNNA avoids. The Byzantine nodes attack both exchanges (gradients, then models).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from fedopt.algorithms.base import ALGORITHMS, State
from fedopt.algorithms.robust_p2p import RobustP2P, RobustP2PConfig
from fedopt.fields import COUNT_MAX


class LEARNConfig(RobustP2PConfig):
    """LEARN: trimmed means on gradients and on models, growing batches."""

    name: Literal["learn"] = "learn"
    max_minibatches: int | None = Field(
        None,
        ge=1,
        le=COUNT_MAX,
        description="cap on minibatches per gradient (None: the batch grows as t+1)",
    )


@ALGORITHMS.register("learn")
class LEARN(RobustP2P):
    """Two robust exchanges per round: gradients, then models (trimmed mean)."""

    Config = LEARNConfig
    state_tensors = 12  # the robust P2P round's, plus the gathered gradients
    aggregator = "trimmed_mean"

    def minibatches(self, t: int) -> int:
        """Minibatches averaged at round ``t``: the batch grows as ``t + 1`` samples."""
        batch = max(1, int(getattr(self.ctx.oracle.config, "batch_size", 1) or 1))
        k = math.ceil((t + 1) / batch)
        cap = self.config.max_minibatches
        return min(k, cap) if cap is not None else k

    def gradients(self, X: torch.Tensor, t: int) -> torch.Tensor:
        ctx = self.ctx
        rows = ctx.data_rows[self.honest_local]
        k = self.minibatches(t)
        g = ctx.oracle.grad(X, rows, t << 20)
        for j in range(1, k):
            g = g + ctx.oracle.grad(X, rows, (t << 20) + j)
        g = g / k
        if self.config.reg > 0:
            norm = torch.linalg.vector_norm(X, dim=1, keepdim=True).clamp_min(1e-12)
            g = g + self.config.reg * X / norm
        ctx.comm.compute(self.honest_local, k, t)
        return g

    def round(self, state: State, t: int) -> None:
        lr = self.lr_at(t)
        X = state["x"][self.honest_local]
        index = self.received_index(t)
        # exchange 1: gradients
        G, BG = self.robust_exchange(self.gradients(X, t), state, t, lr, index, "gradient")
        pool = torch.cat([G, BG]) if BG is not None else G
        g_agg = self.rule.aggregate_pool(pool, index, None)
        # exchange 2: models after the local step
        half = X - lr * g_agg.to(X.dtype)
        H, B = self.robust_exchange(half, state, t, lr, index, "model")
        pool = torch.cat([H, B]) if B is not None else H
        pivot = H[self.honest_pos] if self.rule.uses_pivot else None
        new = self.rule.aggregate_pool(pool, index, pivot)
        state["x"][self.honest_local] = new.to(state["x"].dtype)

    @classmethod
    def analytic_traffic(cls, config, plan, rounds: int) -> int:  # type: ignore[no-untyped-def]
        return 2 * super().analytic_traffic(config, plan, rounds)

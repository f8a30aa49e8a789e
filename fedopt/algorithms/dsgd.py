"""Decentralized SGD (D-SGD) over any graph with a doubly stochastic mixing matrix.

Adapt-then-combine (ATC, Sayed 2014; Lopes & Sayed 2008), with ``tau`` local steps:

    x_i <- x_i - lr * g_i(x_i)            (tau times)
    x_i <- sum_j W_ij x_j                 (one gossip exchange)

Combine-then-adapt (CTA; the D-PSGD form of Lian et al., NeurIPS 2017):

    x_i <- sum_j W_ij x_j - lr * g_i(x_i)     (gradient at the pre-mixing iterate)

followed by ``tau - 1`` further local steps. ``local_steps = 0`` is pure gossip
averaging (used by the ring-gossip benchmark). Every round each node sends its model
to each neighbour ``i`` with ``W_ij != 0``: ``nnz(W) - n`` messages of ``dim``
floats plus the header.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from fedopt.algorithms.base import ALGORITHMS, Algorithm, AlgorithmConfig, Constant, State
from fedopt.fields import COUNT_MAX


class DSGDConfig(AlgorithmConfig):
    """Hyperparameters of D-SGD."""

    name: Literal["dsgd"] = "dsgd"
    lr: float = Field(0.05, gt=0, description="step size")
    local_steps: int = Field(
        1, ge=0, le=COUNT_MAX, description="local SGD steps per round (0: gossip only)"
    )
    variant: Literal["atc", "cta"] = Field("atc", description="adapt-then-combine or the reverse")
    lr_decay: float = Field(0.0, ge=0, description="lr_t = lr / (1 + lr_decay * t)")


@ALGORITHMS.register("dsgd")
class DSGD(Algorithm):
    """D-SGD on node-batched parameters (state ``x``: ``[k, dim]``)."""

    Config = DSGDConfig
    requires = frozenset({"connected", "doubly_stochastic"})
    roles = ("gossip", "client")
    state_tensors = 3  # x, its mixed copy, a gradient (CTA)

    def init_state(self) -> State:
        ctx = self.ctx
        x = ctx.oracle.init_params(ctx.data_rows)
        return {"x": x.to(device=ctx.device, dtype=ctx.dtype).contiguous()}

    def _local_steps(self, x: torch.Tensor, t: int, first: int, steps: int, lr: float) -> None:
        ctx, cfg = self.ctx, self.config
        rows = ctx.data_rows
        for a in range(0, len(rows), ctx.chunk_size):
            e = min(a + ctx.chunk_size, len(rows))
            for s in range(first, first + steps):
                ctx.oracle.sgd_step_(x[a:e], rows[a:e], t * cfg.local_steps + s, lr)
        ctx.comm.compute(torch.arange(len(rows)), steps, t)

    def round(self, state: State, t: int) -> None:
        cfg, ctx = self.config, self.ctx
        lr = cfg.lr / (1.0 + cfg.lr_decay * t)
        x = state["x"]
        if cfg.variant == "atc" or cfg.local_steps == 0:
            if cfg.local_steps:
                self._local_steps(x, t, 0, cfg.local_steps, lr)
            state["x"] = ctx.comm.mix(x, t)
            return
        g = ctx.oracle.grad(x, ctx.data_rows, t * cfg.local_steps)
        ctx.comm.compute(torch.arange(len(ctx.data_rows)), 1, t)
        x = ctx.comm.mix(x, t).sub_(g, alpha=lr)
        if cfg.local_steps > 1:
            self._local_steps(x, t, 1, cfg.local_steps - 1, lr)
        state["x"] = x

    def output(self, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ctx.hosted, state["x"]

    def derived_constants(self) -> dict[str, Constant]:
        """The step-size schedule ``lr_t``."""
        cfg = self.config
        sched = f"{cfg.lr:g} / (1 + {cfg.lr_decay:g} t)" if cfg.lr_decay else f"{cfg.lr:g}"
        return {"lr_schedule": sched}

    @classmethod
    def analytic_traffic(cls, config: AlgorithmConfig, plan: object, rounds: int) -> int:
        topo = plan.topology  # type: ignore[attr-defined]
        total = 0
        for t in range(rounds):
            W = topo.mixing_at(t).tocoo()
            total += int(((W.row != W.col) & (W.data != 0)).sum())
        return total

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

Running BatchNorm statistics (a problem with per-node buffers ``b_i [buf_dim]``; see
:mod:`fedopt.algorithms.buffers`): the local steps move each node's statistics, and the
gossip step mixes them with the parameters, ``[x_i, b_i] <- sum_j W_ij [x_j, b_j]`` (one
message of ``dim + buf_dim`` floats: fields ``model`` and ``buffers``). With
``bn_reset`` they do not travel: at the end of every round each node recomputes the
statistics of its model on its own samples (the BN reset, charged as ``forwards``).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from fedopt.algorithms.base import (
    ALGORITHMS,
    Algorithm,
    AlgorithmConfig,
    Constant,
    State,
    WorkerContext,
)
from fedopt.algorithms.buffers import (
    buffer_dim,
    charge_reset,
    initial_buffers,
    model_payload,
    pack,
)
from fedopt.errors import ConfigError
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
    bn_reset: bool = Field(
        False,
        description="recompute every node's BatchNorm running statistics on its own data "
        "at the end of every round instead of mixing them (problem.batchnorm: running)",
    )


@ALGORITHMS.register("dsgd")
class DSGD(Algorithm):
    """D-SGD on node-batched parameters (state ``x``: ``[k, dim]``)."""

    Config = DSGDConfig
    requires = frozenset({"connected", "doubly_stochastic"})
    roles = ("gossip", "client")
    moves_buffers = True
    state_tensors = 3  # x, its mixed copy, a gradient (CTA)

    def __init__(self, config: DSGDConfig, ctx: WorkerContext) -> None:
        super().__init__(config, ctx)
        self.buf_dim = buffer_dim(ctx.oracle)
        self.travel = bool(self.buf_dim) and not config.bn_reset

    @classmethod
    def check_plan(cls, config: AlgorithmConfig, plan: object) -> None:
        if config.bn_reset and not getattr(plan, "buf_dim", 0):  # type: ignore[attr-defined]
            raise ConfigError(
                "algorithm.bn_reset: true recomputes BatchNorm running statistics, but "
                f"problem {plan.config.problem.name!r} keeps none; set "  # type: ignore[attr-defined]
                "problem.batchnorm: running (with a BatchNorm model), or bn_reset: false"
            )

    def init_state(self) -> State:
        ctx = self.ctx
        x = ctx.oracle.init_params(ctx.data_rows)
        state = {"x": x.to(device=ctx.device, dtype=ctx.dtype).contiguous()}
        if self.buf_dim:
            state["buf"] = initial_buffers(ctx.oracle, len(x), ctx.dtype, ctx.device)
        return state

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
        if self.buf_dim:
            self._round_with_buffers(state, t, lr)
            return
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

    def _mix(self, x: torch.Tensor, b: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One gossip step on the packed rows ``[x_i, b_i]`` (or on ``x`` with bn_reset)."""
        if not self.travel:
            return self.ctx.comm.mix(x, t), b
        d = x.shape[1]
        payload = model_payload(d, self.buf_dim, x.dtype)
        mixed = self.ctx.comm.mix(pack(x, b), t, payload=payload)
        return mixed[:, :d].contiguous(), mixed[:, d:].contiguous()

    def _round_with_buffers(self, state: State, t: int, lr: float) -> None:
        """The round with per-node running statistics (same steps, buffers alongside)."""
        cfg, ctx = self.config, self.ctx
        oracle, rows = ctx.oracle, ctx.data_rows
        x = state["x"]
        oracle.set_buffers(rows, state["buf"])  # type: ignore[attr-defined]
        if cfg.variant == "atc" or cfg.local_steps == 0:
            if cfg.local_steps:
                self._local_steps(x, t, 0, cfg.local_steps, lr)
            x, b = self._mix(x, oracle.get_buffers(rows), t)  # type: ignore[attr-defined]
        else:
            g = oracle.grad(x, rows, t * cfg.local_steps)
            ctx.comm.compute(torch.arange(len(rows)), 1, t)
            x, b = self._mix(x, oracle.get_buffers(rows), t)  # type: ignore[attr-defined]
            x.sub_(g, alpha=lr)
            if cfg.local_steps > 1:
                oracle.set_buffers(rows, b)  # type: ignore[attr-defined]
                self._local_steps(x, t, 1, cfg.local_steps - 1, lr)
                b = oracle.get_buffers(rows)  # type: ignore[attr-defined]
        if cfg.bn_reset:  # the round's models get statistics of their own
            b, passes = oracle.reset_buffers(x, rows)  # type: ignore[attr-defined]
            charge_reset(ctx.comm, torch.arange(len(rows)), passes, t)
        state["x"], state["buf"] = x, b.to(ctx.dtype)

    def output(self, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ctx.hosted, state["x"]

    def output_buffers(self, state: State) -> torch.Tensor | None:
        """Every hosted node's running statistics ``[k, buf_dim]`` (None without)."""
        return state.get("buf")

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

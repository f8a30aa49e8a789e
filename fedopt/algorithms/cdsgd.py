"""DIMAT's gossip baselines: SGP, CDSGD and CDMSGD (one minibatch step and one exchange a round).

The three decentralized baselines of Saadati et al., "DIMAT: Decentralized Iterative
Merging-And-Training for Deep Learning Models", CVPR 2024 (spec ``dimat.md`` 3.9), as
their harness runs them: one minibatch step per round, a symmetric doubly stochastic
``W`` (``pi`` in the paper), the step size decayed once per epoch (StepLR,
:mod:`fedopt.algorithms.epochs`), ``lr_t = lr * gamma ** floor(t / steps_per_epoch)``:

* ``sgp``, Stochastic Gradient Push (Assran, Loizou, Ballas & Rabbat, ICML 2019) as the
  harness implements it, adapt-then-combine::

      x_i <- x_i - lr_t g_i(x_i);     x_i <- sum_j W_ij x_j

  With a symmetric doubly stochastic ``W`` the push-sum weights stay one, so they are
  not sent (the reference sends none either; its momentum argument is unused).

* ``cdsgd``, consensus-based distributed SGD (Jiang, Balu, Hegde & Sarkar, "Collaborative
  Deep Learning in Fixed Topology Networks", NeurIPS 2017), combine-then-adapt with the
  gradient at the node's own pre-mixing iterate::

      x_i <- sum_j W_ij x_j - lr_t g_i(x_i)

* ``cdmsgd``, CDSGD with momentum in the form of ``torch.optim.SGD(nesterov=True)``
  (the reference's "step ``g + mu b``")::

      b_i <- mu b_i + g_i(x_i);    x_i <- sum_j W_ij x_j - lr_t (g_i(x_i) + mu b_i)

  (``nesterov: false``: heavy ball, ``x_i <- sum_j W_ij x_j - lr_t b_i``). The paper's
  settings are the defaults: ``lr = 0.01``, ``mu = 0.9``, ``gamma = 0.981``.

Messages: every round each node sends its model (``dim`` parameters at the problem's
dtype, kind ``model``) to each neighbour ``i`` with ``W_ij != 0``: ``nnz(W) - n``
messages; nothing else travels. With running BatchNorm statistics (``problem.batchnorm:
running``; :mod:`fedopt.algorithms.buffers`) each node's buffer row ``b_i`` moves with its
model: the minibatch gradient updates it, and the gossip step mixes the packed row
``[x_i, b_i]`` with the same ``W`` (one message of ``dim + buf_dim`` values, fields
``model`` and ``buffers``). Work: one stochastic gradient per node and round
(``gradients_total``). Evaluation is DIMAT's: each node's own model on the whole test
set, averaged over nodes (``evaluation = "node_models"``; the average model's figures
are kept as ``avg_model_*``).
"""

from __future__ import annotations

from typing import Any, Literal

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
from fedopt.algorithms.buffers import buffer_dim, initial_buffers, model_payload, pack
from fedopt.algorithms.epochs import EpochConfig, schedule_text, step_lr, steps_per_epoch_fact
from fedopt.optim import SGD


class SGPConfig(EpochConfig):
    """Stochastic gradient push as DIMAT's harness runs it (ATC, no push-sum weights)."""

    name: Literal["sgp"] = "sgp"


class CDSGDConfig(EpochConfig):
    """Consensus-based distributed SGD (CTA)."""

    name: Literal["cdsgd"] = "cdsgd"


class CDMSGDConfig(EpochConfig):
    """CDSGD with a momentum buffer."""

    name: Literal["cdmsgd"] = "cdmsgd"
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum mu of the buffer")
    nesterov: bool = Field(
        True, description="step lr (g + mu b) as torch's nesterov SGD (false: lr b)"
    )


class EpochBaseline(Algorithm):
    """Shared parts: the model state ``x [k, dim]``, the StepLR schedule, the gradients."""

    requires = frozenset({"connected", "doubly_stochastic", "symmetric"})
    roles = ("gossip",)
    evaluation = "node_models"
    state_tensors = 4  # x, its mixed copy, a gradient, a momentum buffer

    moves_buffers = True
    sends = True  # one model exchange per round (local training sends nothing)

    def __init__(self, config: AlgorithmConfig, ctx: WorkerContext) -> None:
        super().__init__(config, ctx)
        self.steps_per_epoch = int(ctx.facts.get("steps_per_epoch", 1))
        self.buf_dim = buffer_dim(ctx.oracle)

    @classmethod
    def plan_facts(cls, config: Any, plan: Any, oracle: Any) -> dict[str, Any]:
        """``steps_per_epoch``, the same for every worker (:mod:`fedopt.algorithms.epochs`)."""
        return {"steps_per_epoch": steps_per_epoch_fact(config, plan, oracle)}

    def lr_at(self, t: int) -> float:
        """Step size of round ``t`` (StepLR)."""
        cfg = self.config
        return step_lr(cfg.lr, cfg.gamma, t, self.steps_per_epoch)  # type: ignore[attr-defined]

    def init_state(self) -> State:
        ctx = self.ctx
        x = ctx.oracle.init_params(ctx.data_rows)
        state = {"x": x.to(device=ctx.device, dtype=ctx.dtype).contiguous()}
        if self.buf_dim:
            state["buf"] = initial_buffers(ctx.oracle, len(x), ctx.dtype, ctx.device)
        return state

    def mix(self, state: State, x: torch.Tensor, t: int) -> torch.Tensor:
        """``W x`` (one gossip exchange); with buffers the packed rows ``[x, b]`` are mixed
        and ``state["buf"]`` takes the mixed statistics."""
        if not self.buf_dim:
            return self.ctx.comm.mix(x, t)
        d = x.shape[1]
        payload = model_payload(d, self.buf_dim, x.dtype)
        mixed = self.ctx.comm.mix(pack(x, state["buf"]), t, payload=payload)
        state["buf"] = mixed[:, d:].contiguous()
        return mixed[:, :d].contiguous()

    def output_buffers(self, state: State) -> torch.Tensor | None:
        """Every hosted node's running statistics ``[k, buf_dim]`` (None without)."""
        return state.get("buf")

    def gradients(self, x: torch.Tensor, t: int, state: State | None = None) -> torch.Tensor:
        """Every hosted node's minibatch gradient at its row of ``x`` (step ``t``), charged.

        With buffers (``state`` given) the nodes' running statistics are loaded into the
        oracle first and read back after (the training pass moves them)."""
        ctx = self.ctx
        rows = ctx.data_rows
        if self.buf_dim and state is not None:
            ctx.oracle.set_buffers(rows, state["buf"])  # type: ignore[attr-defined]
        out = torch.empty_like(x)
        for a in range(0, len(rows), ctx.chunk_size):
            e = min(a + ctx.chunk_size, len(rows))
            out[a:e] = ctx.oracle.grad(x[a:e], rows[a:e], t)
        if self.buf_dim and state is not None:
            state["buf"] = ctx.oracle.get_buffers(rows).to(ctx.dtype)  # type: ignore[attr-defined]
        ctx.comm.compute(torch.arange(len(rows)), 1, t)
        return out

    def output(self, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ctx.hosted, state["x"]

    def metrics(self, state: State) -> dict[str, torch.Tensor]:
        """``own_classes_test_accuracy``: each node's model on the test samples of its own
        classes (problems that know them, such as the digits and image problems)."""
        oracle = self.ctx.oracle
        if not hasattr(oracle, "node_classes"):
            return {}
        buffers = state.get("buf")
        figures = oracle.evaluate_nodes(state["x"], self.ctx.data_rows, buffers)  # type: ignore[attr-defined]
        own = figures.get("own_classes_test_accuracy")
        return {} if own is None else {"own_classes_test_accuracy": own.double().cpu()}

    def derived_constants(self) -> dict[str, Constant]:
        """The step-size schedule, the rounds per epoch and the paper's communication axis.

        ``comm_rounds_per_epoch`` is the x-axis of DIMAT's communication plot for these
        methods: exchanges per epoch times the mean degree (``steps_per_epoch * (N - 1)``
        on a complete graph, ``steps_per_epoch * 2`` on a ring; 0 without messages).
        """
        cfg = self.config
        W = self.ctx.comm.topology.mixing_at(0).tocoo()
        edges = int(((W.row != W.col) & (W.data != 0)).sum()) if self.sends else 0
        return {
            "lr_schedule": schedule_text(cfg.lr, cfg.gamma, self.steps_per_epoch),  # type: ignore[attr-defined]
            "steps_per_epoch": self.steps_per_epoch,
            "comm_rounds_per_epoch": self.steps_per_epoch * edges / W.shape[0],
        }

    @classmethod
    def analytic_traffic(cls, config: AlgorithmConfig, plan: object, rounds: int) -> int:
        """``nnz(W) - n`` model messages per round."""
        W = plan.topology.mixing_at(0).tocoo()  # type: ignore[attr-defined]
        return rounds * int(((W.row != W.col) & (W.data != 0)).sum())


@ALGORITHMS.register("sgp")
class SGP(EpochBaseline):
    """Adapt-then-combine: a local SGD step, then one gossip step."""

    Config = SGPConfig

    def round(self, state: State, t: int) -> None:
        x = state["x"]
        x.sub_(self.gradients(x, t, state).to(x.dtype), alpha=self.lr_at(t))
        state["x"] = self.mix(state, x, t)


@ALGORITHMS.register("cdsgd")
class CDSGD(EpochBaseline):
    """Combine-then-adapt: mix, then subtract the gradient taken before mixing."""

    Config = CDSGDConfig

    def round(self, state: State, t: int) -> None:
        x = state["x"]
        g = self.gradients(x, t, state)
        state["x"] = self.mix(state, x, t).sub_(g.to(x.dtype), alpha=self.lr_at(t))


@ALGORITHMS.register("cdmsgd")
class CDMSGD(EpochBaseline):
    """CDSGD with a (Nesterov) momentum buffer ``b`` per node (state ``m``)."""

    Config = CDMSGDConfig

    def __init__(self, config: CDMSGDConfig, ctx: WorkerContext) -> None:
        super().__init__(config, ctx)
        self.opt = SGD(momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0)

    def init_state(self) -> State:
        state = super().init_state()
        x = state["x"]
        state.update(self.opt.init(len(x), x.shape[1], x.dtype, x.device))
        return state

    def round(self, state: State, t: int) -> None:
        x = state["x"]
        g = self.gradients(x, t, state).to(x.dtype)
        step = self.opt.update(state, g, self.lr_at(t))
        state["x"] = self.mix(state, x, t).sub_(step)

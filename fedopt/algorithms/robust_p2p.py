"""Byzantine-robust peer-to-peer learning: momentum, a half step, robust mixing of models.

The round of MoNNA (Farhadkhani, Guerraoui, Gupta, Hoang, Pinot & Stephan, "Robust
Collaborative Learning with Linear Gradient Overhead", ICML 2023) and of the baselines
its paper compares against, which differ only in the aggregation rule and the momentum.
For every honest node ``i`` in round ``t``::

    g_i = grad l(theta_i; B_i) + reg * theta_i / ||theta_i||     (norm regulariser)
    m_i <- beta m_i + (1 - beta) g_i                             (momentum as an EMA)
    theta_i^half = theta_i - lr_t m_i                            (local half step)
    broadcast theta_i^half to every other node
    S_i = own half step + (n - 2f - 1) other honest ones + the f Byzantine vectors
    theta_i <- Agg_f(S_i; pivot = theta_i^half)

``S_i`` follows the paper's worst case: each honest node waits for ``n - f`` vectors and
the ``f`` it misses are honest (chosen at random per receiver and round, keyed by
``(seed, "receive", node, t)``). Byzantine nodes are omniscient: their vector is the
attack (:mod:`fedopt.robust.attacks`) of the honest half steps of the round; attacks
with a line search simulate every honest node's aggregation over all honest vectors.
``lr_t = lr / (1 + floor(t / lr_decay_every))`` (the paper's MNIST schedule with 50).

Messages per round: every honest node sends its half step to the ``n - 1`` others
(kind ``model``; the ones a receiver does not use are ``model:late``) and every
Byzantine node sends one vector to each honest node (kind ``byzantine``). The topology
must be complete.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar

import torch
from pydantic import Field

from fedopt import rng
from fedopt.algorithms.base import Algorithm, AlgorithmConfig, Constant, State, WorkerContext
from fedopt.errors import ConfigError
from fedopt.fields import COUNT_MAX
from fedopt.optim import SGD
from fedopt.robust import make_aggregator, make_attack, make_drift
from fedopt.robust.aggregators import Aggregator, rule_constants


class RobustP2PConfig(AlgorithmConfig):
    """Hyperparameters shared by the robust peer-to-peer algorithms."""

    lr: float = Field(0.05, gt=0, description="step size gamma_0")
    lr_decay_every: int | None = Field(
        None, ge=1, le=COUNT_MAX, description="lr_t = lr / (1 + floor(t / every)); None: constant"
    )
    momentum: float = Field(0.0, ge=0, lt=1, description="beta of m <- beta m + (1-beta) g")
    reg: float = Field(0.0, ge=0, description="norm regulariser reg * ||theta|| (not squared)")
    f: int | None = Field(
        None,
        ge=0,
        le=COUNT_MAX,
        description="faults tolerated (default: the number of Byzantine nodes)",
    )


class MomentumP2PConfig(RobustP2PConfig):
    """The robust P2P hyperparameters with the MoNNA paper's momentum, 0.99."""

    momentum: float = Field(0.99, ge=0, lt=1, description="beta of the momentum EMA")


class RobustP2P(Algorithm):
    """The shared round; subclasses set the aggregation rule (``aggregator``)."""

    Config: ClassVar[type[AlgorithmConfig]] = RobustP2PConfig
    requires = frozenset({"connected"})
    roles = ("gossip", "client")
    supports_byzantine = True
    aggregator: ClassVar[str] = "mean"
    # x, m, the honest rows' copies, gradient, half step, the all-gathered half steps, the
    # Byzantine vectors, their pool, the pivots and the new models ...
    state_tensors = 10

    @classmethod
    def node_tensors(cls, config: Any, n: int) -> int:
        """... plus the ``n - f`` vectors each node aggregates (``[k, n - f, dim]``)."""
        return cls.state_tensors + n

    @classmethod
    def aggregator_params(cls, config: Any) -> dict[str, Any]:
        """Hyperparameters of the rule besides ``f`` (from the config)."""
        return {}

    @classmethod
    def check_plan(cls, config: Any, plan: Any) -> None:
        if plan.config.faults.any:
            raise ConfigError(
                f"faults: {config.name} models missing and slow peers itself (each node uses "
                "the first n - f vectors, the f missing ones honest); remove the faults "
                "section, or run the fault schedule on dsgd or fedavg"
            )
        n = plan.topology.n
        degree = plan.topology.edges.shape[0]
        if degree != n * (n - 1):
            raise ConfigError(
                f"topology.name: {config.name} broadcasts to every node, so it needs a "
                f"complete graph, got {plan.topology.name!r} with {degree} of the "
                f"{n * (n - 1)} directed edges; use topology.name: complete"
            )
        byz = plan.config.byzantine
        f_actual = len(byz.ids(n)) if byz is not None else 0
        f = config.f if config.f is not None else f_actual
        if f < f_actual:
            raise ConfigError(
                f"algorithm.f: {f} is below the {f_actual} Byzantine nodes; declare at least "
                f"f={f_actual} (or leave it unset)"
            )
        received = n - f
        honest_picks = received - 1 - f_actual
        if honest_picks < 0 or 2 * f >= n:
            k = min((n - 1) // 2, n - 1 - f_actual)
            raise ConfigError(
                f"algorithm.f: f={f} with n={n}: every node waits for n - f = {received} "
                f"vectors, its own and n - 2f - 1 other honest ones among them, which needs "
                f"f < n/2; set algorithm.f <= {k} (or leave it unset)"
            )
        rule = make_aggregator(cls.aggregator, f=f, **cls.aggregator_params(config))
        if received >= rule.min_inputs(f):
            return
        field = "byzantine.count" if config.f is None else "algorithm.f"
        robust = max(g for g in range(n) if n - g >= rule.min_inputs(g))
        if received >= rule.min_defined(f):
            warnings.warn(
                f"{field}: f={f} of n={n} nodes is at or above n/3: each node aggregates "
                f"n - f = {received} vectors, up to f of them Byzantine, so {rule.name}'s "
                f"robustness bound m > 2f does not hold and the paper's guarantee (shown for "
                f"small f/n) does not cover this run. It runs as the reference code does, "
                f"averaging the n - 2f = {n - 2 * f} nearest vectors; for the guarantee set "
                f"{field} <= {robust}",
                stacklevel=2,
            )
            return
        fix = f"set {field} <= {robust}"
        if config.f is not None and f_actual > robust:
            fix += f" and byzantine.count <= {robust}"
        raise ConfigError(
            f"{field}: f={f} of n={n} nodes: each node aggregates n - f = {received} "
            f"vectors, but {rule.name} needs at least {rule.min_inputs(f)} "
            f"({rule._bound_text()}), so f <= {robust} here; {fix}, or add nodes"
        )

    def __init__(self, config: Any, ctx: WorkerContext) -> None:
        super().__init__(config, ctx)
        n = ctx.num_nodes
        self.honest = ctx.data_nodes if ctx.data_nodes is not None else torch.arange(n)
        is_honest = torch.zeros(n, dtype=torch.bool)
        is_honest[self.honest] = True
        self.byzantine = torch.nonzero(~is_honest).squeeze(1)
        f_actual = len(self.byzantine)
        self.f = config.f if config.f is not None else f_actual
        self.received = n - self.f
        self.picks = self.received - 1 - f_actual  # other honest vectors each node uses
        self.honest_local = torch.nonzero(ctx.data_rows >= 0).squeeze(1)
        self.byz_local = torch.nonzero(ctx.data_rows < 0).squeeze(1)
        mine = ctx.hosted[self.honest_local]
        self.honest_pos = torch.searchsorted(self.honest, mine)  # rows of the pool
        self.rule: Aggregator = make_aggregator(
            self.aggregator, f=self.f, **self.aggregator_params(config)
        )
        beta = config.momentum
        self.optimizer = SGD(momentum=beta, dampening=beta)  # the EMA m <- b m + (1 - b) g
        self.attack = None
        if ctx.byzantine is not None and f_actual:
            spec = ctx.byzantine.attack
            self.attack = make_attack(spec.name, **spec.params())

    def derived_constants(self) -> dict[str, Constant]:
        """f, what each node aggregates, the rule's parameters and the lr schedule."""
        cfg = self.config
        every = cfg.lr_decay_every
        sched = f"{cfg.lr:g} / (1 + floor(t / {every}))" if every else f"{cfg.lr:g}"
        return {
            "f": self.f,
            "byzantine": len(self.byzantine),
            "honest": len(self.honest),
            "received": self.received,
            "honest_picks": self.picks,
            **rule_constants(self.rule),
            "lr_schedule": sched,
            "momentum": cfg.momentum,
        }

    # -- state ----------------------------------------------------------------------
    def init_state(self) -> State:
        """Every honest node starts from data rank 0's initial draw; momentum at 0.

        The momentum buffer ``m`` (``[k, dim]``, kept across rounds) exists only when
        ``momentum > 0``.
        """
        ctx = self.ctx
        k = len(ctx.hosted)
        init = ctx.initial_params(0) if ctx.initial_params is not None else None
        dim = ctx.oracle.dim
        x = torch.zeros((k, dim), dtype=ctx.dtype, device=ctx.device)
        if init is not None:
            x[self.honest_local] = init.to(device=ctx.device, dtype=ctx.dtype)
        return {"x": x, **self.optimizer.init(k, dim, ctx.dtype, ctx.device)}

    def output(self, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ctx.hosted[self.honest_local], state["x"][self.honest_local]

    # -- one round ------------------------------------------------------------------
    def lr_at(self, t: int) -> float:
        every = self.config.lr_decay_every
        return self.config.lr / (1.0 + (t // every if every else 0))

    def gradients(self, X: torch.Tensor, t: int) -> torch.Tensor:
        """Minibatch gradients of the hosted honest nodes plus the norm regulariser."""
        ctx = self.ctx
        g = ctx.oracle.grad(X, ctx.data_rows[self.honest_local], t)
        if self.config.reg > 0:
            norm = torch.linalg.vector_norm(X, dim=1, keepdim=True).clamp_min(1e-12)
            g = g + self.config.reg * X / norm
        ctx.comm.compute(self.honest_local, 1, t)
        return g

    def half_step(self, state: State, t: int, lr: float) -> torch.Tensor:
        """Momentum update and local half step of the hosted honest nodes."""
        hl = self.honest_local
        X = state["x"][hl]
        g = self.gradients(X, t)
        return X - self.optimizer.update(state, g, lr, rows=hl)

    def round(self, state: State, t: int) -> None:
        lr = self.lr_at(t)
        half = self.half_step(state, t, lr)
        index = self.received_index(t)
        H, B = self.robust_exchange(half, state, t, lr, index, "model")
        pool = torch.cat([H, B]) if B is not None else H
        pivot = H[self.honest_pos]
        new = self.rule.aggregate_pool(pool, index, pivot if self.rule.uses_pivot else None)
        state["x"][self.honest_local] = new.to(state["x"].dtype)

    def robust_exchange(
        self, rows: torch.Tensor, state: State, t: int, lr: float, index: torch.Tensor, kind: str
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One robust exchange of the hosted honest ``rows``: ``(all honest rows, Byzantine rows)``.

        Every honest node sends its row to the ``n - 1`` others: the all-gather meters
        them (``kind`` for the vectors a receiver uses, ``kind:late`` for the others,
        ``kind`` to the Byzantine nodes, which read them all), then every Byzantine node
        sends its forged vector to each honest node (kind ``byzantine``) once the last
        honest row is out. What a label-flipping adversary needs is gathered first,
        unmetered (its exchange precedes this one, so every link-loss draw keeps its key).
        """
        ctx = self.ctx
        flipped = self.adversary_view(state, t)
        mine = ctx.hosted[self.honest_local]
        H, clocks = ctx.comm.all_gather(
            rows,
            mine,
            self.honest,
            kind=kind,
            uses=self.uses(index),
            listeners=self.byzantine,
        )
        f = len(self.byzantine)
        if f and len(mine):
            src, dst = self.byzantine.repeat(len(mine)), mine.repeat_interleave(f)
            ctx.comm.forged(src, dst, "byzantine", H, sent_at=float(clocks.max()))
        return H, self.byzantine_vectors(H, t, lr, flipped)

    # -- the adversary ----------------------------------------------------------------
    def adversary_view(self, state: State, t: int) -> torch.Tensor | None:
        """What the attack reads beyond the honest vectors: every honest node's gradient
        with flipped labels (all workers; None when the attack needs none)."""
        if self.attack is None or not self.attack.needs_flipped:
            return None
        return self.flipped_gradients(state, t)

    def byzantine_vectors(
        self, H: torch.Tensor, t: int, lr: float, flipped: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """What the Byzantine nodes send this round (the same on every worker)."""
        if self.attack is None:
            return None
        drift = None
        if self.attack.needs_drift:
            drift = make_drift(self.rule, H, len(self.byzantine))
        return self.attack(
            H,
            self.byzantine,
            seed=self.ctx.seed,
            round=t,
            drift=drift,
            flipped_grads=flipped,
            lr=lr,
        ).to(H.dtype)

    def flipped_gradients(self, state: State, t: int) -> torch.Tensor:
        """Every honest node's gradient on its minibatch with flipped labels (all workers)."""
        ctx = self.ctx
        X = state["x"][self.honest_local]
        g = ctx.oracle.flipped_grad(X, ctx.data_rows[self.honest_local], t)
        everyone, _ = ctx.comm.all_gather(g, ctx.hosted[self.honest_local], self.honest)
        return everyone

    # -- who receives what --------------------------------------------------------------
    def received_index(self, t: int) -> torch.Tensor:
        """``[r, n - f]`` pool rows each hosted honest node aggregates.

        Its own half step, ``picks`` other honest ones drawn without replacement (keyed
        by ``(seed, "receive", node, t)``), then the Byzantine vectors.
        """
        h = len(self.honest)
        pos = self.honest_pos
        r = len(pos)
        cols = [pos.unsqueeze(1)]
        if self.picks > 0:
            keys = rng.node_keys(self.ctx.seed, "receive", self.honest[pos], t)
            u = rng.uniform(keys, h, torch.float64)
            u[torch.arange(r), pos] = math.inf  # never pick itself
            cols.append(torch.argsort(u, dim=1, stable=True)[:, : self.picks])
        if len(self.byzantine):
            byz = torch.arange(h, h + len(self.byzantine))
            cols.append(byz.unsqueeze(0).expand(r, -1))
        return torch.cat(cols, dim=1).to(self.ctx.device)

    def uses(self, index: torch.Tensor) -> torch.Tensor:
        """``[r, h]`` bool: the honest vectors each hosted honest node aggregates besides
        its own (the ``picks`` columns of ``index``); the rest reach it late."""
        h, r = len(self.honest), len(self.honest_pos)
        used = torch.zeros((r, h), dtype=torch.bool)
        if r:
            used.scatter_(1, index[:, 1 : 1 + self.picks].cpu(), True)
        return used

    @classmethod
    def analytic_traffic(cls, config: Any, plan: Any, rounds: int) -> int:
        n = plan.topology.n
        byz = plan.config.byzantine
        f = len(byz.ids(n)) if byz is not None else 0
        h = n - f
        return rounds * (h * (n - 1) + f * h)

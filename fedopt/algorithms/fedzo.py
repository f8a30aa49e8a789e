"""FedZO and FedProx-ZO: federated zeroth-order optimisation over a star.

Every client can only query its ``f_i`` (capability ``noisy_queries``; the problem may
be a black box without gradients). Round ``r`` (spec ``fzoos.md`` §2.7, the FZooS
paper's App. 11 baselines, full participation):

1. the server sends ``x_{r-1}`` to every client (``d`` floats each);
2. client ``i`` starts from ``x <- x_{r-1}`` with a fresh optimiser (Adam, lr 0.01) and
   takes ``T = local_steps`` steps ``x <- x - opt(g_i(x))`` along

   * FedZO (Fang et al., IEEE TSP 2022): ``g_i(x) = Delta_i(x)``;
   * FedProx-ZO (Li et al., MLSys 2020, with FD gradients):
     ``g_i(x) = Delta_i(x) + mu (x - x_{r-1})``;

   where ``Delta_i`` is the forward-difference estimate along ``Q`` fresh keyed
   orthonormal directions with step ``lambda``
   (:func:`~fedopt.algorithms.zo_common.fd_gradient`; ``Q + 1`` queries);
3. it sends ``x_{i,r,T}`` back (``d`` floats); the server takes
   ``x_r = x_{r-1} + server_lr (sum_i p_i x_{i,r,T} / sum_i p_i - x_{r-1})`` (with
   ``server_lr = 1`` the ``p_i``-weighted average).

No projection: the problem clips inside ``f`` (pitfall P7). Every query is counted
(``queries`` kind, ``queries_total`` in the records): FedZO and FedProx-ZO spend
``T (Q + 1)`` per client per round, so ``N R T (Q + 1)`` over ``R`` rounds. Query
``s`` of round ``r`` of a node has the noise step ``r B + s`` with
``B = (T + 1)(Q + 1) + 2`` (slot 0 is SCAFFOLD-I's control estimate, the last two the
safeguard's), so every query of a node has its own noise.

``safeguard: federated`` emulates the FZooS code's acceptance test (pitfall P1: the code
reads the true global ``F``, which no node has) as :meth:`ZeroOrderStar.safeguard`
does: ``x_r`` down, ``f_i(x_{r-1})`` and ``f_i(x_r)`` queried (2 more queries per client
per round) and sent up (2 scalars), ``x_{r-1}`` kept unless ``F`` decreased.

The SCAFFOLD variants (:mod:`fedopt.algorithms.scaffold_zo`) reuse this loop through
:meth:`ZeroOrderStar.control` and :meth:`ZeroOrderStar.send`.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from fedopt.algorithms.base import (
    ALGORITHMS,
    Algorithm,
    AlgorithmConfig,
    Constant,
    State,
    WorkerContext,
)
from fedopt.algorithms.server_model import ServerModel
from fedopt.algorithms.zo_common import fd_gradient, fd_queries, orthonormal_directions
from fedopt.algorithms.zo_trace import DirectionTrace, check_traceable
from fedopt.engine.payload import Payload
from fedopt.errors import ConfigError
from fedopt.fields import COUNT_MAX
from fedopt.optim import SGD, Adam, Optimizer
from fedopt.problems.capabilities import Capability

DIRECTIONS = "zo/directions"
"""Purpose of the keyed FD directions: ``(seed, "zo/directions", node id, query step)``."""


class ZeroOrderConfig(AlgorithmConfig):
    """Hyperparameters shared by the FD baselines (FZooS paper App. 11/12 defaults)."""

    lr: float = Field(0.01, gt=0, description="client learning rate (Adam's by default)")
    local_steps: int = Field(10, ge=1, le=COUNT_MAX, description="T: local steps per round")
    directions: int = Field(
        20, ge=1, le=COUNT_MAX, description="Q: orthonormal FD directions per estimate (<= dim)"
    )
    fd_step: float = Field(0.01, gt=0, description="lambda: finite-difference step")
    noise_std: float = Field(0.0, ge=0, description="sigma: query noise y = f_i(x) + sigma N(0, 1)")
    optimizer: Literal["adam", "sgd"] = Field(
        "adam", description="client optimiser, fresh every round (adam: betas 0.9, 0.999)"
    )
    server_lr: float = Field(1.0, gt=0, description="eta_g: server step on the average")
    safeguard: Literal["off", "federated", "oracle"] = Field(
        "off",
        description="keep x_{r-1} when F did not decrease: federated (2 metered queries and "
        "2 scalars per client per round) or off; oracle (the reference's true F) is refused",
    )

    trace_cosine: bool = Field(
        False,
        description="diagnostic: record each local direction's cosine with the true "
        "grad F (and the correction's with grad F - grad f_i); needs a problem with "
        "closed-form gradients (zo_quadratic), spends no query",
    )

    @model_validator(mode="after")
    def _no_oracle(self) -> ZeroOrderConfig:
        if self.safeguard == "oracle":
            raise ValueError(
                "algorithm.safeguard: 'oracle' reads the true global F, which no federated "
                "node can evaluate, and its queries would go unmetered; use 'federated' "
                "(each client queries f_i at both points and sends 2 scalars, metered) or 'off'"
            )
        return self


class FedZOConfig(ZeroOrderConfig):
    """Hyperparameters of FedZO."""

    name: Literal["fedzo"] = "fedzo"


class FedProxZOConfig(ZeroOrderConfig):
    """Hyperparameters of FedProx-ZO."""

    name: Literal["fedprox_zo"] = "fedprox_zo"
    mu: float = Field(1.0, ge=0, description="proximal weight mu of mu (x - x_{r-1})")


class ZeroOrderStar(ServerModel, Algorithm):
    """The shared loop: broadcast, ``T`` local FD steps, weighted average at the server.

    Subclasses add a round-constant correction (:meth:`control`), a term that depends
    on the local iterate (:meth:`local_term`) and what clients send (:meth:`send`).
    State: ``w`` (``[1, d]``, the server's model, on the server's worker only).
    """

    Config = FedZOConfig
    requires = frozenset({"star", Capability.NOISY_QUERIES})
    roles = ("server", "client")
    zeroth_order = True
    control_queries = False  # SCAFFOLD-I: one extra FD estimate per client per round

    def __init__(self, config: ZeroOrderConfig, ctx: WorkerContext) -> None:
        super().__init__(config, ctx)
        if ctx.server_id is None or ctx.clients is None:
            raise ValueError(f"{config.name} needs a topology with a server and clients")
        servers = [int(ctx.hosted[i]) for i in ctx.hosted_with_role("server")]
        self.server = servers[0] if servers else None  # hosted here?
        self.server_id = ctx.server_id
        self.client_ids = ctx.clients
        self.mine = ctx.hosted_with_role("client")
        self.rows = ctx.data_rows[self.mine]
        self.ids = ctx.hosted[self.mine]
        self.opt: Optimizer = Adam() if config.optimizer == "adam" else SGD()
        self.per_estimate = fd_queries(config.directions)
        self.trace = (
            DirectionTrace(ctx.oracle, self.rows, config.local_steps)
            if config.trace_cosine
            else None
        )

    # -- checks and constants ---------------------------------------------------------
    @classmethod
    def check_plan(cls, config: AlgorithmConfig, plan: object) -> None:
        """``Q <= dim`` (``Q`` orthonormal directions in ``R^d``); ``trace_cosine`` needs
        closed-form gradients."""
        from fedopt.problems import PROBLEMS

        check_traceable(config, plan)

        pcfg = plan.config.problem  # type: ignore[attr-defined]
        dim = PROBLEMS.get(pcfg.name).param_dim(pcfg)
        q = config.directions  # type: ignore[attr-defined]
        if dim is not None and q > dim:
            raise ConfigError(
                f"algorithm.directions: Q={q} orthonormal directions do not fit in R^d for "
                f"problem dim d={dim}; set algorithm.directions <= {dim}"
            )

    @classmethod
    def queries_per_round(cls, config: ZeroOrderConfig, t: int) -> int:
        """Queries one client spends in round ``t`` (0-based)."""
        extra = 1 if cls.control_queries and t >= 1 else 0
        safe = 2 if config.safeguard == "federated" else 0
        return (config.local_steps + extra) * fd_queries(config.directions) + safe

    def derived_constants(self) -> dict[str, Constant]:
        """Clients, queries per FD estimate and per client-round (from round 2 on)."""
        return {
            "clients": len(self.client_ids),
            "queries_per_estimate": self.per_estimate,
            "queries_per_client_round": self.queries_per_round(self.config, 1),
        }

    @classmethod
    def node_tensors(cls, config: AlgorithmConfig, n: int) -> int:
        """Model, optimiser state, estimate, corrections, plus ``2Q + 1`` FD rows
        (directions and displaced points; the default ``Q = 20`` without a config)."""
        q = getattr(config, "directions", ZeroOrderConfig.model_fields["directions"].default)
        return 8 + 2 * q + 1

    @classmethod
    def analytic_traffic(cls, config: AlgorithmConfig, plan: object, rounds: int) -> int:
        clients = len(plan.topology.role_nodes("client"))  # type: ignore[attr-defined]
        return 2 * clients * rounds + cls.safeguard_traffic(config, plan, rounds)

    @staticmethod
    def safeguard_traffic(config: AlgorithmConfig, plan: object, rounds: int) -> int:
        """Messages of the federated safeguard: ``x_r`` down and 2 scalars up per client."""
        if config.safeguard != "federated":  # type: ignore[attr-defined]
            return 0
        return 2 * len(plan.topology.role_nodes("client")) * rounds  # type: ignore[attr-defined]

    # -- state ------------------------------------------------------------------------
    def metrics(self, state: State) -> dict[str, torch.Tensor]:
        """With ``trace_cosine``: the last round's direction cosines (:mod:`zo_trace`)."""
        if self.trace is None:
            return {}
        return self.trace.metrics(len(self.ctx.hosted), self.mine)

    # -- the round ----------------------------------------------------------------------
    def query_step(self, t: int, slot: int) -> int:
        """Noise step of the first query of FD ``slot`` of round ``t`` (slot 0: control;
        slot ``T + 1``: the safeguard's two queries)."""
        cfg = self.config
        per_round = (cfg.local_steps + 1) * self.per_estimate + 2
        return t * per_round + slot * self.per_estimate

    def estimate(self, X: torch.Tensor, t: int, slot: int) -> torch.Tensor:
        """``Delta_i(X_i)`` for the hosted clients (``Q + 1`` counted queries each)."""
        cfg, ctx = self.config, self.ctx
        step = self.query_step(t, slot)
        k, d = X.shape
        out = torch.empty((k, d), dtype=torch.float64, device=X.device)
        for a in range(0, k, ctx.chunk_size):
            e = min(a + ctx.chunk_size, k)
            U = orthonormal_directions(ctx.seed, DIRECTIONS, self.ids[a:e], step, d, cfg.directions)
            out[a:e] = fd_gradient(
                ctx.oracle, X[a:e], self.rows[a:e], step, U, cfg.fd_step, cfg.noise_std
            )
        ctx.comm.compute(self.mine, self.per_estimate, t, kind="queries")
        return out.to(X.dtype)

    def receive(self, state: State, t: int) -> torch.Tensor:
        """The server's model at the clients: ``x_{r-1}`` (``[d]``)."""
        ctx = self.ctx
        w = ctx.comm.broadcast(state.get("w"), self.server_id, self.ids, "model")
        return w.reshape(-1)

    def control(self, state: State, t: int, w: torch.Tensor) -> torch.Tensor | None:
        """A correction added to every local direction of round ``t`` (None: none)."""
        return None

    def local_term(self, X: torch.Tensor, w: torch.Tensor) -> torch.Tensor | None:
        """A term of the direction that depends on the local iterate (None: none)."""
        return None

    def send(
        self, state: State, t: int, X: torch.Tensor, mean_estimate: torch.Tensor
    ) -> torch.Tensor | None:
        """Send the local models; the server's ``sum_i p_i x_i / sum_i p_i`` (None elsewhere).

        ``mean_estimate`` is each client's ``(1/T) sum_s Delta_i`` of this round (what
        SCAFFOLD-II sends along).
        """
        ctx = self.ctx
        weights = ctx.oracle.weights[self.rows].to(X.dtype)
        payload = Payload.fields({"model": (X.shape[1], X.dtype)})
        sums = ctx.comm.gather_sum(
            X, weights, self.ids, self.client_ids, self.server_id, "update", payload
        )
        if self.server is None or sums is None:
            return None
        weighted, total = sums
        return weighted / total if float(total) > 0 else None

    def round(self, state: State, t: int) -> None:
        cfg = self.config
        w = self.receive(state, t)
        corr = self.control(state, t, w)
        k, d = len(self.mine), w.numel()
        X = w.expand(k, d).clone()
        opt_state = self.opt.init(k, d, X.dtype, X.device)  # fresh every round
        mean_estimate = torch.zeros_like(X)
        if self.trace is not None:
            self.trace.start_round()
        for s in range(cfg.local_steps):
            g = self.estimate(X, t, slot=s + 1)
            mean_estimate.add_(g, alpha=1.0 / cfg.local_steps)
            extra = self.local_term(X, w)
            if extra is not None:
                g = g + extra
            if corr is not None:
                g = g + corr
            if self.trace is not None:
                self.trace.step(s, X, g, corr)
            X.sub_(self.opt.update(opt_state, g, cfg.lr))
        average = self.send(state, t, X, mean_estimate)
        new = None
        if self.server is not None:
            old = state["w"][0]
            new = old if average is None else old + cfg.server_lr * (average - old)
        if cfg.safeguard == "federated":
            new = self.safeguard(t, w, new)
        if new is not None:
            state["w"][0].copy_(new)

    def safeguard(self, t: int, w: torch.Tensor, new: torch.Tensor | None) -> torch.Tensor | None:
        """The federated acceptance test (FZooS code, pitfall P1), metered.

        The server sends its candidate ``x_r`` (kind ``x_global``, ``d`` floats); each
        client queries ``f_i(x_{r-1})`` and ``f_i(x_r)`` (2 counted queries) and sends
        both (kind ``safeguard``, 2 floats); the server keeps ``x_r`` only when
        ``sum_i p_i f_i(x_r) < sum_i p_i f_i(x_{r-1})``. Returns the server's model (None
        on other workers); the next round's broadcast tells the clients.
        """
        cfg, ctx = self.config, self.ctx
        d = w.numel()
        cand = ctx.comm.broadcast(new, self.server_id, self.ids, "x_global").reshape(-1)
        k = len(self.mine)
        points = torch.stack([w, cand]).repeat(k, 1)  # [2k, d]: old, new per client
        step = self.query_step(t, cfg.local_steps + 1)
        steps = step + torch.arange(2, dtype=torch.int64).repeat(k)
        values = ctx.oracle.query(  # type: ignore[attr-defined]
            points.reshape(2 * k, d), self.rows.repeat_interleave(2), steps, cfg.noise_std
        ).reshape(k, 2)
        ctx.comm.compute(self.mine, 2, t, kind="queries")
        weights = ctx.oracle.weights[self.rows].to(torch.float64)
        payload = Payload.fields({"values": (2, ctx.dtype)})
        sums = ctx.comm.gather_sum(
            values.to(ctx.dtype), weights.to(ctx.dtype), self.ids, self.client_ids,
            self.server_id, "safeguard", payload,
        )  # fmt: skip
        if self.server is None or sums is None or new is None:
            return None
        f_old, f_new = (sums[0] / sums[1]).unbind() if float(sums[1]) > 0 else (0.0, 0.0)
        return cand if bool(f_new < f_old) else w.to(new.dtype)


@ALGORITHMS.register("fedzo")
class FedZO(ZeroOrderStar):
    """FedZO: local Adam steps along forward-difference gradients, then averaging."""

    Config = FedZOConfig


@ALGORITHMS.register("fedprox_zo")
class FedProxZO(ZeroOrderStar):
    """FedProx with FD gradients: ``Delta_i(x) + mu (x - x_{r-1})``."""

    Config = FedProxZOConfig

    def local_term(self, X: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.config.mu * (X - w)  # type: ignore[attr-defined]

"""FZooS: federated zeroth-order optimisation with trajectory-informed surrogate gradients.

Shu, Lin, Dai & Low, "Federated Zeroth-Order Optimization using Trajectory-Informed
Surrogate Gradients" (Algorithm 1, with the reference code's choices of spec fzoos.md
section 2.4). Clients can only query ``y = f_i(x) + N(0, noise_std^2)``; every query
is kept in the client's history and reused as GP training data (:mod:`fedopt.zo`).
Round ``r`` (``x_{r-1}`` known to everyone, ``p_i`` the clients' weights)::

    phase A, client i:  x <- x_{r-1}; query f_i(x); fresh Adam(lr)
        for t = 1..T:
            g  = grad mu_i(x)                    (GP on the gp_neighbourhood points nearest x)
            g += gamma_t (grad m_bar(x) - grad m_i(x))   if r > 1  (gamma_t = 1/t, or 1)
            x <- x - Adam(g); query f_i(x)
            if t < T: local_candidates points x + local_radius U[-1,1]^d; query the
                      local_keep with the largest gradient uncertainty (see below)
        send x_{i,r,T}                                         (msg "x": d floats up)
    phase B, server:    x_r = x_{r-1} + server_lr (sum_i p_i x_{i,r,T} / sum_i p_i - x_{r-1})
        broadcast x_r                                          (msg "x_global": d floats down)
    phase C, client i:  query f_i(x_r); h_i = mean_j |x_{r,j} - x_{i,r,T,j}| / 2;
        agg_candidates points x_r + h_i U[-1,1]^d; query the agg_keep most uncertain;
        fit theta_i (RFF ridge) on the rff_neighbourhood points nearest x_r
        send span_i theta_i with (y_min, y_max)                (msg "theta": M + 2 floats up)
    server:             theta_bar = sum_i p_i span_i theta_i / sum_i p_i
        broadcast theta_bar                                    (msg "theta_bar": M floats down)

so a round has two barriers (pitfall P10). Before round 1 every client queries
``init_queries`` points ``x_0 + init_radius U[-1,1]^d``. Gradient uncertainty of a
candidate ``z`` is ``tr Sigma_grad(z)`` (or its Frobenius / spectral norm,
``uncertainty``) of the GP conditioned on the step's neighbourhood plus the new iterate
(pitfall P4; :func:`fedopt.zo.gp.grad_cov_scores_after`); after aggregation, on the
``gp_neighbourhood`` points nearest ``x_r``, which include ``x_r`` itself. Targets are
min-max scaled on each neighbourhood and gradients scaled back (P5). No projection: the
problem clips inside ``f`` (P7). With one client ``theta_bar`` is that client's own
weights bit for bit, so the correction vanishes exactly.

``safeguard: federated`` emulates the reference's acceptance test (pitfall P1: it reads
the true global ``F``, which no federated node has): after the ``x_global`` broadcast
each client queries ``f_i(x_{r-1})`` and ``f_i(x_r)`` (2 more queries, not added to
its history) and sends both (msg "safeguard": 2 floats up); the server keeps ``x_{r-1}``
unless ``sum_i p_i f_i(x_r) < sum_i p_i f_i(x_{r-1})`` and tells the clients
(msg "safeguard_accept": 1 byte down). ``safeguard: oracle`` is refused.

Queries per client (counted as ``queries``): ``q = 2 + T + local_keep (T - 1) +
agg_keep`` per round (107 with the defaults), ``+ 2`` with the safeguard, ``+
init_queries`` in round 1. Every random draw (candidates, the features ``W, b``) comes
from the keyed counter RNG; weighted sums are formed in the canonical order, so
results do not depend on placement.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from fedopt import rng
from fedopt.algorithms.base import (
    ALGORITHMS,
    Algorithm,
    AlgorithmConfig,
    Constant,
    State,
    WorkerContext,
)
from fedopt.algorithms.zo_trace import DirectionTrace, check_traceable
from fedopt.engine.payload import Payload
from fedopt.errors import ConfigError
from fedopt.fields import COUNT_MAX
from fedopt.optim import Adam
from fedopt.problems.capabilities import Capability
from fedopt.zo import gp, rff
from fedopt.zo.align import pad, up

_NOISE_FLOOR = 1e-12


class FZooSConfig(AlgorithmConfig):
    """Hyperparameters of FZooS (defaults: the paper's synthetic experiments, spec 2.5)."""

    name: Literal["fzoos"] = "fzoos"
    lr: float = Field(0.01, gt=0, description="Adam learning rate of the local steps")
    server_lr: float = Field(1.0, gt=0, description="server step eta_g on the averaged iterate")
    local_steps: int = Field(10, ge=1, le=COUNT_MAX, description="local iterations T per round")
    noise_std: float = Field(
        0.0, ge=0, description="std of the query noise: y = f_i(x) + N(0, noise_std^2)"
    )
    kernel: Literal["se", "matern52"] = Field(
        "se", description="kernel of the local GP (the reference code fits matern52)"
    )
    lengthscale: float = Field(
        1.0, gt=0, description="lengthscale of the local GP kernel (lengthscale_fit: fixed)"
    )
    lengthscale_fit: Literal["fixed", "ml2"] = Field(
        "fixed",
        description="ml2: each fit picks its lengthscale by ML-II on a log-spaced grid (the "
        "reference code's mode with kernel: matern52)",
    )
    lengthscale_bounds: tuple[float, float] = Field(
        (0.01, 100.0), description="ml2: smallest and largest lengthscale of the grid"
    )
    lengthscale_grid: int = Field(
        21, ge=2, le=1000, description="ml2: log-spaced lengthscales tried between the bounds"
    )
    gp_noise: float = Field(
        1e-6, gt=0, description="noise variance added to the local GP's kernel matrix"
    )
    gp_neighbourhood: int = Field(
        150,
        ge=1,
        le=COUNT_MAX,
        description="history points nearest the iterate the local GP uses (all of them "
        "while the history is shorter)",
    )
    features: int = Field(
        10_000, ge=1, le=COUNT_MAX, description="random Fourier features M of the global surrogate"
    )
    rff_lengthscale: float = Field(1.0, gt=0, description="SE lengthscale of the features")
    rff_noise: float = Field(
        1e-6, gt=0, description="ridge s2 of the feature fit (dual form, pitfall P9)"
    )
    rff_neighbourhood: int = Field(
        500,
        ge=1,
        le=COUNT_MAX,
        description="history points nearest x_r the feature weights are fitted on (all "
        "of them while the history is shorter)",
    )
    init_queries: int = Field(
        10, ge=0, le=COUNT_MAX, description="queries around x_0 before round 1"
    )
    init_radius: float = Field(0.01, ge=0, description="half-width of the initial query box")
    local_candidates: int = Field(100, ge=1, le=COUNT_MAX, description="candidates per local step")
    local_radius: float = Field(0.01, ge=0, description="half-width of the local candidate box")
    local_keep: int = Field(
        5, ge=0, le=COUNT_MAX, description="most uncertain local candidates queried per step"
    )
    agg_candidates: int = Field(
        200, ge=1, le=COUNT_MAX, description="candidates around x_r after aggregation"
    )
    agg_keep: int = Field(
        50, ge=0, le=COUNT_MAX, description="most uncertain of them queried before the fit"
    )
    uncertainty: Literal["trace", "frobenius", "spectral"] = Field(
        "trace", description="size of the gradient posterior covariance that ranks candidates"
    )
    adaptive: bool = Field(
        True, description="correction length gamma_t = 1/t (false: gamma = 1, the ablation)"
    )
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
    def _consistent(self) -> FZooSConfig:
        for keep, cand in (("local_keep", "local_candidates"), ("agg_keep", "agg_candidates")):
            if getattr(self, keep) > getattr(self, cand):
                raise ValueError(
                    f"algorithm.{keep}: {getattr(self, keep)} is more than the "
                    f"{getattr(self, cand)} {cand} it is chosen from; raise algorithm.{cand} "
                    f"or lower algorithm.{keep}"
                )
        lo, hi = self.lengthscale_bounds
        if not 0 < lo < hi:
            raise ValueError(
                f"algorithm.lengthscale_bounds: need 0 < low < high, got [{lo}, {hi}]; use "
                "e.g. [0.01, 100]"
            )
        if self.safeguard == "oracle":
            raise ValueError(
                "algorithm.safeguard: 'oracle' reads the true global F, which no federated "
                "node can evaluate, and its queries would go unmetered; use 'federated' "
                "(each client queries f_i at both points and sends 2 scalars, metered) or 'off'"
            )
        return self

    def queries_per_round(self) -> int:
        """Queries of one client in a round after the first (module doc)."""
        q = 2 + self.local_steps + self.local_keep * (self.local_steps - 1) + self.agg_keep
        return q + (2 if self.safeguard == "federated" else 0)


@ALGORITHMS.register("fzoos")
class FZooS(Algorithm):
    """FZooS over a star (module doc); the server's state is ``x`` (``[1, dim]``)."""

    Config = FZooSConfig
    requires = frozenset({"star", Capability.NOISY_QUERIES})
    roles = ("server", "client")
    zeroth_order = True  # only queries: accepted by black-box problems
    state_tensors = 8  # x_{r-1}, the iterate, Adam's m and v, gradients, the sent rows

    @classmethod
    def check_plan(cls, config: AlgorithmConfig, plan: Any) -> None:
        """Refuse faults (full participation) and, on the local engine, a run whose
        query histories would not fit the memory budget (:meth:`surrogate_bytes`)."""
        check_traceable(config, plan)
        if plan.config.faults.any:
            raise ConfigError(
                "faults: fzoos runs every client every round (full participation, two "
                "barriers per round); remove the faults section"
            )
        rounds = plan.config.stop.rounds
        if rounds is None or plan.config.engine.kind != "local":
            return
        from fedopt.engine.budget import fmt_bytes, host_limit
        from fedopt.problems import PROBLEMS

        dim = PROBLEMS.get(plan.config.problem.name).param_dim(plan.config.problem)
        limit = host_limit(plan.config.engine.memory_budget_gb)
        if dim is None or limit is None:
            return
        cfg: FZooSConfig = config  # type: ignore[assignment]
        clients = len(plan.topology.role_nodes("client"))
        need = cls.surrogate_bytes(cfg, clients, dim, rounds)
        if need > limit.bytes:
            raise ConfigError(
                f"stop.rounds: fzoos keeps every query; {clients} clients x {rounds} rounds of "
                f"{cfg.queries_per_round()} queries in dim {dim} (plus the features and "
                f"the fits) need about {fmt_bytes(need)}, more than the memory budget of "
                f"{fmt_bytes(limit.bytes)} ({limit.how}); use fewer rounds, a smaller "
                "problem.dim or algorithm.features, or set engine.memory_budget_gb"
            )

    @staticmethod
    def surrogate_bytes(config: FZooSConfig, clients: int, dim: int, rounds: int) -> int:
        """Bytes one worker holding every client needs at the end of ``rounds`` rounds.

        Histories ``clients x H x (dim + 1)`` float64 with ``H = init_queries + rounds
        q`` (grown by doubling: up to ``2 H``), the features ``W [dim, M]`` and the
        feature fit's ``[clients, min(rff_neighbourhood, H), M]`` temporaries (two).
        """
        H = config.init_queries + rounds * config.queries_per_round()
        history = 2 * clients * H * (dim + 1) * 8
        fit = 2 * clients * min(config.rff_neighbourhood, H) * config.features * 8
        return history + dim * config.features * 8 + fit

    @classmethod
    def node_tensors(cls, config: AlgorithmConfig, n: int) -> int:
        """Per client: the round's ``[k, dim]`` tensors and one step's candidates (the
        query history, which grows every round, is checked by :meth:`check_plan`)."""
        cfg = config if isinstance(config, FZooSConfig) else FZooSConfig()
        return cls.state_tensors + max(cfg.local_candidates, cfg.agg_candidates)

    def __init__(self, config: FZooSConfig, ctx: WorkerContext) -> None:
        super().__init__(config, ctx)
        if ctx.server_id is None or ctx.clients is None:
            raise ValueError("fzoos needs a topology with a server and clients")
        servers = [int(ctx.hosted[i]) for i in ctx.hosted_with_role("server")]
        self.server = servers[0] if servers else None
        self.server_id = ctx.server_id
        self.client_local = ctx.hosted_with_role("client")
        self.client_ids = ctx.hosted[self.client_local]
        self.rows = ctx.data_rows[self.client_local]
        self.dim = int(ctx.oracle.dim)
        self.features = rff.features(ctx.seed, self.dim, config.features, config.rff_lengthscale)
        self.optimizer = Adam(reset="round")
        self.trace = (
            DirectionTrace(ctx.oracle, self.rows, config.local_steps)
            if config.trace_cosine
            else None
        )
        lo, hi = config.lengthscale_bounds
        self.grid = torch.logspace(
            math.log10(lo), math.log10(hi), config.lengthscale_grid, dtype=torch.float64
        )

    def derived_constants(self) -> dict[str, Constant]:
        """Queries per client per round, floats sent per client per round, the schedule."""
        cfg = self.config
        d, M = self.dim, cfg.features
        safe = cfg.safeguard == "federated"
        return {
            "clients": len(self.ctx.clients) if self.ctx.clients is not None else 0,
            "queries_per_round": cfg.queries_per_round(),
            "queries_first_round": cfg.queries_per_round() + cfg.init_queries,
            "floats_up_per_round": d + M + 2 + (2 if safe else 0),
            "floats_down_per_round": d + M,
            "gamma": "1/t" if cfg.adaptive else "1",
            "barriers_per_round": 3 if safe else 2,
        }

    # ----------------------------------------------------------------------- state
    def init_state(self) -> State:
        ctx, cfg = self.ctx, self.config
        if ctx.initial_params is None:
            return {}
        x0 = ctx.initial_params(0).to(device=ctx.device, dtype=ctx.dtype).reshape(1, -1)
        state: State = {}
        if self.server is not None:
            state["x"] = x0.clone()
        c = len(self.client_local)
        if c:
            d, f64 = self.dim, torch.float64
            state.update(
                x_global=x0.expand(c, d).clone(),
                hist_x=torch.zeros((c, 0, up(d)), dtype=f64, device=ctx.device),
                hist_y=torch.zeros((c, 0), dtype=f64, device=ctx.device),
                hist_sq=torch.zeros((c, 0), dtype=f64, device=ctx.device),
                hist_n=torch.zeros(c, dtype=torch.int64, device=ctx.device),
                queries=torch.zeros(c, dtype=torch.int64, device=ctx.device),
                theta_own=torch.zeros((c, cfg.features), dtype=f64, device=ctx.device),
                theta_bar=torch.zeros((1, cfg.features), dtype=f64, device=ctx.device),
                correction=torch.zeros(c, dtype=f64, device=ctx.device),
                lengthscale=torch.full((c,), cfg.lengthscale, dtype=f64, device=ctx.device),
            )
        return state

    # ----------------------------------------------------------------------- helpers
    def _query(self, state: State, X: torch.Tensor, t: int) -> torch.Tensor:
        """Counted noisy values ``[c, m]`` at ``X [c, m, d]`` (noise keyed by query index)."""
        c, m, d = X.shape
        step = (state["queries"].unsqueeze(1) + torch.arange(m, device=X.device)).reshape(-1)
        rows = self.rows.repeat_interleave(m)
        oracle: Any = self.ctx.oracle
        y = oracle.query(X.reshape(c * m, d), rows, step, self.config.noise_std)
        state["queries"] += m
        self.ctx.comm.compute(self.client_local, m, t, kind="queries")
        return y.to(torch.float64).reshape(c, m)

    @staticmethod
    def _append(state: State, X: torch.Tensor, y: torch.Tensor) -> None:
        """Add ``X [c, m, d]`` and ``y [c, m]`` to every client's history.

        The history is stored padded (``[c, cap, d8]``, ``cap`` and ``d8`` multiples of
        8, :mod:`fedopt.zo.align`) with the squared norms of its rows, and grows by
        doubling.
        """
        c, m, _ = X.shape
        hx = state["hist_x"]
        n, cap, d8 = state["hist_n"], hx.shape[1], hx.shape[2]
        need = int(n.max()) + m
        if need > cap:
            grow = up(max(need, 2 * cap)) - cap
            state["hist_x"] = torch.cat([hx, hx.new_zeros((c, grow, d8))], 1)
            for key in ("hist_y", "hist_sq"):
                state[key] = torch.cat([state[key], y.new_zeros((c, grow))], 1)
        pos = n.unsqueeze(1) + torch.arange(m, device=X.device)
        ar = torch.arange(c, device=X.device).unsqueeze(1)
        state["hist_x"][ar, pos] = pad(X, 2, d8)
        state["hist_y"][ar, pos] = y
        state["hist_sq"][ar, pos] = X.square().sum(-1)
        state["hist_n"] = n + m

    def _observe(self, state: State, X: torch.Tensor, t: int) -> None:
        """Query ``X [c, m, d]`` and keep the answers."""
        self._append(state, X, self._query(state, X, t))

    def _box(self, purpose: str, step: int, count: int) -> torch.Tensor:
        """``[c, count, d]`` uniform draws in ``[-1, 1)`` keyed by (client id, step)."""
        keys = rng.node_keys(self.ctx.seed, purpose, self.client_ids, step)
        u = rng.uniform(keys, count * self.dim, torch.float64).to(self.ctx.device)
        return u.reshape(len(self.client_ids), count, self.dim).mul_(2.0).sub_(1.0)

    def _neighbourhood(self, state: State, x: torch.Tensor, k: int):
        """``(X, y, mask)`` of the ``k`` history points nearest ``x`` per client."""
        H = up(int(state["hist_n"].max()))  # the padded rows in use (masked by count)
        hx, hy = state["hist_x"][:, :H], state["hist_y"][:, :H]
        idx, mask = gp.nearest(hx, state["hist_n"], x, k, state["hist_sq"][:, :H])
        return gp.take(hx, idx)[..., : self.dim], gp.take(hy, idx), mask

    def _lengthscale(
        self, state: State, X: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, x: torch.Tensor
    ) -> float | torch.Tensor:
        """The configured lengthscale, or each client's ML-II pick on this neighbourhood."""
        cfg = self.config
        if cfg.lengthscale_fit == "fixed":
            return cfg.lengthscale
        noise = max(cfg.gp_noise, _NOISE_FLOOR)
        ell = gp.select_lengthscale(X, y, mask, x, cfg.kernel, self.grid.to(x.device), noise)
        state["lengthscale"] = ell
        return ell

    def _pick(self, scores: torch.Tensor, cand: torch.Tensor, keep: int) -> torch.Tensor:
        """The ``keep`` candidates ``[c, keep, d]`` with the largest scores."""
        return gp.take(cand, gp.top(scores, keep))

    # ----------------------------------------------------------------------- round
    def round(self, state: State, t: int) -> None:
        cfg, ctx = self.config, self.ctx
        comm, d, M = ctx.comm, self.dim, cfg.features
        c = len(self.client_local)
        weights = ctx.oracle.weights.index_select(0, self.rows) if c else torch.zeros(0)
        x_last = torch.zeros((c, d), dtype=torch.float64, device=ctx.device)
        if c:
            x_last = self._local(state, t)
        sent = x_last.to(ctx.dtype)
        sums = comm.gather_sum(
            sent, weights, self.client_ids, ctx.clients, self.server_id, "x",
            Payload.fields({"x": (d, ctx.dtype)}),
        )  # fmt: skip
        cand = None
        if self.server is not None and sums is not None:
            total, weight = sums
            cand = state["x"] + cfg.server_lr * (total / weight - state["x"])
        x_payload = Payload.fields({"x": (d, ctx.dtype)})
        x_new = comm.broadcast(cand, self.server_id, self.client_ids, "x_global", x_payload)
        x_new = x_new.reshape(1, d)
        if cfg.safeguard == "federated":
            x_new = self._safeguard(state, t, x_new, weights)
        elif self.server is not None:
            state["x"] = x_new.clone()
        if c:
            state["x_global"] = x_new.expand(c, d).clone()
            theta = self._refresh(state, t, x_last)
        else:
            theta = torch.zeros((0, M), dtype=ctx.dtype, device=ctx.device)
        sums = comm.gather_sum(
            theta, weights, self.client_ids, ctx.clients, self.server_id, "theta",
            Payload.fields({"theta": (M, ctx.dtype), "y_range": (2, ctx.dtype)}),
        )  # fmt: skip
        bar = None
        if self.server is not None and sums is not None:
            bar = (sums[0] / sums[1]).reshape(1, M)
        payload = Payload.fields({"theta": (M, ctx.dtype)})
        bar = comm.broadcast(bar, self.server_id, self.client_ids, "theta_bar", payload)
        if c:
            state["theta_own"] = theta.to(torch.float64)
            state["theta_bar"] = bar.reshape(1, M).to(torch.float64)

    def _local(self, state: State, t: int) -> torch.Tensor:
        """Phase A on the hosted clients: ``T`` surrogate-gradient Adam steps; the last iterate."""
        cfg = self.config
        T = cfg.local_steps
        x = state["x_global"].to(torch.float64)
        if t == 0 and cfg.init_queries:
            box = self._box("fzoos_init", 0, cfg.init_queries)
            self._observe(state, x.unsqueeze(1) + cfg.init_radius * box, t)
        self._observe(state, x.unsqueeze(1), t)
        opt_state = self.optimizer.init(len(x), self.dim, torch.float64, x.device)
        diff = state["theta_bar"] - state["theta_own"]  # [c, M]: grad is linear in theta
        correction = torch.zeros(len(x), dtype=torch.float64, device=x.device)
        noise = max(cfg.gp_noise, _NOISE_FLOOR)
        if self.trace is not None:
            self.trace.start_round()
        for s in range(1, T + 1):
            X, y, mask = self._neighbourhood(state, x, cfg.gp_neighbourhood)
            ell = self._lengthscale(state, X, y, mask, x)
            post = gp.fit(X, y, mask, x, cfg.kernel, ell, noise)
            g = gp.mean_grad(post, x)
            corr = None
            if t > 0:  # no global surrogate before the first aggregation (P8)
                gamma = 1.0 / s if cfg.adaptive else 1.0
                corr = gamma * rff.grad(diff, x, self.features)
                correction += corr.norm(dim=1) / T
                g = g + corr
            if self.trace is not None:
                self.trace.step(s - 1, x, g, corr)
            x = x - self.optimizer.update(opt_state, g, cfg.lr)
            self._observe(state, x.unsqueeze(1), t)
            if s < T and cfg.local_keep:
                cand = x.unsqueeze(1) + cfg.local_radius * self._box(
                    "fzoos_local", t * T + s, cfg.local_candidates
                )
                # conditioned on the step's neighbourhood plus the new iterate (P4)
                scores = gp.grad_cov_scores_after(post, x, cand, cfg.uncertainty)
                self._observe(state, self._pick(scores, cand, cfg.local_keep), t)
        state["correction"] = correction
        return x

    def _safeguard(self, state: State, t: int, x_new: torch.Tensor, weights: torch.Tensor):
        """The federated acceptance test (module doc); returns the accepted ``x_r [1, d]``."""
        ctx, comm = self.ctx, self.ctx.comm
        c = len(self.client_local)
        values = torch.zeros((c, 2), dtype=ctx.dtype, device=ctx.device)
        if c:
            old = state["x_global"].to(torch.float64)
            pts = torch.stack([old, x_new.to(torch.float64).expand(c, -1)], 1)
            values = self._query(state, pts, t).to(ctx.dtype)  # not kept in the history
        sums = comm.gather_sum(
            values, weights, self.client_ids, ctx.clients, self.server_id, "safeguard",
            Payload.fields({"values": (2, ctx.dtype)}),
        )  # fmt: skip
        flag = None
        if self.server is not None and sums is not None:
            f_old, f_new = (sums[0] / sums[1]).unbind()
            flag = torch.tensor([[float(bool(f_new < f_old))]], dtype=ctx.dtype)
        payload = Payload.fields({"accept": (1, torch.uint8)})
        flag = comm.broadcast(flag, self.server_id, self.client_ids, "safeguard_accept", payload)
        accept = bool(flag.reshape(-1)[0] > 0)
        if self.server is not None:
            if accept:
                state["x"] = x_new.clone()
            return state["x"].clone()
        if accept or not c:
            return x_new
        return state["x_global"][:1].clone()

    def _refresh(self, state: State, t: int, x_last: torch.Tensor) -> torch.Tensor:
        """Phase C: query ``x_r``, the most uncertain points around it, fit ``theta``.

        Returns each client's weights on the original scale, ``span_i theta_i`` (the
        message's ``theta``), rounded to the message dtype.
        """
        cfg = self.config
        c = len(self.client_local)
        xr = state["x_global"].to(torch.float64)
        self._observe(state, xr.unsqueeze(1), t)
        if cfg.agg_keep:
            h = (xr - x_last).abs().mean(1) / 2.0
            cand = xr.unsqueeze(1) + h.view(c, 1, 1) * self._box(
                "fzoos_explore", t, cfg.agg_candidates
            )
            # the history already holds x_r: its nearest points are history plus x_r
            X, y, mask = self._neighbourhood(state, xr, cfg.gp_neighbourhood)
            ell = self._lengthscale(state, X, y, mask, xr)
            noise = max(cfg.gp_noise, _NOISE_FLOOR)
            scores = gp.grad_cov_scores(X, mask, xr, cand, cfg.kernel, ell, noise, cfg.uncertainty)
            self._observe(state, self._pick(scores, cand, cfg.agg_keep), t)
        X, y, mask = self._neighbourhood(state, xr, cfg.rff_neighbourhood)
        theta, _, span = rff.fit(X, y, mask, self.features, max(cfg.rff_noise, _NOISE_FLOOR))
        return (span.unsqueeze(1) * theta).to(self.ctx.dtype)

    # ----------------------------------------------------------------------- outputs
    def output(self, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        if self.server is None:
            return torch.empty(0, dtype=torch.int64), torch.empty(0, 0, dtype=self.ctx.dtype)
        return torch.tensor([self.server]), state["x"]

    def metrics(self, state: State) -> dict[str, torch.Tensor]:
        """``correction_norm``: each client's mean ``||gamma_t (grad m_bar - grad m_i)||``
        over the last round's local steps; ``lengthscale``: the local GP's (the last ML-II
        pick with ``lengthscale_fit: ml2``). NaN for the server, left out of the mean."""
        k = len(self.ctx.hosted)
        out = {} if self.trace is None else self.trace.metrics(k, self.client_local)
        for name, key in (("correction_norm", "correction"), ("lengthscale", "lengthscale")):
            values = torch.full((k,), math.nan, dtype=torch.float64)
            if len(self.client_local):
                values[self.client_local] = state[key].cpu()
            out[name] = values
        return out

    @classmethod
    def output_rows(cls, config: AlgorithmConfig, n: int) -> int:
        return 1

    @classmethod
    def analytic_traffic(cls, config: AlgorithmConfig, plan: Any, rounds: int) -> int:
        clients = len(plan.topology.role_nodes("client"))
        per = 6 if config.safeguard == "federated" else 4  # type: ignore[attr-defined]
        return per * clients * rounds

"""ADOM+: accelerated primal-dual decentralized optimization over time-varying graphs.

Kovalev, Gasanov, Gasnikov & Richtárik, "Lower Bounds and Optimal Algorithms for Smooth
and Strongly Convex Decentralized Optimization Over Time-Varying Networks" (NeurIPS 2021,
arXiv 2106.04469), Algorithm ADOM+; it extends ADOM (Kovalev, Shulgin, Richtárik, Rogozin
& Gasnikov, ICML 2021) and is a synchronous baseline of DADAO (Nabli & Oyallon, ICML 2023).

Problem: ``min sum_i f_i(x)``, each ``f_i`` ``mu``-strongly convex and ``L``-smooth.
Gossip matrix of round ``k``: ``W_k = Lap(G_k) / lambda_max(Lap(G_k))`` (the static graph,
or member ``k mod count`` of a ``random_geometric_sequence``), with
``chi = max_k lambda_max / lambda_min^+`` of ``Lap(G_k)``.

Constants (spec 1.8, the values of the DADAO reference code, which this module follows
where the spec and the paper's statement could differ, e.g. ``alpha = mu / 2``)::

    tau2 = sqrt(mu/L)            tau1 = 1 / (1/tau2 + 1/2)       eta = 1 / (L tau2)
    sigma2 = tau2 / (16 chi)     sigma1 = 1 / (1/sigma2 + 1/2)   alpha = nu = mu/2
    beta = 1 / (2L)              delta = 1 / (17 L)              zeta = 1/2
    gamma = nu / (14 sigma2 chi^2)                               theta = nu / (4 sigma2)

Round ``k`` (node-batched rows; ``grad F`` stacks the local gradients)::

    x_g = tau1 x + (1 - tau1) x_f ;  g = grad F(x_g) - nu x_g           (1 gradient)
    y_g = sigma1 y + (1 - sigma1) y_f ;  z_g = sigma1 z + (1 - sigma1) z_f ;  s = y_g + z_g
    x+ = x + eta alpha (x_g - x+) - eta (g - y+)                     } solved jointly
    y+ = y + theta beta (g - y+) - theta (s / nu + x+)                } (2 x 2, per row)
    x_f = x_g + tau2 (x+ - x) ;  y_f = y_g + sigma2 (y+ - y)
    v = (gamma / nu) s + m ;  [Wv, Ws] = W_k [v, s]                    (one gossip)
    z+ = z + gamma delta (z_g - z) - Wv ;  m+ = v - Wv ;  z_f = z_g - zeta Ws

The two ``x+``/``y+`` lines are the paper's implicit steps (``x+`` on both sides of the
first, ``y+`` on both sides of the second); they are linear, and each row solves them
in closed form. Initialisation (spec 1.8): ``x`` from the problem, ``y, m ~ N(0, I)``
(counter-based, keyed by seed and node), ``z = 0`` (so ``sum_i z_i = 0`` holds
throughout), and every ``_f`` copy equal to its variable. Output: the primal ``x`` rows.

Multi-consensus (``multi_consensus: true``): ``W_k`` is replaced by
``I - (I - W_{kT+T-1}) ... (I - W_{kT})`` with ``T = ceil(chi ln 2)`` consecutive
gossip steps, and ``chi = 2`` in the constants. Consecutive steps use consecutive
members of a time-varying sequence (step ``s`` uses member ``s mod count``); the product
is then not symmetric, which the paper's contraction assumption does not need.

Traffic: ``[v, s]`` is mixed as one ``[k, 2 dim]`` tensor, so every gossip step sends one
message of ``2 dim`` floats each way on every edge of the current graph; a round sends
``2 |E_k|`` messages (``T`` times that with multi-consensus) and computes 1 gradient
per node.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field

from fedopt import rng
from fedopt.algorithms.base import (
    ALGORITHMS,
    Algorithm,
    AlgorithmConfig,
    Constant,
    State,
    WorkerContext,
)
from fedopt.algorithms.facts import curvature_facts, time_varying_graphs, worker_curvature
from fedopt.algorithms.laplacian_gossip import (
    LaplacianMember,
    scaled,
    shifted,
    topology_members,
)

if TYPE_CHECKING:
    from fedopt.engine.comm import OperatorHandle

MC_CHI = 2.0
"""The ``chi`` ADOM+ uses with multi-consensus gossip."""


class ADOMPlusConfig(AlgorithmConfig):
    """Hyperparameters of ADOM+ (every constant follows from mu, L and chi)."""

    name: Literal["adom_plus"] = "adom_plus"
    mu: float | None = Field(None, gt=0, description="strong convexity (default: from problem)")
    L: float | None = Field(None, gt=0, description="smoothness (default: from the problem)")
    multi_consensus: bool = Field(
        False, description="gossip ceil(chi ln 2) times per round and use chi = 2"
    )


@dataclass(frozen=True)
class AdomConstants:
    """Step sizes and momenta of ADOM+ (see the module docstring)."""

    tau1: float
    tau2: float
    sigma1: float
    sigma2: float
    eta: float
    alpha: float
    beta: float
    delta: float
    nu: float
    gamma: float
    theta: float
    zeta: float

    @classmethod
    def from_problem(cls, mu: float, L: float, chi: float) -> AdomConstants:
        """Constants for ``mu``-strongly convex, ``L``-smooth ``f_i`` and gossip ``chi``."""
        tau2 = math.sqrt(mu / L)
        sigma2 = tau2 / (16.0 * chi)
        nu = mu / 2.0
        return cls(
            tau1=1.0 / (1.0 / tau2 + 0.5),
            tau2=tau2,
            sigma1=1.0 / (1.0 / sigma2 + 0.5),
            sigma2=sigma2,
            eta=1.0 / (L * tau2),
            alpha=mu / 2.0,
            beta=1.0 / (2.0 * L),
            delta=1.0 / (17.0 * L),
            nu=nu,
            gamma=nu / (14.0 * sigma2 * chi**2),
            theta=nu / (4.0 * sigma2),
            zeta=0.5,
        )


def consensus_steps(chi: float, multi_consensus: bool) -> int:
    """Gossip steps per round: ``ceil(chi ln 2)`` with multi-consensus, else 1."""
    if not multi_consensus:
        return 1
    return max(1, math.ceil(chi * math.log(2.0) - 1e-9))


def graph_chi(members: list[LaplacianMember]) -> float:
    """Worst ``lambda_max / lambda_min^+`` over the gossip graphs."""
    return max(m.chi for m in members)


@ALGORITHMS.register("adom_plus")
class ADOMPlus(Algorithm):
    """ADOM+ on node-batched rows (state ``x, x_f, y, y_f, z, z_f, m``: ``[k, dim]``)."""

    Config = ADOMPlusConfig
    requires = frozenset({"connected"})
    roles = ("gossip", "client")
    # 7 state rows (x, x_f, y, y_f, z, z_f, m) plus one round's temporaries: x_g, g, y_g,
    # z_g, s, r, y_new, x_new and their differences, and the [k, 2 dim] gossip in and out
    state_tensors = 24

    def __init__(self, config: AlgorithmConfig, ctx: WorkerContext) -> None:
        super().__init__(config, ctx)
        cfg: Any = config
        mu, L = worker_curvature(cfg, ctx)
        topo = ctx.comm.topology
        members = topology_members(topo, cfg.name)
        chi = graph_chi(members)
        self.chi_graph = chi
        self.steps = consensus_steps(chi, cfg.multi_consensus)
        self.chi = MC_CHI if cfg.multi_consensus else chi
        self.mu, self.L = mu, L
        self.consts = AdomConstants.from_problem(mu, L, self.chi)
        # registered once: the comm compiles each operator's gather plan for its handle
        self._ops: list[OperatorHandle] = [
            ctx.comm.register_operator(
                shifted(m.lap, 1.0 / m.lam_max)
                if cfg.multi_consensus
                else scaled(m.lap, 1 / m.lam_max),
                f"adom_plus operator {k}",
            )
            for k, m in enumerate(members)
        ]

    @classmethod
    def plan_facts(cls, config: AlgorithmConfig, plan: Any, oracle: Any) -> dict[str, Any]:
        """The worst-case ``mu`` and ``L`` over every data node, once at compile time."""
        return curvature_facts(config, plan, oracle)

    def derived_constants(self) -> dict[str, Constant]:
        """mu, L, chi, gossip steps per round and every step size and momentum."""
        return {
            "mu": self.mu,
            "L": self.L,
            "chi": self.chi,
            "graph_chi": self.chi_graph,
            "consensus_steps": self.steps,
            "graphs": len(self._ops),
            **asdict(self.consts),
        }

    @classmethod
    def check_plan(cls, config: AlgorithmConfig, plan: Any) -> None:
        time_varying_graphs(plan)  # a time-varying schedule must be connected graphs

    def init_state(self) -> State:
        ctx = self.ctx
        d = ctx.oracle.dim
        x = ctx.oracle.init_params(ctx.data_rows).to(device=ctx.device, dtype=ctx.dtype)

        def gaussian(purpose: str) -> torch.Tensor:
            keys = rng.node_keys(ctx.seed, f"adom_plus/{purpose}", ctx.hosted, 0)
            return rng.normal(keys, d, torch.float64).to(device=ctx.device, dtype=ctx.dtype)

        y, m = gaussian("y"), gaussian("m")
        z = torch.zeros_like(x)
        return {
            "x": x.contiguous(),
            "x_f": x.clone(),
            "y": y,
            "y_f": y.clone(),
            "z": z,
            "z_f": z.clone(),
            "m": m,
        }

    def _gossip(self, U: torch.Tensor, t: int) -> torch.Tensor:
        """``W U`` with the round's gossip matrix (``T`` metered steps if multi-consensus)."""
        ops, comm = self._ops, self.ctx.comm
        if not self.config.multi_consensus:  # type: ignore[attr-defined]
            return comm.mix(U, t, "dual", op=ops[t % len(ops)])
        V = U
        for j in range(self.steps):
            V = comm.mix(V, t, "dual", op=ops[(t * self.steps + j) % len(ops)])
        return U - V

    def round(self, state: State, t: int) -> None:
        c, ctx = self.consts, self.ctx
        x, x_f, y, y_f, z, z_f, m = (state[k] for k in ("x", "x_f", "y", "y_f", "z", "z_f", "m"))
        x_g = torch.lerp(x_f, x, c.tau1)
        g = ctx.oracle.full_grad(x_g, ctx.data_rows).to(ctx.dtype).sub_(x_g, alpha=c.nu)
        ctx.comm.compute(torch.arange(len(ctx.data_rows)), 1, t)
        y_g = torch.lerp(y_f, y, c.sigma1)
        z_g = torch.lerp(z_f, z, c.sigma1)
        s = y_g + z_g
        # implicit steps: x+ = (r + eta y+) / a with r = x + eta alpha x_g - eta g,
        # a = 1 + eta alpha; substituting into the y+ line gives y+ in closed form
        a = 1.0 + c.eta * c.alpha
        r = x + (c.eta * c.alpha) * x_g - c.eta * g
        y_new = (y + (c.theta * c.beta) * g - (c.theta / c.nu) * s - (c.theta / a) * r) / (
            1.0 + c.theta * c.beta + c.theta * c.eta / a
        )
        x_new = (r + c.eta * y_new) / a
        state["x_f"] = x_g.add_(x_new - x, alpha=c.tau2)
        state["y_f"] = y_g.add_(y_new - y, alpha=c.sigma2)
        v = m.add_(s, alpha=c.gamma / c.nu)
        d = v.shape[1]
        wv_ws = self._gossip(torch.cat([v, s], dim=1), t)
        wv, ws = wv_ws[:, :d], wv_ws[:, d:]
        # z_g still holds sigma1 z + (1 - sigma1) z_f (only x_g, y_g were reused)
        state["z"] = z.add_(z_g - z, alpha=c.gamma * c.delta).sub_(wv)
        state["m"] = v.sub_(wv)
        state["z_f"] = z_g.sub_(ws, alpha=c.zeta)
        state["x"], state["y"] = x_new, y_new

    def output(self, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ctx.hosted, state["x"]

    @classmethod
    def analytic_traffic(cls, config: AlgorithmConfig, plan: Any, rounds: int) -> int:
        """``sum`` over gossip steps of the directed edges of the graph used."""
        members = topology_members(plan.topology, config.name)
        steps = consensus_steps(graph_chi(members), config.multi_consensus)  # type: ignore[attr-defined]
        return sum(members[s % len(members)].messages for s in range(rounds * steps))

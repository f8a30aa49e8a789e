"""MSDA: multi-step dual accelerated decentralized optimization (fixed graphs).

Scaman, Bach, Bubeck, Lee & Massoulié, "Optimal algorithms for smooth and strongly
convex distributed optimization in networks" (ICML 2017, arXiv 1702.08704),
Algorithm 2, used as a synchronous baseline by DADAO (Nabli & Oyallon, ICML 2023).

Problem: ``min sum_i f_i(x)``, each ``f_i`` ``mu``-strongly convex and ``L``-smooth,
``kappa = L / mu``. MSDA runs Nesterov's accelerated gradient on the dual problem; a
node needs ``grad f_i*`` (the gradient of the convex conjugate), so only problems
with the ``conjugate_gradients`` capability qualify (``requires`` says so).

Gossip matrix: the graph Laplacian ``W = Lap(G)`` (the spec's ``Lap / |E|`` differs by a
scale, which the method normalises away), with ``lambda_1 = lambda_max(W)`` and
eigengap ``gamma = lambda_min^+(W) / lambda_1``. Constants (the paper's)::

    c1 = (1 - sqrt(gamma)) / (1 + sqrt(gamma))     c2 = (1 + gamma) / (1 - gamma)
    c3 = 2 / ((1 + gamma) lambda_1)                K = floor(1 / sqrt(gamma))
    eta = mu (1 + c1^(2K)) / (1 + c1^K)^2
    beta = ((1 + c1^K) sqrt(kappa) - 1 + c1^K) / ((1 + c1^K) sqrt(kappa) + 1 - c1^K)

(the paper calls the momentum ``beta`` here ``mu``; ``mu`` is the strong convexity in
fedopt). ``eta = mu / lambda_max(P_K)`` and ``beta`` is Nesterov's momentum for the dual
condition number ``kappa (1 + c1^K)^2 / (1 - c1^K)^2`` of the accelerated gossip
operator ``P_K`` below.

Iteration ``t`` (dual rows ``x``, ``y``; primal ``theta``)::

    theta_t = grad f*(x_t)          (1 conjugate gradient per node, metered as 1 step)
    y_{t+1} = x_t - eta * AcceleratedGossip(theta_t)
    x_{t+1} = (1 + beta) y_{t+1} - beta y_t

``AcceleratedGossip(u)`` is ``u - T_K(c2 (I - c3 W)) u / T_K(c2)`` with the Chebyshev
recursion ``a_0 = 1, a_1 = c2, a_{k+1} = 2 c2 a_k - a_{k-1}`` and
``u_0 = u, u_1 = c2 (I - c3 W) u, u_{k+1} = 2 c2 (I - c3 W) u_k - u_{k-1}``: ``K`` products
with ``I - c3 W`` (``K`` metered gossip steps, ``2 |E|`` messages of ``dim`` floats each).
The iterates are normalised (``u_k / a_k`` is carried), which is the same polynomial;
``K = 1`` (``gamma > 1/4``, e.g. a complete graph, where ``c2`` is infinite) reduces to
``c3 W u``.

Initialisation: ``x_0 = y_0 = 0`` (the paper's). The output is the last computed primal
``theta_t = grad f*(x_t)``, so after round ``t`` it is ``theta_t`` (before the first round,
the problem's initial parameters). Fixed graphs only: a time-varying topology is
refused at compile time, as is a problem without conjugate gradients.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

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
from fedopt.algorithms.facts import curvature_facts, worker_curvature
from fedopt.algorithms.laplacian_gossip import LaplacianMember, shifted, topology_members
from fedopt.errors import ConfigError
from fedopt.problems.capabilities import Capability

if TYPE_CHECKING:
    from fedopt.engine.comm import OperatorHandle


class MSDAConfig(AlgorithmConfig):
    """Hyperparameters of MSDA (every constant follows from mu, L and the graph)."""

    name: Literal["msda"] = "msda"
    mu: float | None = Field(None, gt=0, description="strong convexity (default: from problem)")
    L: float | None = Field(None, gt=0, description="smoothness (default: from the problem)")


@dataclass(frozen=True)
class MSDAConstants:
    """Chebyshev and step constants of MSDA (see the module docstring)."""

    gamma: float
    c1: float
    c2: float
    c3: float
    K: int
    eta: float
    beta: float

    @classmethod
    def from_problem(cls, mu: float, L: float, member: LaplacianMember) -> MSDAConstants:
        """Constants for ``mu``-strongly convex, ``L``-smooth ``f_i`` on a graph."""
        gamma = member.lam_min / member.lam_max
        root = math.sqrt(gamma)
        c1 = (1.0 - root) / (1.0 + root)
        c2 = (1.0 + gamma) / (1.0 - gamma) if gamma < 1.0 else math.inf
        K = chebyshev_steps(gamma)
        cK = c1**K
        sk = math.sqrt(L / mu)
        return cls(
            gamma=gamma,
            c1=c1,
            c2=c2,
            c3=2.0 / ((1.0 + gamma) * member.lam_max),
            K=K,
            eta=mu * (1.0 + c1 ** (2 * K)) / (1.0 + cK) ** 2,
            beta=((1.0 + cK) * sk - 1.0 + cK) / ((1.0 + cK) * sk + 1.0 - cK),
        )


def chebyshev_steps(gamma: float) -> int:
    """``K = floor(1 / sqrt(gamma))`` (at least 1; rounding noise in gamma ignored)."""
    return max(1, math.floor(1.0 / math.sqrt(gamma) + 1e-9))


@ALGORITHMS.register("msda")
class MSDA(Algorithm):
    """MSDA on node-batched rows (state ``x``, ``y`` dual, ``theta`` primal: ``[k, dim]``)."""

    Config = MSDAConfig
    requires = frozenset({"connected", Capability.CONJUGATE_GRADIENTS})
    roles = ("gossip", "client")
    # x, y, theta plus the round's conjugate gradient (float64), the Chebyshev recursion's
    # prev/cur/next, u - cur and the new x, y
    state_tensors = 10

    def __init__(self, config: AlgorithmConfig, ctx: WorkerContext) -> None:
        super().__init__(config, ctx)
        cfg: Any = config
        mu, L = worker_curvature(cfg, ctx)
        (member,) = topology_members(ctx.comm.topology, cfg.name)
        self.mu, self.L = mu, L
        self.member = member
        self.consts = MSDAConstants.from_problem(mu, L, member)
        # registered once: the comm compiles its gather plan for the handle
        self._op: OperatorHandle = ctx.comm.register_operator(
            shifted(member.lap, self.consts.c3), "msda operator I - c3 Lap"
        )

    @classmethod
    def plan_facts(cls, config: AlgorithmConfig, plan: Any, oracle: Any) -> dict[str, Any]:
        """The worst-case ``mu`` and ``L`` over every data node, once at compile time."""
        return curvature_facts(config, plan, oracle)

    def derived_constants(self) -> dict[str, Constant]:
        """mu, L, the Laplacian's extreme eigenvalues and the Chebyshev and step constants."""
        return {
            "mu": self.mu,
            "L": self.L,
            "lambda_min": self.member.lam_min,
            "lambda_max": self.member.lam_max,
            **asdict(self.consts),
        }

    @classmethod
    def check_plan(cls, config: AlgorithmConfig, plan: Any) -> None:
        topo = plan.topology
        if topo.is_time_varying:
            raise ConfigError(
                f"topology.name: msda runs on a fixed graph, but {topo.name!r} is "
                "time-varying; choose a static topology or algorithm.name: adom_plus"
            )

    def init_state(self) -> State:
        ctx = self.ctx
        theta = ctx.oracle.init_params(ctx.data_rows).to(device=ctx.device, dtype=ctx.dtype)
        zero = torch.zeros_like(theta)
        return {"x": zero, "y": zero.clone(), "theta": theta.contiguous()}

    def _accelerated_gossip(self, u: torch.Tensor, t: int) -> torch.Tensor:
        """``u - T_K(c2 (I - c3 W)) u / T_K(c2)``: ``K`` metered gossip steps."""
        c, comm = self.consts, self.ctx.comm
        cur = comm.mix(u, t, "dual", op=self._op)  # u_1 / a_1 = (I - c3 W) u
        prev, a_prev, a_cur = u, 1.0, c.c2
        for _ in range(1, c.K):
            a_next = 2.0 * c.c2 * a_cur - a_prev
            nxt = comm.mix(cur, t, "dual", op=self._op).mul_(2.0 * c.c2 * a_cur / a_next)
            nxt.sub_(prev, alpha=a_prev / a_next)
            prev, cur, a_prev, a_cur = cur, nxt, a_cur, a_next
        return u - cur

    def round(self, state: State, t: int) -> None:
        c, ctx = self.consts, self.ctx
        x, y = state["x"], state["y"]
        theta = ctx.oracle.conjugate_grad(x, ctx.data_rows).to(ctx.dtype)
        ctx.comm.compute(torch.arange(len(ctx.data_rows)), 1, t)
        y_new = x - c.eta * self._accelerated_gossip(theta, t)
        state["x"] = (1.0 + c.beta) * y_new - c.beta * y
        state["y"] = y_new
        state["theta"] = theta

    def output(self, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ctx.hosted, state["theta"]

    @classmethod
    def analytic_traffic(cls, config: AlgorithmConfig, plan: Any, rounds: int) -> int:
        """``rounds * K`` gossip steps, each one message per directed edge."""
        (member,) = topology_members(plan.topology, config.name)
        K = chebyshev_steps(member.lam_min / member.lam_max)
        return rounds * K * len(plan.topology.edges)

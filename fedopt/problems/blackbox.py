"""Black-box federated test functions for zeroth-order methods (FZooS, FedZO).

Client ``i`` can only *query* its objective (capability ``noisy_queries``): it observes
``y = f_i(x) + noise_std * N(0, 1)``, the noise keyed by (seed, "query", data rank,
step). These problems have **no gradients**: ``grad``, ``full_grad`` and ``sgd_step_``
raise ``TypeError``, :attr:`Oracle.has_gradients` is False and the compiler refuses
them to any algorithm that is not zeroth-order (and refuses ``eval.grad_norm``).

The domain is ``[0, 1]^d``, implemented *inside* the function (spec ``fzoos.md``
§2.1, pitfall P7): iterates may leave the box; every ``f_i`` first clips ``x`` to
``[0, 1]^d`` and maps it to the problem box ``u = 20 x - 10 in [-10, 10]^d``, so the
function is flat outside the box. No algorithm projects.

Heterogeneity ``C`` (``heterogeneity``) enters through Dirichlet weights: for every
coordinate ``j`` the vectors ``(a_1j, ..., a_Nj)`` and ``(b_1j, ..., b_Nj)`` over the
``N`` clients are independent draws of ``Dirichlet(1/N * 1)``, so ``sum_i a_ij = 1``
and the clients' deviations ``C (a_ij - 1/N)`` average to zero. Every worker draws the
``N`` rows in rank order (one generator per rank: ``numpy_seed(seed, purpose, rank)``,
gamma variates in log space so that small shapes ``1/N`` cannot underflow) and keeps
its own, so a client's function does not depend on placement. ``p_i = 1/N`` and every
client starts from the same ``x_0 ~ U[0, 1]^d`` (keyed by (seed, "init", 0, 0)).

==================  =============================================================
``zo_quadratic``    ``f_i(x) = (1/(10d)) (sum_j [(1 + C(a_ij - 1/N)) u_j^2 +
                    (1 + C(b_ij - 1/N)) u_j] + 1)``, so for every ``C``
                    ``F(x) = (1/(10d)) (sum_j (u_j^2 + u_j) + 1)``, minimised at
                    ``u_j = -1/2`` (``x_j = 0.475``) with ``F* = -1/40 + 1/(10d)``;
                    local curvatures are negative for ``C > N`` (FZooS App. 12.1)
``ackley``          ``f_i(x) = ackley(c_i (u - s_i))``, ``c_ij = 0.1 + C(a_ij - 1/N)``,
                    ``s_ij = C(b_ij - 1/N)``
``levy``            ``f_i(x) = levy(c_i (u - s_i))`` (same ``c_i``, ``s_i``)
==================  =============================================================

Evaluation reports ``loss = F(x) = sum_i p_i f_i(x)`` (exact values, no noise, not
counted as queries), and for ``zo_quadratic`` ``loss_gap = F(x) - F*`` in closed form
(``(1/(10d)) sum_j (u_j + 1/2)^2``, exact and >= 0) and ``distance_to_opt``.

References: Shu et al., "Federated Zeroth-Order Optimization using Trajectory-Informed
Surrogate Gradients" (FZooS), App. 12.1; Ackley (1987); Levy & Montalvo (1985), in the
forms of Surjanovic & Bingham's Virtual Library of Simulation Experiments.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from fedopt import rng
from fedopt.fields import DIM_MAX
from fedopt.problems._common import DTYPES, DTypeName, check_ranks, coerce_config
from fedopt.problems.base import OptimumStats, Oracle, Problem, ProblemConfig, Step
from fedopt.problems.capabilities import Capability, CountedQueries
from fedopt.problems.registry import PROBLEMS

BOX = 10.0
"""Half-width of the problem box: ``u = 2 BOX x - BOX`` maps ``[0, 1]`` to ``[-10, 10]``."""


def to_box(X: torch.Tensor) -> torch.Tensor:
    """``u = 20 clip(x, 0, 1) - 10`` (float64): the clipping inside every ``f_i`` (P7)."""
    return X.double().clamp(0.0, 1.0).mul(2 * BOX).sub(BOX)


def dirichlet_rows(
    seed: int, purpose: str, ranks: torch.Tensor, num_clients: int, dim: int
) -> torch.Tensor:
    """Rows ``ranks`` of an ``[N, dim]`` matrix whose columns are ``Dirichlet(1/N * 1)``.

    Column ``j`` is ``G_ij / sum_i G_ij`` with ``G_ij ~ Gamma(1/N)`` drawn as
    ``log G = log Gamma(1 + 1/N) + N log U`` (Marsaglia-Tsang's boost, in log space, so
    no variate underflows to 0 for large ``N``), one generator per rank. The
    normaliser is a log-sum-exp over all ``N`` ranks in rank order, so every worker
    computes the same bits for a rank wherever it is hosted. Float64 ``[k, dim]``.
    """
    a = 1.0 / num_clients
    wanted = {int(r): i for i, r in enumerate(ranks.tolist())}
    out = np.zeros((len(ranks), dim))
    top = np.full(dim, -np.inf)
    total = np.zeros(dim)
    for r in range(num_clients):  # online log-sum-exp in rank order
        gen = np.random.default_rng(rng.numpy_seed(seed, purpose, r))
        log_g = np.log(gen.standard_gamma(1.0 + a, dim)) + np.log1p(-gen.random(dim)) / a
        if r in wanted:
            out[wanted[r]] = log_g
        new_top = np.maximum(top, log_g)
        total = total * np.exp(top - new_top) + np.exp(log_g - new_top)
        top = new_top
    out = np.exp(out - top - np.log(total))
    return torch.from_numpy(out).to(ranks.device)


class BlackBoxConfig(ProblemConfig):
    """Hyperparameters shared by the black-box problems."""

    dim: int = Field(300, ge=1, le=DIM_MAX, description="number of parameters d")
    heterogeneity: float = Field(
        5.0,
        ge=0,
        allow_inf_nan=False,
        description="C: scale of the clients' Dirichlet deviations (0 = identical clients)",
    )
    dtype: DTypeName = Field("float64", description="dtype of the parameters")


class ZOQuadraticConfig(BlackBoxConfig):
    """Hyperparameters of ``zo_quadratic`` (FZooS's synthetic quadratic)."""

    name: Literal["zo_quadratic"] = "zo_quadratic"


class AckleyConfig(BlackBoxConfig):
    """Hyperparameters of ``ackley``."""

    name: Literal["ackley"] = "ackley"
    form: Literal["standard", "reference"] = Field(
        "standard",
        description="standard: cos(2 pi z); reference: the FZooS code's cos(pi z)",
    )


class LevyConfig(BlackBoxConfig):
    """Hyperparameters of ``levy``."""

    name: Literal["levy"] = "levy"
    form: Literal["standard", "reference"] = Field(
        "standard",
        description="standard: the sum starts at j = 1; reference: the FZooS code's j = 2",
    )


class BlackBoxOracle(CountedQueries, Oracle):
    """Base oracle of the black-box problems: coefficients, init, refused gradients.

    Attributes
    ----------
    A, B
        ``[k, dim]`` float64 rows of the two Dirichlet matrices (``a_i``, ``b_i``).
    """

    capabilities = frozenset({Capability.NOISY_QUERIES})
    has_gradients: ClassVar[bool] = False

    def __init__(
        self,
        config: BlackBoxConfig,
        seed: int,
        data_ranks: torch.Tensor,
        num_data_nodes: int,
        device: torch.device,
    ) -> None:
        self.config = config
        self.seed = int(seed)
        self.dim = config.dim
        self.dtype = DTYPES[config.dtype]
        self.data_ranks = check_ranks(data_ranks, num_data_nodes, device)
        self.num_clients = int(num_data_nodes)
        k = len(self.data_ranks)
        self.weights = torch.full((k,), 1.0 / num_data_nodes, dtype=torch.float64, device=device)
        self.num_samples = torch.ones(k, dtype=torch.float64, device=device)
        n, d = self.num_clients, config.dim
        self.A = dirichlet_rows(self.seed, f"{config.name}/a", self.data_ranks, n, d)
        self.B = dirichlet_rows(self.seed, f"{config.name}/b", self.data_ranks, n, d)

    def init_params(self, rows: torch.Tensor) -> torch.Tensor:
        """``x_0 ~ U[0, 1]^d``, the same for every node (keyed by (seed, "init", 0, 0))."""
        keys = rng.node_keys(self.seed, "init", torch.zeros_like(rows), 0)
        return rng.uniform(keys, self.dim, torch.float64).to(self.dtype)

    def grad(self, X: torch.Tensor, rows: torch.Tensor, step: Step) -> torch.Tensor:
        """Refused: a black box has no gradients (``TypeError`` naming the fix)."""
        raise TypeError(
            f"problem {self.config.name!r} is a black box: f_i can only be queried "
            "(capability 'noisy_queries'), it has no gradients; use a zeroth-order "
            "algorithm (fedzo, fedprox_zo, scaffold_zo1, scaffold_zo2)"
        )

    def full_grad(self, X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.grad(X, rows, 0)

    def sgd_step_(self, X: torch.Tensor, rows: torch.Tensor, step: Step, lr: float) -> None:
        self.grad(X, rows, step)

    def deviations(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``C (a_i - 1/N)`` and ``C (b_i - 1/N)`` of ``rows``: ``[k, dim]`` float64 each."""
        C, mean = self.config.heterogeneity, 1.0 / self.num_clients
        A = self.A.index_select(0, rows)
        B = self.B.index_select(0, rows)
        return C * (A - mean), C * (B - mean)


class ZOQuadraticOracle(BlackBoxOracle):
    """``f_i(x) = (1/(10d)) (sum_j [alpha_ij u_j^2 + beta_ij u_j] + 1)``, ``u = 20 clip(x) - 10``.

    ``alpha_i = 1 + C (a_i - 1/N)``, ``beta_i = 1 + C (b_i - 1/N)``; both average to 1
    over clients, so ``F`` does not depend on ``C``.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        rows = torch.arange(len(self.data_ranks), device=self.data_ranks.device)
        dev_a, dev_b = self.deviations(rows)
        self.alpha = 1.0 + dev_a
        self.beta = 1.0 + dev_b

    def value(self, X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        u = to_box(X)
        alpha = self.alpha.index_select(0, rows)
        beta = self.beta.index_select(0, rows)
        return ((alpha * u + beta) * u).sum(dim=1).add(1.0).div(10.0 * self.dim)

    def true_gradients(
        self, X: torch.Tensor, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(grad F(X), grad f_i(X))`` in closed form, ``[k, dim]`` float64 each.

        For diagnostics only (:mod:`fedopt.algorithms.zo_trace`): no query is counted.
        ``grad f_i = (2 BOX / (10 d)) (2 alpha_i u + beta_i)`` inside the box and 0 where
        ``x`` is clipped (``alpha = beta = 1`` for ``F``).
        """
        X = X.to(torch.float64)
        u = to_box(X)
        inside = ((X > 0.0) & (X < 1.0)).to(torch.float64) * (2.0 * BOX / (10.0 * self.dim))
        alpha = self.alpha.index_select(0, rows).to(torch.float64)
        beta = self.beta.index_select(0, rows).to(torch.float64)
        return (2.0 * u + 1.0) * inside, (2.0 * alpha * u + beta) * inside

    @staticmethod
    def optimum_value(dim: int) -> float:
        """``F* = -1/40 + 1/(10 d)`` at ``x_j = 0.475`` (``u_j = -1/2``)."""
        return -0.025 + 1.0 / (10.0 * dim)

    def evaluate_test(self, x: torch.Tensor) -> dict[str, float]:
        """``loss_gap = F(x) - F* = (1/(10d)) sum_j (u_j + 1/2)^2`` (closed form, exact)."""
        u = to_box(x.reshape(1, -1))
        return {"loss_gap": float((u + 0.5).square().sum() / (10.0 * self.dim))}

    def optimum_stats(self) -> OptimumStats:
        """Per-node curvature and offset in ``x`` of the unclipped quadratic (``x* = 0.475``).

        ``f_i = (1/(10d)) sum_j [alpha (20x - 10)^2 + beta (20x - 10)] + const`` has
        ``H_i = 800 alpha_i / (10d)`` and ``H_i x*_i = (400 alpha_i - 20 beta_i) / (10d)``;
        the sums over clients give ``x* = 380/800 = 0.475`` inside the box, so clipping
        does not move it. Single ``H_i`` may be negative (``C > N``); their sum is not.
        """
        p = self.weights.unsqueeze(1) / (10.0 * self.dim)
        H = p * 800.0 * self.alpha
        g = p * (400.0 * self.alpha - 20.0 * self.beta)
        return OptimumStats(self.data_ranks.clone(), H, g)


class ShiftedOracle(BlackBoxOracle):
    """``f_i(x) = base(c_i (u - s_i))`` with ``c_i = 0.1 + C(a_i - 1/N)``, ``s_i = C(b_i - 1/N)``.

    The FZooS code's construction for Ackley and Levy: with ``C = 0`` every client has
    ``z = u / 10 in [-1, 1]^d``.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        rows = torch.arange(len(self.data_ranks), device=self.data_ranks.device)
        dev_a, dev_b = self.deviations(rows)
        self.scale = 0.1 + dev_a
        self.shift = dev_b

    def base(self, Z: torch.Tensor) -> torch.Tensor:
        """The test function on ``[k, dim]`` float64 points: ``[k]``."""
        raise NotImplementedError

    def value(self, X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        Z = self.scale.index_select(0, rows) * (to_box(X) - self.shift.index_select(0, rows))
        return self.base(Z)


class AckleyOracle(ShiftedOracle):
    """Ackley: ``-a exp(-b ||z|| / sqrt(d)) - exp(mean_j cos(c z_j)) + a + e``.

    ``a = 20``, ``b = 0.2``, ``c = 2 pi`` (standard); ``ackley(0) = 0`` is the minimum.
    ``form: reference`` uses the FZooS code's ``c = pi`` (its other constants and the
    ``||z|| / sqrt(d)`` form of the first term are the standard ones).
    """

    def base(self, Z: torch.Tensor) -> torch.Tensor:
        a, b = 20.0, 0.2
        c = math.pi if self.config.form == "reference" else 2.0 * math.pi  # type: ignore[attr-defined]
        d = Z.shape[1]
        norm = Z.square().sum(dim=1).sqrt()
        return (
            -a * torch.exp(-b * norm / math.sqrt(d))
            - torch.exp(torch.cos(c * Z).sum(dim=1) / d)
            + a
            + math.e
        )


class LevyOracle(ShiftedOracle):
    """Levy: with ``w = 1 + (z - 1)/4``,

    ``sin^2(pi w_1) + sum_{j=1}^{d-1} (w_j - 1)^2 (1 + 10 sin^2(pi w_j + 1))
    + (w_d - 1)^2 (1 + sin^2(2 pi w_d))``; ``levy(1) = 0`` is the minimum.

    ``form: reference`` starts the sum at ``j = 2`` as the FZooS code does (its slice
    ``w[1:d-1]`` drops the ``j = 1`` term).
    """

    def base(self, Z: torch.Tensor) -> torch.Tensor:
        W = 1.0 + (Z - 1.0) / 4.0
        first = 1 if self.config.form == "reference" else 0  # type: ignore[attr-defined]
        mid = W[:, first : W.shape[1] - 1]
        terms = (mid - 1.0).square() * (1.0 + 10.0 * torch.sin(math.pi * mid + 1.0).square())
        last = W[:, -1]
        return (
            torch.sin(math.pi * W[:, 0]).square()
            + terms.sum(dim=1)
            + (last - 1.0).square() * (1.0 + torch.sin(2.0 * math.pi * last).square())
        )


class BlackBox(Problem):
    """Base of the registered black-box problems (no gradients)."""

    Config: ClassVar[type[BlackBoxConfig]]

    @classmethod
    def data_bytes(cls, config: ProblemConfig, num_nodes: int) -> tuple[int, str]:
        """Four float64 ``[k, dim]`` coefficient rows, the two Dirichlet draws and four
        float64 evaluation temporaries per node."""
        cfg = coerce_config(config, cls.Config, "problem")
        per = 10 * 8
        return num_nodes * cfg.dim * per, f"{num_nodes:,} nodes x {cfg.dim:,} x {per} B"

    @staticmethod
    def summary(config: ProblemConfig) -> dict[str, object]:
        return {
            "dim": config.dim,  # type: ignore[attr-defined]
            "heterogeneity": config.heterogeneity,  # type: ignore[attr-defined]
            "gradients": False,
        }


@PROBLEMS.register("zo_quadratic")
class ZOQuadratic(BlackBox):
    """FZooS's synthetic quadratic with heterogeneity ``C`` (closed-form ``F``, ``F*``)."""

    Config = ZOQuadraticConfig
    oracle_class = ZOQuadraticOracle


@PROBLEMS.register("ackley")
class Ackley(BlackBox):
    """Ackley's function on client-scaled, client-shifted coordinates (black box)."""

    Config = AckleyConfig
    oracle_class = AckleyOracle


@PROBLEMS.register("levy")
class Levy(BlackBox):
    """Levy's function on client-scaled, client-shifted coordinates (black box)."""

    Config = LevyConfig
    oracle_class = LevyOracle

"""Heterogeneous diagonal quadratics with a closed-form optimum (``quadratic``).

Node ``i`` holds

.. math::

    f_i(x) = \\tfrac12 (x - b_i)^\\top A_i (x - b_i),
    \\qquad A_i = \\mathrm{diag}(a_i),\\; a_{i,j} \\in [\\mu, L],

and the objective is ``F(x) = (1/n) sum_i f_i(x)`` over the ``n`` data nodes. Each
``f_i`` is ``mu``-strongly convex and ``L``-smooth. For ``dim >= 2`` the first
coordinate of every ``a_i`` is exactly ``mu`` and the last exactly ``L`` (the others are
uniform in ``[mu, L]``), so ``F`` has condition number exactly ``L / mu``.

The centres are ``b_i = center * 1 + heterogeneity * N(0, I)``: with
``heterogeneity = 0`` every node has the same minimiser ``center * 1``. Stochastic
gradients add ``noise_std * N(0, I)`` to the exact gradient. The optimum is
``x* = H^{-1} g`` with ``H = sum_i p_i A_i`` and ``g = sum_i p_i A_i b_i``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from fedopt import rng
from fedopt.fields import DIM_MAX
from fedopt.problems._common import DTYPES, DTypeName, check_ranks, coerce_config
from fedopt.problems.base import OptimumStats, Oracle, Problem, ProblemConfig, Step
from fedopt.problems.capabilities import Capability, CountedQueries
from fedopt.problems.registry import PROBLEMS


class QuadraticConfig(ProblemConfig):
    """Hyperparameters of the ``quadratic`` problem."""

    name: Literal["quadratic"] = "quadratic"
    dim: int = Field(10, ge=1, le=DIM_MAX, description="number of parameters")
    mu: float = Field(1.0, gt=0, allow_inf_nan=False, description="smallest curvature")
    L: float = Field(10.0, gt=0, allow_inf_nan=False, description="largest curvature (>= mu)")
    heterogeneity: float = Field(
        1.0, ge=0, allow_inf_nan=False, description="scale of the node centres b_i ~ N(0, I)"
    )
    center: float = Field(
        0.0, allow_inf_nan=False, description="common offset of the centres: b_i = center * 1 + ..."
    )
    noise_std: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="std of the Gaussian gradient noise"
    )
    init_scale: float = Field(
        1.0, ge=0, allow_inf_nan=False, description="initial parameters ~ init_scale * N(0, I)"
    )
    same_init: bool = Field(True, description="every node starts from data rank 0's draw")
    dtype: DTypeName = Field("float32", description="dtype of parameters and data")

    @model_validator(mode="after")
    def _mu_below_l(self) -> QuadraticConfig:
        if self.L < self.mu:
            raise ValueError(
                f"problem.L: must be >= problem.mu (got L={self.L}, mu={self.mu}); "
                "raise L or lower mu."
            )
        return self


class QuadraticOracle(CountedQueries, Oracle):
    """Oracle of :class:`QuadraticConfig` for the hosted data nodes.

    Capabilities: ``conjugate_gradients`` (closed form) and ``noisy_queries``
    (exact values plus Gaussian noise, :class:`~fedopt.problems.capabilities.CountedQueries`).

    Attributes
    ----------
    A
        ``[k, dim]`` diagonal curvatures ``a_i``.
    b
        ``[k, dim]`` centres ``b_i``.
    """

    capabilities = frozenset({Capability.CONJUGATE_GRADIENTS, Capability.NOISY_QUERIES})

    def __init__(
        self,
        config: QuadraticConfig,
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
        k, d = len(self.data_ranks), config.dim
        self.weights = torch.full((k,), 1.0 / num_data_nodes, dtype=torch.float64, device=device)
        self.num_samples = torch.ones(k, dtype=torch.float64, device=device)

        u = rng.uniform(rng.node_keys(self.seed, "curvature", self.data_ranks, 0), d, torch.float64)
        a = config.mu + (config.L - config.mu) * u
        if d >= 2:
            a[:, 0] = config.mu
            a[:, -1] = config.L
        z = rng.normal(rng.node_keys(self.seed, "center", self.data_ranks, 0), d, torch.float64)
        self.A = a.to(self.dtype)
        self.b = (config.center + config.heterogeneity * z).to(self.dtype)

    def _ranks(self, rows: torch.Tensor) -> torch.Tensor:
        return self.data_ranks.index_select(0, rows)

    def init_params(self, rows: torch.Tensor) -> torch.Tensor:
        ranks = self._ranks(rows)
        if self.config.same_init:
            ranks = torch.zeros_like(ranks)
        z = rng.normal(rng.node_keys(self.seed, "init", ranks, 0), self.dim, torch.float64)
        return (self.config.init_scale * z).to(self.dtype)

    def full_grad(self, X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        A = self.A.index_select(0, rows)
        b = self.b.index_select(0, rows)
        return A * (X.to(self.dtype) - b)

    def grad(self, X: torch.Tensor, rows: torch.Tensor, step: Step) -> torch.Tensor:
        g = self.full_grad(X, rows)
        if self.config.noise_std > 0:
            keys = rng.node_keys(self.seed, "noise", self._ranks(rows), step)
            g.add_(rng.normal(keys, self.dim, self.dtype), alpha=self.config.noise_std)
        return g

    def value(self, X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        A = self.A.index_select(0, rows).double()
        d = X.double() - self.b.index_select(0, rows).double()
        return 0.5 * (A * d * d).sum(dim=1)

    def conjugate_grad(self, Y: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``grad f_i*(y) = y / a_i + b_i`` (diagonal curvature ``a_i > 0``)."""
        A = self.A.index_select(0, rows).double()
        return Y.double() / A + self.b.index_select(0, rows).double()

    def curvature_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Diagonal curvature: ``mu_i = min_j A_i[j]``, ``L_i = max_j A_i[j]``."""
        A = self.A.double()
        return A.min(dim=1).values, A.max(dim=1).values

    def optimum_stats(self) -> OptimumStats:
        p = self.weights.unsqueeze(1)
        A = self.A.double()
        # diagonal curvature: one [dim] row per node, O(k dim) memory at any dim
        return OptimumStats(self.data_ranks.clone(), p * A, p * A * self.b.double())


@PROBLEMS.register("quadratic")
class Quadratic(Problem):
    """Diagonal quadratics ``f_i(x) = 1/2 (x - b_i)^T A_i (x - b_i)``, ``p_i = 1/n``."""

    Config = QuadraticConfig

    oracle_class = QuadraticOracle

    @classmethod
    def data_bytes(cls, config: ProblemConfig, num_nodes: int) -> tuple[int, str]:
        """Curvatures and centres ``A, b`` plus five float64 ``[k, dim]`` temporaries of
        the evaluation (``A``, ``x - b`` and their products) and of the optimum."""
        cfg = coerce_config(config, QuadraticConfig, "problem")
        per = 2 * cls.param_itemsize(cfg) + 5 * 8
        return num_nodes * cfg.dim * per, f"{num_nodes:,} nodes x {cfg.dim:,} x {per} B"

    @staticmethod
    def summary(config: ProblemConfig) -> dict[str, object]:
        cfg = coerce_config(config, QuadraticConfig, "problem")
        return {
            "dim": cfg.dim,
            "condition_number": cfg.L / cfg.mu,
            "stochastic": cfg.noise_std > 0,
        }

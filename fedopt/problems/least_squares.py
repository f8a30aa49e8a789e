"""Distributed linear least squares with a closed-form optimum (``least_squares``).

Node ``i`` holds ``m`` samples ``(A_i, b_i)``, ``A_i`` of shape ``[m, dim]``, and

.. math::

    f_i(x) = \\frac{1}{2m} \\lVert A_i x - b_i \\rVert^2 + \\frac{\\lambda}{2} \\lVert x \\rVert^2,

with ``F(x) = (1/n) sum_i f_i(x)`` (all nodes have ``m`` samples, so ``p_i = 1/n``).
Data: rows of ``A_i`` are ``N(0, I)``; ``b_i = A_i x_i + noise * N(0, 1)`` where the
node's ground truth is ``x_i = x_true + heterogeneity * N(0, I)`` and ``x_true ~ N(0, I)``
is shared by all nodes. The optimum is ``x* = H^{-1} g`` with
``H = sum_i p_i (A_i^T A_i / m + lambda I)`` and ``g = sum_i p_i A_i^T b_i / m``.

Stochastic gradients use ``batch_size`` rows drawn with replacement, keyed by
``(seed, "batch", data rank, step)``; ``batch_size`` 0 or ``>= m`` gives the full gradient.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from fedopt import rng
from fedopt.fields import COUNT_MAX, DIM_MAX
from fedopt.problems._common import (
    DTYPES,
    DTypeName,
    bmm,
    check_ranks,
    clip_radii,
    coerce_config,
    linear_clipped_mean,
    linear_clipped_sum,
    linear_per_sample,
    row_chunks,
    sample_chunk,
    sample_mask,
    sample_slices,
    take,
)
from fedopt.problems.base import OptimumStats, Oracle, Problem, ProblemConfig, Step
from fedopt.problems.capabilities import Capability, CountedQueries
from fedopt.problems.registry import PROBLEMS


class LeastSquaresConfig(ProblemConfig):
    """Hyperparameters of the ``least_squares`` problem."""

    name: Literal["least_squares"] = "least_squares"
    dim: int = Field(10, ge=1, le=DIM_MAX, description="number of parameters")
    samples_per_node: int = Field(100, ge=1, le=COUNT_MAX, description="rows m of each node's A_i")
    batch_size: int = Field(
        0,
        ge=0,
        le=COUNT_MAX,
        description="rows per stochastic gradient (with replacement); 0 = full batch",
    )
    noise: float = Field(0.1, ge=0, allow_inf_nan=False, description="std of the label noise")
    l2: float = Field(0.0, ge=0, allow_inf_nan=False, description="ridge coefficient lambda")
    heterogeneity: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="std of each node's shift of x_true"
    )
    init_scale: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="initial parameters ~ init_scale * N(0, I)"
    )
    same_init: bool = Field(True, description="every node starts from data rank 0's draw")
    dtype: DTypeName = Field("float32", description="dtype of parameters and data")


class LeastSquaresOracle(CountedQueries, Oracle):
    """Oracle of :class:`LeastSquaresConfig` for the hosted data nodes.

    Capabilities: ``conjugate_gradients`` (needs every ``A_i^T A_i / m + l2 I``
    invertible), ``noisy_queries`` (exact values plus Gaussian noise) and
    ``per_sample_gradients``: sample ``s`` of the minibatch has the loss
    ``(a_s^T x - b_s)^2 / 2 + l2/2 ||x||^2``, gradient ``(a_s^T x - b_s) a_s + l2 x``.

    Attributes
    ----------
    A
        ``[k, m, dim]`` design matrices.
    b
        ``[k, m]`` targets.
    """

    capabilities = frozenset(
        {
            Capability.CONJUGATE_GRADIENTS,
            Capability.NOISY_QUERIES,
            Capability.PER_SAMPLE_GRADIENTS,
        }
    )

    def __init__(
        self,
        config: LeastSquaresConfig,
        seed: int,
        data_ranks: torch.Tensor,
        num_data_nodes: int,
        device: torch.device,
    ) -> None:
        self.config = config
        self.seed = int(seed)
        self.dim = d = config.dim
        self.m = m = config.samples_per_node
        self.dtype = DTYPES[config.dtype]
        self.data_ranks = ranks = check_ranks(data_ranks, num_data_nodes, device)
        k = len(ranks)
        self.weights = torch.full((k,), 1.0 / num_data_nodes, dtype=torch.float64, device=device)
        self.num_samples = torch.full((k,), float(m), dtype=torch.float64, device=device)
        self.batch_size = 0 if config.batch_size >= m else config.batch_size

        zero = torch.zeros(1, dtype=torch.int64, device=device)
        x_true = rng.normal(rng.node_keys(self.seed, "x_true", zero, 0), d, torch.float64)
        shift = rng.normal(rng.node_keys(self.seed, "hetero", ranks, 0), d, torch.float64)
        x_node = x_true + config.heterogeneity * shift  # [k, d]
        self.A = torch.empty(k, m, d, dtype=self.dtype, device=device)
        self.b = torch.empty(k, m, dtype=self.dtype, device=device)
        for sl in row_chunks(k, m * d * 8 * 3):
            A = rng.normal(rng.node_keys(self.seed, "features", ranks[sl], 0), m * d, torch.float64)
            A = A.view(-1, m, d)
            eps = rng.normal(
                rng.node_keys(self.seed, "label_noise", ranks[sl], 0), m, torch.float64
            )
            b = (A * x_node[sl].unsqueeze(1)).sum(dim=2) + config.noise * eps
            self.A[sl] = A
            self.b[sl] = b
        self._A_flat = self.A.view(k * m, d)
        self._b_flat = self.b.view(k * m)

    def _ranks(self, rows: torch.Tensor) -> torch.Tensor:
        return self.data_ranks.index_select(0, rows)

    def init_params(self, rows: torch.Tensor) -> torch.Tensor:
        ranks = self._ranks(rows)
        if self.config.same_init:
            ranks = torch.zeros_like(ranks)
        z = rng.normal(rng.node_keys(self.seed, "init", ranks, 0), self.dim, torch.float64)
        return (self.config.init_scale * z).to(self.dtype)

    def batch_indices(self, rows: torch.Tensor, step: Step) -> torch.Tensor:
        """``[len(rows), batch_size]`` sample indices of each node's minibatch at ``step``."""
        keys = rng.node_keys(self.seed, "batch", self._ranks(rows), step)
        return rng.randint(keys, self.batch_size, self.m)

    def _grad_block(self, A: torch.Tensor, b: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """Mean squared-residual gradient ``A^T (A w - b) / rows`` for a block ``[c, r, d]``."""
        r = bmm(A, W.unsqueeze(2)).squeeze(2).sub_(b)  # [c, r]
        return bmm(r.unsqueeze(1), A).squeeze(1).div_(A.shape[1])

    def full_grad(self, X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        W = X.to(self.dtype)
        out = torch.empty_like(W)
        for sl in row_chunks(len(rows), self.m * self.dim * 4):
            r = rows[sl]
            out[sl] = self._grad_block(take(self.A, r), take(self.b, r), W[sl])
        if self.config.l2 > 0:
            out.add_(W, alpha=self.config.l2)
        return out

    def grad(self, X: torch.Tensor, rows: torch.Tensor, step: Step) -> torch.Tensor:
        if self.batch_size == 0:
            return self.full_grad(X, rows)
        W = X.to(self.dtype)
        n, B = len(rows), self.batch_size
        flat = self.batch_indices(rows, step).add_(rows.unsqueeze(1) * self.m).view(-1)
        A = self._A_flat.index_select(0, flat).view(n, B, self.dim)
        b = self._b_flat.index_select(0, flat).view(n, B)
        out = self._grad_block(A, b, W)
        if self.config.l2 > 0:
            out.add_(W, alpha=self.config.l2)
        return out

    def value(self, X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        W = X.to(self.dtype).double()
        out = torch.empty(len(rows), dtype=torch.float64, device=X.device)
        for sl in row_chunks(len(rows), self.m * self.dim * 8):
            r = rows[sl]
            A = take(self.A, r).double()
            res = bmm(A, W[sl].unsqueeze(2)).squeeze(2).sub_(take(self.b, r).double())
            out[sl] = res.square().sum(dim=1) / (2 * self.m)
        if self.config.l2 > 0:
            out.add_(W.square().sum(dim=1), alpha=self.config.l2 / 2)
        return out

    # ------------------------------------------------------------------ per-sample gradients

    def _batch(self, rows: torch.Tensor, step: Step) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``[k, b, dim]`` and targets ``[k, b]`` of :meth:`grad`'s minibatch."""
        if self.batch_size == 0:
            return take(self.A, rows), take(self.b, rows)
        n, B = len(rows), self.batch_size
        flat = self.batch_indices(rows, step).add_(rows.unsqueeze(1) * self.m).view(-1)
        return (
            self._A_flat.index_select(0, flat).view(n, B, self.dim),
            self._b_flat.index_select(0, flat).view(n, B),
        )

    def _residuals(
        self, X: torch.Tensor, rows: torch.Tensor, step: Step
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        W = X.to(self.dtype)
        A, b = self._batch(rows, step)
        r = bmm(A, W.unsqueeze(2)).squeeze(2).sub_(b)
        decay = W * self.config.l2 if self.config.l2 > 0 else None
        return A, r, decay

    def per_sample_grad(self, X: torch.Tensor, rows: torch.Tensor, step: Step) -> torch.Tensor:
        """``[k, b, dim]``: ``(a_s^T x - b_s) a_s + l2 x`` for each sample of the minibatch.

        ``b`` is ``batch_size`` (``samples_per_node`` for the full batch); the mean over
        the samples is :meth:`grad`.
        """
        return linear_per_sample(*self._residuals(X, rows, step))

    def clipped_mean_grad(
        self, X: torch.Tensor, rows: torch.Tensor, step: Step, clip: float
    ) -> torch.Tensor:
        """``[k, dim]``: mean over the minibatch of the per-sample gradients clipped to
        norm ``clip`` (without the ``[k, b, dim]`` tensor)."""
        return linear_clipped_mean(*self._residuals(X, rows, step), clip)

    @property
    def max_samples(self) -> int:
        """Samples of the largest hosted node (every node has ``samples_per_node``)."""
        return self.m

    def clipped_grad_sum(
        self,
        X: torch.Tensor,
        rows: torch.Tensor,
        clip: float | torch.Tensor,
        X_prev: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[k, dim]``: ``sum_s mask_s clip_c(g_s(x) - g_s(x'))`` over all ``m`` samples.

        ``g_s(x) = (a_s^T x - b_s) a_s + l2 x``, so the difference is
        ``(a_s^T (x - x')) a_s + l2 (x - x')`` (no ``g_s(x')`` term without ``X_prev``);
        see :meth:`fedopt.problems.capabilities.PerSampleGradients.clipped_grad_sum`.
        """
        W = X.to(self.dtype)
        k, item = len(rows), W.element_size()
        radii = clip_radii(clip, k, self.dtype, W.device)
        weight = sample_mask(mask, k, self.m, self.dtype, W.device)
        D = W if X_prev is None else W - X_prev.to(self.dtype)
        decay = D * self.config.l2 if self.config.l2 > 0 else None
        size = sample_chunk(self.dim, item)
        out = torch.zeros_like(W)
        for sl in row_chunks(k, self.m * self.dim * item):
            A, b = take(self.A, rows[sl]), take(self.b, rows[sl])
            for ss in sample_slices(self.m, size):
                Ac = A[:, ss]
                r = bmm(Ac, D[sl].unsqueeze(2)).squeeze(2)
                if X_prev is None:
                    r.sub_(b[:, ss])
                out[sl] += linear_clipped_sum(
                    Ac,
                    r,
                    None if decay is None else decay[sl],
                    radii[sl],
                    None if weight is None else weight[sl, ss],
                )
        return out

    def conjugate_grad(self, Y: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``grad f_i*(y) = H_i^{-1} (y + A_i^T b_i / m)``, ``H_i = A_i^T A_i / m + l2 I``.

        Needs every ``H_i`` invertible (``samples_per_node >= dim`` or ``l2 > 0``). The
        Cholesky factors of the hosted nodes are computed once (float64).
        """
        if getattr(self, "_chol", None) is None:
            A = self.A.double()
            eye = torch.eye(self.dim, dtype=torch.float64, device=A.device)
            H = torch.einsum("kmd,kme->kde", A, A) / self.m + self.config.l2 * eye
            chol, info = torch.linalg.cholesky_ex(H)
            if bool((info != 0).any()):
                raise ValueError(
                    "least_squares: a node's A_i^T A_i / m is singular, so f_i* is not "
                    "differentiable; use samples_per_node >= dim or problem.l2 > 0"
                )
            self._chol = chol
            self._atb = torch.einsum("kmd,km->kd", A, self.b.double()) / self.m
        rhs = (Y.double() + self._atb.index_select(0, rows)).unsqueeze(2)
        return torch.cholesky_solve(rhs, self._chol.index_select(0, rows)).squeeze(2)

    def curvature_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Extreme eigenvalues of ``A_i^T A_i / m`` plus ``l2``, per node."""
        A = self.A.double()
        eig = torch.linalg.eigvalsh(torch.einsum("kmd,kme->kde", A, A) / self.m)
        return eig[:, 0] + self.config.l2, eig[:, -1] + self.config.l2

    def optimum_stats(self) -> OptimumStats:
        d, m = self.dim, self.m
        dev = self.A.device
        k = len(self.data_ranks)
        H = torch.zeros(k, d, d, dtype=torch.float64, device=dev)
        g = torch.zeros(k, d, dtype=torch.float64, device=dev)
        for sl in row_chunks(k, m * d * 8):
            A = self.A[sl].double()
            p = self.weights[sl]
            H[sl] = torch.einsum("k,kmd,kme->kde", p, A, A) / m
            g[sl] = torch.einsum("k,kmd,km->kd", p, A, self.b[sl].double()) / m
        eye = torch.eye(d, dtype=torch.float64, device=dev)
        H += self.config.l2 * self.weights.view(-1, 1, 1) * eye
        return OptimumStats(self.data_ranks.clone(), H, g)


@PROBLEMS.register("least_squares")
class LeastSquares(Problem):
    """Linear least squares ``f_i(x) = ||A_i x - b_i||^2 / (2m) + l2/2 ||x||^2``."""

    Config = LeastSquaresConfig

    oracle_class = LeastSquaresOracle

    @classmethod
    def data_bytes(cls, config: ProblemConfig, num_nodes: int) -> tuple[int, str]:
        """``A [k, m, dim]`` and ``b [k, m]``, three float64 ``[k, dim, dim]`` curvature
        matrices (closed-form optimum, Cholesky factors or eigenvalues) and the
        row-chunk temporaries."""
        cfg = coerce_config(config, LeastSquaresConfig, "problem")
        m, d = cfg.samples_per_node, cfg.dim
        data = num_nodes * m * (d + 1) * cls.param_itemsize(cfg)
        curv = 3 * num_nodes * d * d * 8
        how = f"{num_nodes:,} nodes x {m:,} samples x {d + 1:,} values, {3 * num_nodes:,} x {d}^2"
        return data + curv + (3 * 64 << 20), how

    @staticmethod
    def summary(config: ProblemConfig) -> dict[str, object]:
        cfg = coerce_config(config, LeastSquaresConfig, "problem")
        return {
            "dim": cfg.dim,
            "samples_per_node": cfg.samples_per_node,
            "stochastic": 0 < cfg.batch_size < cfg.samples_per_node,
        }

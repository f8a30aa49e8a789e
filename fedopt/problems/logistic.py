"""Binary logistic regression, the benchmark workload (``logistic``).

Node ``i`` holds ``M`` samples ``(a_ij, y_ij)``, ``a_ij`` in ``R^D``, ``y_ij`` in
``{0, 1}``, and

.. math::

    f_i(x) = \\frac1M \\sum_{j=1}^{M} \\Big[\\log\\big(1 + e^{z_{ij}}\\big) - y_{ij} z_{ij}\\Big]
             + \\frac{\\lambda}{2} \\lVert w \\rVert^2,
    \\qquad z_{ij} = a_{ij}^\\top w \\,(+\\, c),

the mean binary cross-entropy with logits plus a ridge term on the weights ``w`` (the
optional intercept ``c``, ``bias: true``, is the last parameter and is not penalised).
All nodes have ``M`` samples, so ``p_i = M / (n M) = 1/n``.

Data (``generator: bench``) reproduce the "fedavg-logreg" benchmark of
``shared/bench``: data rank ``c`` draws from ``numpy.random.default_rng(1000 + c)``
``X = normal(size=(M, D)).astype(float32)`` and then
``y = (X @ w_true + 0.5 * normal(size=M) > 0)``, with
``w_true = default_rng(0).normal(size=D)``. With ``heterogeneity = h > 0`` node ``c``
uses ``w_true + h * N(0, I)`` drawn from ``numpy_seed(seed, "hetero", c)``.
``generator: seeded`` draws X and the label noise from ``numpy_seed(seed, "data", c)``
instead of ``1000 + c`` (``w_true`` is unchanged).

Storage and speed
-----------------
``data: materialize`` stores ``X [k, M, D]`` float32 and ``y [k, M]`` for the hosted
nodes (``4 k M (D + 1)`` bytes: 200 kB per node at the defaults). :meth:`sgd_step_`
is the hot loop's fused kernel: one gather of the minibatch rows into preallocated
buffers, one batched matrix-vector product for the logits and one ``baddbmm_`` that
applies the gradient step, as ``shared/bench/limit_fedavg.py --chunk``.

``data: regenerate`` keeps no data: each call regenerates the needed nodes' samples from
their seeds, a few nodes at a time, so 100,000 nodes fit in a few GB. The cost is
numpy's ``M * D`` normal draws per node (~1 ms at the defaults, as much as ~40 fused
minibatch steps of that node). A cache of at most ``min(256 MB, memory_budget_gb / 2)``
keeps the most recently regenerated nodes, so the local steps of a chunk of nodes
regenerate it once: FedAvg with 5 local steps ran ~10x slower than with stored data in
our measurement (570 against 5,300 client updates per second, N = 1,000), and a
workload that visits each node once per call pays ~40x. :meth:`evaluate` regenerates
every hosted node (~1 ms each). ``data: auto`` (the default) materialises unless the
hosted data would exceed ``memory_budget_gb``.
Both modes give bitwise-identical numbers.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from fedopt import rng
from fedopt.fields import COUNT_MAX, DIM_MAX, MEMORY_BUDGET_MAX_GB
from fedopt.problems._common import (
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
    sigmoid_,
    take,
)
from fedopt.problems.base import Oracle, Problem, ProblemConfig, Step
from fedopt.problems.capabilities import Capability, CountedQueries
from fedopt.problems.registry import PROBLEMS

BENCH_DATA_OFFSET = 1000
"""Data rank ``c`` of the bench generator uses ``numpy.random.default_rng(1000 + c)``."""
BENCH_LABEL_NOISE = 0.5
REGEN_BLOCK_BYTES = 32 << 20
"""Largest block of nodes regenerated at once."""
CACHE_BYTES = 256 << 20
"""Upper bound of the regenerate cache (also at most half of ``memory_budget_gb``)."""
MAX_ROWS_PER_PASS = 4096
"""Stored data: the most nodes gathered at once (bounds the minibatch buffers)."""


class LogisticConfig(ProblemConfig):
    """Hyperparameters of the ``logistic`` problem (defaults: the benchmark workload)."""

    name: Literal["logistic"] = "logistic"
    dim: int = Field(100, ge=1, le=DIM_MAX, description="number of features D")
    samples_per_node: int = Field(500, ge=1, le=COUNT_MAX, description="samples M per node")
    batch_size: int = Field(
        32,
        ge=0,
        le=COUNT_MAX,
        description="samples per stochastic gradient, drawn with replacement; "
        "0 or >= samples_per_node = full batch",
    )
    l2: float = Field(0.0, ge=0, allow_inf_nan=False, description="ridge coefficient lambda")
    heterogeneity: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="std of each node's shift of w_true"
    )
    generator: Literal["bench", "seeded"] = Field(
        "bench", description="bench: default_rng(1000 + rank); seeded: from the seed"
    )
    bias: bool = Field(False, description="add an unpenalised intercept (dim + 1 parameters)")
    init_scale: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="initial weights ~ init_scale * N(0, I)"
    )
    same_init: bool = Field(True, description="every node starts from data rank 0's draw")
    data: Literal["auto", "materialize", "regenerate"] = Field(
        "auto", description="store the data, or regenerate it in every call (auto: by budget)"
    )
    memory_budget_gb: float = Field(
        4.0,
        gt=0,
        le=MEMORY_BUDGET_MAX_GB,
        allow_inf_nan=False,
        description="auto regenerates above this data size",
    )


@lru_cache(maxsize=8)
def _w_true(dim: int) -> np.ndarray:
    w = np.random.default_rng(0).normal(size=dim)
    w.flags.writeable = False
    return w


def node_data(config: LogisticConfig, seed: int, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Features ``[M, D]`` float32 and labels ``[M]`` float32 of data rank ``rank``.

    With the defaults this is exactly ``data_np(rank)`` of ``limit_fedavg.py``.
    """
    m, d = config.samples_per_node, config.dim
    w = _w_true(d)
    if config.heterogeneity > 0:
        shift = np.random.default_rng(rng.numpy_seed(seed, "hetero", rank)).normal(size=d)
        w = w + config.heterogeneity * shift
    if config.generator == "bench":
        r = np.random.default_rng(BENCH_DATA_OFFSET + rank)
    else:
        r = np.random.default_rng(rng.numpy_seed(seed, "data", rank))
    X = r.normal(size=(m, d)).astype(np.float32)
    y = (X @ w + BENCH_LABEL_NOISE * r.normal(size=m) > 0).astype(np.float32)
    return X, y


def data_bytes(config: LogisticConfig, num_nodes: int) -> int:
    """Bytes of stored data for ``num_nodes`` nodes (features with intercept, labels)."""
    return 4 * num_nodes * config.samples_per_node * (config.dim + int(config.bias) + 1)


class LogisticOracle(CountedQueries, Oracle):
    """Oracle of :class:`LogisticConfig` for the hosted data nodes.

    Capabilities: ``labels`` (two classes; :meth:`flipped_grad` maps ``y -> 1 - y``),
    ``noisy_queries`` (exact values plus Gaussian noise) and ``per_sample_gradients``
    (sample ``s`` has the loss ``BCE(a_s^T w, y_s) + l2/2 ||w||^2``).

    Attributes
    ----------
    X
        ``[k, M, dim]`` float32 features (a trailing column of ones with ``bias``), or
        ``None`` in regenerate mode.
    y
        ``[k, M]`` float32 labels, or ``None`` in regenerate mode.
    regenerate
        Whether data are regenerated in every call instead of stored.
    """

    capabilities = frozenset(
        {Capability.LABELS, Capability.NOISY_QUERIES, Capability.PER_SAMPLE_GRADIENTS}
    )

    def __init__(
        self,
        config: LogisticConfig,
        seed: int,
        data_ranks: torch.Tensor,
        num_data_nodes: int,
        device: torch.device,
    ) -> None:
        self.config = config
        self.seed = int(seed)
        self.device = device
        self.features = config.dim
        self.dim = config.dim + int(config.bias)
        self.m = config.samples_per_node
        self.dtype = torch.float32
        self.data_ranks = ranks = check_ranks(data_ranks, num_data_nodes, device)
        k = len(ranks)
        self.weights = torch.full((k,), 1.0 / num_data_nodes, dtype=torch.float64, device=device)
        self.num_samples = torch.full((k,), float(self.m), dtype=torch.float64, device=device)
        self.batch_size = 0 if config.batch_size >= self.m else config.batch_size
        self._decay_cols = self.features  # columns penalised by l2 (all but the intercept)

        budget = int(config.memory_budget_gb * (1 << 30))
        need = data_bytes(config, k)
        self.regenerate = config.data == "regenerate" or (config.data == "auto" and need > budget)
        self._ranks_cpu = ranks.cpu()
        self._cache: OrderedDict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]]
        self._cache = OrderedDict()
        self._cache_bytes = min(CACHE_BYTES, budget // 2)
        self._cached = 0
        self.X: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        if not self.regenerate:
            self.X, self.y = self._generate(self._ranks_cpu.tolist())
            self._X_flat = self.X.view(k * self.m, self.dim)
            self._y_flat = self.y.view(k * self.m)
        # fast-path buffers, grown to the largest chunk seen
        self._cap = 0
        self._xbuf = torch.empty(0, self.dim, device=device)
        self._ybuf = torch.empty(0, device=device)
        self._zbuf = torch.empty(0, 1, 1, device=device)

    # ------------------------------------------------------------------ data access

    def _generate(self, ranks: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked data ``[c, M, dim]``, ``[c, M]`` of the given data ranks."""
        c, m, d = len(ranks), self.m, self.features
        X = torch.empty(c, m, self.dim, dtype=torch.float32)
        y = torch.empty(c, m, dtype=torch.float32)
        Xn, yn = X.numpy(), y.numpy()
        for i, rank in enumerate(ranks):
            Xn[i, :, :d], yn[i] = node_data(self.config, self.seed, rank)
        if self.config.bias:
            Xn[:, :, d] = 1.0
        return X.to(self.device), y.to(self.device)

    def _regenerated(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = tuple(self._ranks_cpu[rows.cpu()].tolist())
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        block = self._generate(list(key))
        size = data_bytes(self.config, len(key))
        if size <= self._cache_bytes:
            while self._cached + size > self._cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached -= old[0].numel() * 4 + old[1].numel() * 4
            self._cache[key] = block
            self._cached += size
        return block

    def _blocks(self, rows: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
        """``(positions in rows, X [c, M, dim], y [c, M])`` for blocks of ``rows``."""
        per_node = data_bytes(self.config, 1)
        if self.regenerate:
            for sl in row_chunks(len(rows), per_node, REGEN_BLOCK_BYTES):
                yield (sl, *self._regenerated(rows[sl]))
        else:
            assert self.X is not None and self.y is not None
            for sl in row_chunks(len(rows), per_node):
                yield sl, take(self.X, rows[sl]), take(self.y, rows[sl])

    def _segments(
        self, rows: torch.Tensor
    ) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(positions, X_flat, y_flat, row offset of each node)`` to gather samples from."""
        if self.regenerate:
            per_node = data_bytes(self.config, 1)
            for sl in row_chunks(len(rows), per_node, REGEN_BLOCK_BYTES):
                X, y = self._regenerated(rows[sl])
                c = X.shape[0]
                base = torch.arange(c, device=self.device).mul_(self.m)
                yield sl, X.view(c * self.m, self.dim), y.view(c * self.m), base
        else:
            for a in range(0, len(rows), MAX_ROWS_PER_PASS):
                sl = slice(a, min(a + MAX_ROWS_PER_PASS, len(rows)))
                yield sl, self._X_flat, self._y_flat, rows[sl] * self.m

    def _ranks(self, rows: torch.Tensor) -> torch.Tensor:
        return self.data_ranks.index_select(0, rows)

    def batch_indices(self, rows: torch.Tensor, step: Step) -> torch.Tensor:
        """``[len(rows), batch_size]`` sample indices of each node's minibatch at ``step``."""
        keys = rng.node_keys(self.seed, "batch", self._ranks(rows), step)
        return rng.randint(keys, self.batch_size, self.m)

    # ------------------------------------------------------------------ oracle

    def init_params(self, rows: torch.Tensor) -> torch.Tensor:
        n = len(rows)
        if self.config.init_scale == 0:
            return torch.zeros(n, self.dim, dtype=self.dtype, device=self.device)
        ranks = self._ranks(rows)
        if self.config.same_init:
            ranks = torch.zeros_like(ranks)
        z = rng.normal(rng.node_keys(self.seed, "init", ranks, 0), self.dim, torch.float64)
        x = (self.config.init_scale * z).to(self.dtype)
        if self.config.bias:
            x[:, -1] = 0.0
        return x

    def _add_decay(self, out: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        if self.config.l2 > 0:
            c = self._decay_cols
            out[:, :c].add_(W[:, :c], alpha=self.config.l2)
        return out

    def _samples(
        self, rows: torch.Tensor, step: Step | None
    ) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
        """``(positions in rows, features [c, b, dim], labels [c, b])`` of a minibatch.

        ``step=None`` gives every sample (``b = M``); otherwise the ``batch_size``
        samples of each node's minibatch at ``step``.
        """
        if step is None:
            yield from self._blocks(rows)
            return
        B = self.batch_size
        idx = self.batch_indices(rows, step)
        for sl, Xf, yf, base in self._segments(rows):
            c = sl.stop - sl.start
            flat = (idx[sl] + base.unsqueeze(1)).view(-1)
            yield (
                sl,
                Xf.index_select(0, flat).view(c, B, self.dim),
                yf.index_select(0, flat).view(c, B),
            )

    def _step_or_full(self, step: Step) -> Step | None:
        return None if self.batch_size == 0 else step

    def _grad(
        self, X: torch.Tensor, rows: torch.Tensor, step: Step | None, flip: bool
    ) -> torch.Tensor:
        """Mean gradient over :meth:`_samples`, labels ``y -> 1 - y`` when ``flip``."""
        W = X.to(self.dtype)
        out = torch.empty_like(W)
        for sl, Xb, yb in self._samples(rows, step):
            z = bmm(Xb, W[sl].unsqueeze(2)).squeeze(2)  # [c, b] logits
            g = sigmoid_(z).sub_(1.0 - yb if flip else yb)
            out[sl] = bmm(g.unsqueeze(1), Xb).squeeze(1).div_(Xb.shape[1])
        return self._add_decay(out, W)

    def full_grad(self, X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self._grad(X, rows, None, flip=False)

    def grad(self, X: torch.Tensor, rows: torch.Tensor, step: Step) -> torch.Tensor:
        return self._grad(X, rows, self._step_or_full(step), flip=False)

    num_classes = 2

    def flipped_grad(self, X: torch.Tensor, rows: torch.Tensor, step: Step) -> torch.Tensor:
        """:meth:`grad` on the same minibatch with every label ``y`` mapped to ``1 - y``."""
        return self._grad(X, rows, self._step_or_full(step), flip=True)

    # ------------------------------------------------------------------ per-sample gradients

    def _per_sample_parts(
        self, X: torch.Tensor, rows: torch.Tensor, step: Step
    ) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """``(positions, features [c, b, dim], sigmoid(z) - y [c, b], ridge grad)``."""
        W = X.to(self.dtype)
        decay = None
        if self.config.l2 > 0:
            decay = W * self.config.l2
            decay[:, self._decay_cols :] = 0.0  # the intercept is not penalised
        for sl, Xb, yb in self._samples(rows, self._step_or_full(step)):
            r = sigmoid_(bmm(Xb, W[sl].unsqueeze(2)).squeeze(2)).sub_(yb)
            yield sl, Xb, r, None if decay is None else decay[sl]

    def per_sample_grad(self, X: torch.Tensor, rows: torch.Tensor, step: Step) -> torch.Tensor:
        """``[k, b, dim]``: ``(sigmoid(a_s^T w) - y_s) a_s + l2 w`` per sample of the batch.

        ``b`` is ``batch_size`` (``samples_per_node`` for the full batch); the mean over
        the samples is :meth:`grad`.
        """
        b = self.batch_size or self.m
        out = torch.empty(len(rows), b, self.dim, dtype=self.dtype, device=self.device)
        for sl, Xb, r, decay in self._per_sample_parts(X, rows, step):
            out[sl] = linear_per_sample(Xb, r, decay)
        return out

    def clipped_mean_grad(
        self, X: torch.Tensor, rows: torch.Tensor, step: Step, clip: float
    ) -> torch.Tensor:
        """``[k, dim]``: mean over the minibatch of the per-sample gradients clipped to
        norm ``clip`` (without the ``[k, b, dim]`` tensor)."""
        out = torch.empty(len(rows), self.dim, dtype=self.dtype, device=self.device)
        for sl, Xb, r, decay in self._per_sample_parts(X, rows, step):
            out[sl] = linear_clipped_mean(Xb, r, decay, clip)
        return out

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
        """``[k, dim]``: ``sum_s mask_s clip_c(g_s(w) - g_s(w'))`` over all ``M`` samples.

        ``g_s(w) = (sigmoid(a_s^T w) - y_s) a_s + l2 w`` (intercept not penalised), so the
        difference is ``(sigmoid(z_s) - sigmoid(z'_s)) a_s + l2 (w - w')`` (no ``g_s(w')``
        term without ``X_prev``); see
        :meth:`fedopt.problems.capabilities.PerSampleGradients.clipped_grad_sum`.
        """
        W = X.to(self.dtype)
        k = len(rows)
        radii = clip_radii(clip, k, self.dtype, W.device)
        weight = sample_mask(mask, k, self.m, self.dtype, W.device)
        Wp = None if X_prev is None else X_prev.to(self.dtype)
        decay = None
        if self.config.l2 > 0:
            decay = (W if Wp is None else W - Wp) * self.config.l2
            decay[:, self._decay_cols :] = 0.0  # the intercept is not penalised
        size = sample_chunk(self.dim, W.element_size())
        out = torch.zeros_like(W)
        for sl, Xb, yb in self._blocks(rows):
            w = W[sl].unsqueeze(2)
            wp = None if Wp is None else Wp[sl].unsqueeze(2)
            for ss in sample_slices(self.m, size):
                Ac = Xb[:, ss]
                r = sigmoid_(bmm(Ac, w).squeeze(2))
                if wp is None:
                    r.sub_(yb[:, ss])
                else:
                    r.sub_(sigmoid_(bmm(Ac, wp).squeeze(2)))
                out[sl] += linear_clipped_sum(
                    Ac,
                    r,
                    None if decay is None else decay[sl],
                    radii[sl],
                    None if weight is None else weight[sl, ss],
                )
        return out

    def _grow(self, c: int) -> None:
        if c > self._cap:
            B = self.batch_size
            self._cap = c
            self._xbuf = torch.empty(c * B, self.dim, device=self.device)
            self._ybuf = torch.empty(c * B, device=self.device)
            self._zbuf = torch.empty(c, B, 1, device=self.device)

    def _fused_step(
        self, W: torch.Tensor, flat: torch.Tensor, Xf: torch.Tensor, yf: torch.Tensor, lr: float
    ) -> None:
        """``W <- W - lr * grad`` in place for ``c >= 2`` rows with gather indices ``flat``."""
        c, B = W.shape[0], self.batch_size
        self._grow(c)
        xb, yb, z = self._xbuf[: c * B], self._ybuf[: c * B], self._zbuf[:c]
        torch.index_select(Xf, 0, flat, out=xb)
        torch.index_select(yf, 0, flat, out=yb)
        Xb = xb.view(c, B, self.dim)
        Wc = W.unsqueeze(1)  # [c, 1, dim] view into W
        torch.bmm(Xb, Wc.transpose(1, 2), out=z)  # [c, B, 1] logits
        g = sigmoid_(z.view(c, B)).sub_(yb.view(c, B))  # B * dLoss/dz
        if self.config.l2 > 0:
            W[:, : self._decay_cols].mul_(1.0 - lr * self.config.l2)
        Wc.baddbmm_(g.unsqueeze(1), Xb, alpha=-lr / B)

    def sgd_step_(self, X: torch.Tensor, rows: torch.Tensor, step: Step, lr: float) -> None:
        """In-place ``X <- X - lr * grad(X, rows, step)``, fused (the hot loop).

        ``X`` is ``[len(rows), dim]`` float32 (e.g. a chunk of a larger parameter
        matrix) and is updated in place. Gather buffers are kept in the oracle and sized
        for the largest chunk seen.
        """
        n = X.shape[0]
        if n == 0:
            return
        if self.batch_size == 0 or X.dtype != self.dtype:
            X.sub_(self.grad(X, rows, step).to(X.dtype), alpha=lr)
            return
        idx = self.batch_indices(rows, step)
        for sl, Xf, yf, base in self._segments(rows):
            flat = idx[sl].add_(base.unsqueeze(1)).view(-1)
            W = X[sl]
            if W.shape[0] == 1:  # a batch of one would use another kernel: pad to two
                W2 = torch.cat([W, W])
                self._fused_step(W2, torch.cat([flat, flat]), Xf, yf, lr)
                W.copy_(W2[:1])
            else:
                self._fused_step(W, flat, Xf, yf, lr)

    def _losses(self, X: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-node mean BCE ``[n]`` float64 and count of correct predictions ``[n]``."""
        W = X.to(self.dtype)
        loss = torch.empty(len(rows), dtype=torch.float64, device=X.device)
        correct = torch.empty(len(rows), dtype=torch.int64, device=X.device)
        for sl, Xb, yb in self._blocks(rows):
            z = bmm(Xb, W[sl].contiguous().unsqueeze(2)).squeeze(2)
            bce = F.binary_cross_entropy_with_logits(z.double(), yb.double(), reduction="none")
            loss[sl] = bce.mean(dim=1)
            correct[sl] = ((z > 0) == (yb > 0.5)).sum(dim=1)
        return loss, correct

    def _penalty(self, X: torch.Tensor) -> torch.Tensor:
        """``l2/2 ||w||^2`` per row in float64 (the intercept is not penalised)."""
        w = X[:, : self._decay_cols].to(self.dtype).double()
        return w.square().sum(dim=1).mul_(self.config.l2 / 2)

    def curvature_bounds(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``mu_i = l2`` (0 with an unpenalised bias), ``L_i = mean ||a||^2 / 4 + l2``.

        None in regenerate mode (no stored features to bound).
        """
        if self.X is None:
            return None
        k = len(self.data_ranks)
        sq = self.X.double().pow(2).sum(dim=2).mean(dim=1)
        l2 = float(self.config.l2)
        mu = 0.0 if self.config.bias else l2
        return torch.full((k,), mu, dtype=torch.float64), sq / 4 + l2

    def value(self, X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        loss, _ = self._losses(X, rows)
        return loss.add_(self._penalty(X)) if self.config.l2 > 0 else loss

    def evaluate(self, x: torch.Tensor) -> dict[str, float]:
        rows = torch.arange(len(self.data_ranks), device=self.device)
        X = x.to(self.dtype).unsqueeze(0).expand(len(rows), -1)
        loss, correct = self._losses(X, rows)
        if self.config.l2 > 0:
            loss.add_(self._penalty(X))
        return {
            "loss": float((loss * self.weights).sum()),
            "correct": float(correct.sum()),
            "count": float(len(rows) * self.m),
        }


@PROBLEMS.register("logistic")
class Logistic(Problem):
    """Binary logistic regression, mean BCE-with-logits + ``l2/2 ||w||^2``, ``p_i = 1/n``."""

    Config = LogisticConfig

    oracle_class = LogisticOracle

    @classmethod
    def param_dim(cls, config: ProblemConfig) -> int | None:
        cfg = coerce_config(config, LogisticConfig, "problem")
        return cfg.dim + int(cfg.bias)

    @classmethod
    def data_bytes(cls, config: ProblemConfig, num_nodes: int) -> tuple[int, str]:
        """Stored data (or, regenerated, the cache and the block being rebuilt), one node's
        float64 draws, the minibatch buffers and the logits of a block of nodes."""
        from fedopt.engine.budget import fmt_bytes

        cfg = coerce_config(config, LogisticConfig, "problem")
        stored = data_bytes(cfg, num_nodes)
        per_node = data_bytes(cfg, 1)
        budget = int(cfg.memory_budget_gb * (1 << 30))
        regenerate = cfg.data == "regenerate" or (cfg.data == "auto" and stored > budget)
        m, d = cfg.samples_per_node, cfg.dim + int(cfg.bias)
        batch = m if cfg.batch_size == 0 or cfg.batch_size >= m else cfg.batch_size
        buffers = 2 * min(num_nodes, MAX_ROWS_PER_PASS) * batch * (d + 1) * 4
        block_nodes = max(1, min(num_nodes, (64 << 20) // per_node))
        work = 3 * per_node + 3 * block_nodes * m * 4  # numpy draws, logits of a block
        if regenerate:
            held = min(CACHE_BYTES, budget // 2) + max(REGEN_BLOCK_BYTES, per_node)
            how = f"regenerated: cache and block {fmt_bytes(held)}, {fmt_bytes(per_node)} a node"
        else:
            held = stored
            how = f"{num_nodes:,} nodes x {m:,} samples x {d + 1:,} values x 4 B"
        return held + buffers + work, how

    @staticmethod
    def summary(config: ProblemConfig) -> dict[str, object]:
        cfg = coerce_config(config, LogisticConfig, "problem")
        return {
            "dim": cfg.dim + int(cfg.bias),
            "features": cfg.dim,
            "samples_per_node": cfg.samples_per_node,
            "generator": cfg.generator,
            "data_bytes_per_node": data_bytes(cfg, 1),
        }

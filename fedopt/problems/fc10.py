"""Regression with DIFF2's ``fc_10`` network on synthetic California-Housing-shaped data
(``fc10_regression``).

The DIFF2 experiments (spec diff2.md sections 4.6 and 4.9) fit ``fc_10``,
``Linear(features, 10) -> softplus -> Linear(10, 1)``, with the mean squared error on
California Housing (20,640 rows x 8 features), split 80/20, inputs standardised on the
training rows, targets divided by their largest magnitude, training rows dealt
round-robin to ``P = 10`` workers. This problem keeps that shape with offline synthetic
data, all drawn with :mod:`fedopt.rng` from ``data_seed`` (default: the experiment seed):

* **inputs**: row ``j`` is ``z_j M`` with ``z_j ~ N(0, I_features)`` keyed by
  ``(data_seed, "fc10_features", j)`` and one mixing matrix ``M = I + 0.3 G``,
  ``G_ab ~ N(0, 1)`` keyed by ``(data_seed, "fc10_mixing")`` (correlated features);
* **split**: a permutation keyed by ``(data_seed, "fc10_split")``; its first
  ``ceil(test_fraction * samples)`` rows are the test set, the others the training set
  in permuted order (16,512 / 4,128 at the defaults);
* **standardisation**: per-feature mean and (population) standard deviation of the
  training rows, applied to both sets (as scikit-learn's ``StandardScaler``);
* **targets**: ``t = teacher(x)``, an ``fc_10`` network with ``hidden`` units whose
  entries are ``U(-s / sqrt(fan_in), s / sqrt(fan_in))``, ``s = teacher_scale``, keyed by
  ``(data_seed, "fc10_teacher")``; ``y = t + noise * std(t) * eps_j`` (``std`` over all
  rows, ``eps_j ~ N(0, 1)`` keyed by ``(data_seed, "fc10_noise", j)``), then divided by
  ``max |y|`` over the training rows;
* **nodes**: training row ``i`` goes to data rank ``i mod P``, so node ``p`` holds
  ``n_p = ceil((n_train - p) / P)`` samples (1,652 or 1,651 for ``P = 10``).

Node ``i`` holds the mean squared error (no 1/2, as ``torch.nn.MSELoss``; no weight
decay, as the reference)

.. math::

    f_i(x) = \\frac{1}{n_i} \\sum_{s=1}^{n_i} (h_x(a_s) - y_s)^2,
    \\qquad p_i = n_i / n_{train},

so ``sum_i p_i f_i`` is the training MSE. The parameter layout, backpropagation and
per-sample (ghost-norm) clipping are those of :class:`~fedopt.problems._fc10_net.Fc10Net`
(``dim = 101`` at the defaults). Initial rows are fan-in uniform, keyed by
``(seed, "init", data rank)`` (data rank 0's draw on every node with ``same_init``).

How hard it is (defaults, ``data_seed: 0``, measured): the training targets have variance
0.0387 (mean square 0.0575); a least-squares *linear* fit with intercept reaches MSE
0.0036; the teacher itself 0.00038 (the noise: ``noise_mse``, the ``teacher`` row of
:class:`Dataset`); the initial model of seed 1 has MSE 0.23, and noiseless full-batch
gradient descent (step 0.1) reaches 0.0044 after 100 steps, 0.0031 after 500 and 0.0017
after 2,000 (test MSE within 2% of the training MSE). So the nonlinear part of the signal
matters well above the noise floor, and the losses span the scale of the DIFF2 plots
(0.015-0.2 on California Housing). Full-batch steps up to 0.2 work best (300 steps:
0.0034, 0.0032, 0.0035 for 0.1, 0.15, 0.2; 0.0073 for 0.3), 0.5 diverges: the MSE without
1/2 has a curvature of about 10 along the output layer, so DIFF2's step grid (1, 0.5, ...)
must reach 0.25 or below.

Samples of a node are stored padded to ``n_pad``, a multiple of the sample chunk that
depends on the *global* split only, and processed chunk by chunk (``[rows, chunk]``
blocks that stay in cache), so a node's sums are added in the same order on every
placement: the rows of any subset of data ranks are bitwise those of the whole.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from fedopt import rng
from fedopt.errors import ConfigError
from fedopt.fields import COUNT_MAX, INT64_MAX
from fedopt.problems._common import (
    DTYPES,
    DTypeName,
    check_ranks,
    clip_radii,
    clip_scale,
    coerce_config,
    sample_mask,
    sample_slices,
    take,
)
from fedopt.problems._fc10_net import Fc10Net
from fedopt.problems.base import Oracle, Problem, ProblemConfig, Step
from fedopt.problems.capabilities import Capability
from fedopt.problems.registry import PROBLEMS

CHUNK_TARGET = 512
"""Largest sample chunk; chunks split the largest node into equal parts of at most this."""
PASS_BYTES = 4 << 20
"""Working set of one pass (rows x chunk samples x temporaries)."""
MIXING = 0.3
"""Scale of the random part of the input mixing matrix ``M = I + 0.3 G``."""


class Fc10Config(ProblemConfig):
    """Hyperparameters of the ``fc10_regression`` problem (defaults: DIFF2's California
    Housing setting)."""

    name: Literal["fc10_regression"] = "fc10_regression"
    samples: int = Field(
        20640, ge=2, le=COUNT_MAX, description="rows of the synthetic dataset (train + test)"
    )
    features: int = Field(8, ge=1, le=COUNT_MAX, description="inputs per row")
    hidden: int = Field(10, ge=1, le=COUNT_MAX, description="hidden softplus units of fc_10")
    test_fraction: float = Field(
        0.2, gt=0, lt=1, allow_inf_nan=False, description="held-out share: ceil(fraction * rows)"
    )
    noise: float = Field(
        0.1,
        ge=0,
        allow_inf_nan=False,
        description="std of the label noise, relative to the std of the teacher's outputs",
    )
    teacher_scale: float = Field(
        3.0,
        gt=0,
        allow_inf_nan=False,
        description="teacher weights ~ U(+-teacher_scale / sqrt(fan_in)); larger = less linear",
    )
    data_seed: int | None = Field(
        None,
        ge=0,
        le=INT64_MAX,
        description="seed of the dataset (inputs, teacher, noise, split); null = the "
        "experiment seed, a number = the same data for every experiment seed",
    )
    batch_size: int = Field(
        0,
        ge=0,
        le=COUNT_MAX,
        description="samples per stochastic gradient, with replacement; 0 = full batch",
    )
    same_init: bool = Field(True, description="every node starts from data rank 0's draw")
    dtype: DTypeName = Field("float64", description="dtype of parameters and data")


# ----------------------------------------------------------------------------- data


def split_sizes(config: Fc10Config) -> tuple[int, int]:
    """``(train, test)`` row counts: ``test = ceil(test_fraction * samples)``."""
    test = min(config.samples, math.ceil(config.test_fraction * config.samples - 1e-9))
    return config.samples - test, test


@dataclass(frozen=True)
class Dataset:
    """The standardised synthetic dataset, float64.

    Attributes
    ----------
    x_train, y_train
        ``[n_train, features]`` and ``[n_train]``, in the split's order (row ``i`` belongs
        to data rank ``i mod P``).
    x_test, y_test
        The held-out rows.
    teacher
        ``[dim]``: the teacher's parameter row scaled as the targets (its predictions are
        the noiseless targets ``t / max|y_train|``).
    noise_mse
        ``(noise * std(t) / max|y_train|)^2``: the expected MSE of the teacher.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    teacher: torch.Tensor
    noise_mse: float


def make_dataset(config: Fc10Config, seed: int) -> Dataset:
    """Draw the dataset of ``config`` (module docstring) from ``data_seed`` or ``seed``."""
    key = int(seed if config.data_seed is None else config.data_seed)
    n, F = config.samples, config.features
    ids = torch.arange(n, dtype=torch.int64)
    zero = torch.zeros(1, dtype=torch.int64)
    z = rng.normal(rng.node_keys(key, "fc10_features", ids, 0), F, torch.float64)
    G = rng.normal(rng.node_keys(key, "fc10_mixing", zero, 0), F * F, torch.float64)
    x = z @ (torch.eye(F, dtype=torch.float64) + MIXING * G.view(F, F))
    perm = torch.argsort(rng.bits(rng.node_keys(key, "fc10_split", zero, 0), n)[0], stable=True)
    n_test = split_sizes(config)[1]
    test, train = perm[:n_test], perm[n_test:]
    mean = x[train].mean(dim=0)
    std = x[train].std(dim=0, unbiased=False)
    x = (x - mean) / torch.where(std > 0, std, torch.ones_like(std))

    net = Fc10Net(F, config.hidden)
    u = rng.uniform(rng.node_keys(key, "fc10_teacher", zero, 0), net.dim, torch.float64)
    bounds = torch.cat(
        [torch.full((e.numel,), e.init[1], dtype=torch.float64) for e in net.layout.params]
    )
    teacher = ((2.0 * u - 1.0) * bounds * config.teacher_scale).view(1, -1)
    t = net.forward(teacher, x.unsqueeze(0))[2][0]
    eps = rng.normal(rng.node_keys(key, "fc10_noise", ids, 0), 1, torch.float64)[:, 0]
    noise_std = config.noise * float(t.std(unbiased=False))
    y = t + noise_std * eps
    top = float(y[train].abs().max())
    scale = top if top > 0 else 1.0
    y = y / scale
    row = teacher[0].clone()
    row[net.features * net.hidden + net.hidden :] /= scale  # w2 and b2 carry the scale
    return Dataset(x[train], y[train], x[test], y[test], row, (noise_std / scale) ** 2)


def node_sizes(n_train: int, num_nodes: int) -> torch.Tensor:
    """Samples of every data rank under the round-robin split: ``ceil((n - p) / P)``."""
    p = torch.arange(num_nodes, dtype=torch.int64)
    return (n_train - p + num_nodes - 1).div(num_nodes, rounding_mode="floor").clamp(min=0)


def chunking(n_max: int) -> tuple[int, int]:
    """``(chunk, n_pad)``: the largest node's samples in equal chunks of at most
    :data:`CHUNK_TARGET`, ``n_pad = chunks * chunk >= n_max``."""
    parts = max(1, math.ceil(n_max / CHUNK_TARGET))
    chunk = max(1, math.ceil(n_max / parts))
    return chunk, parts * chunk


# ----------------------------------------------------------------------------- oracle


class Fc10Oracle(Oracle):
    """Oracle of :class:`Fc10Config` for the hosted data nodes.

    Capability ``per_sample_gradients``: sample ``s`` has the loss ``(h_x(a_s) - y_s)^2``;
    :meth:`clipped_grad_sum` runs over a node's whole dataset (DIFF2, DP-GD, DP-SGD with
    a Poisson mask).

    Attributes
    ----------
    net
        The :class:`~fedopt.problems._fc10_net.Fc10Net` (``layout``: the flat row).
    A, y, valid
        ``[k, n_pad, features]`` inputs, ``[k, n_pad]`` targets and 0/1 sample mask of the
        hosted nodes (zero beyond a node's count).
    counts
        ``[k]`` int64 samples per hosted node.
    chunk, n_pad
        Samples per chunk and padded samples per node: the largest node of the whole
        split (not of the hosted ones) in equal chunks of at most :data:`CHUNK_TARGET`
        (413 and 1,652 at the defaults with 10 nodes).
    x_test, y_test
        The held-out rows (shared by all nodes).
    info
        Facts (the same on every worker): ``train_samples``, ``test_samples``,
        ``min_node_samples``, ``max_node_samples``, ``target_var`` (variance of the
        training targets) and ``noise_mse``.
    """

    capabilities = frozenset({Capability.PER_SAMPLE_GRADIENTS})

    def __init__(
        self,
        config: Fc10Config,
        seed: int,
        data_ranks: torch.Tensor,
        num_data_nodes: int,
        device: torch.device,
    ) -> None:
        self.config = config
        self.seed = int(seed)
        self.device = device
        self.dtype = DTYPES[config.dtype]
        self.net = net = Fc10Net(config.features, config.hidden)
        self.layout = net.layout
        self.dim = net.dim
        self.data_ranks = ranks = check_ranks(data_ranks, num_data_nodes, device)
        n_train, n_test = split_sizes(config)
        if n_train < num_data_nodes:
            raise ConfigError(
                f"problem.samples: {config.samples} rows with test_fraction "
                f"{config.test_fraction} leave {n_train} training rows for {num_data_nodes} "
                f"data nodes; every node needs one. Use samples >= "
                f"{math.ceil(num_data_nodes / (1 - config.test_fraction)) + 1} or fewer nodes."
            )
        data = make_dataset(config, self.seed)
        sizes = node_sizes(n_train, num_data_nodes)
        self.chunk, self.n_pad = chunking(int(sizes.max()))
        k, F, dt = len(ranks), config.features, self.dtype

        # sample j of data rank p is training row p + j P (round robin); zero padding
        ranks_cpu = ranks.cpu()
        counts = sizes.index_select(0, ranks_cpu)
        idx = ranks_cpu.unsqueeze(1) + num_data_nodes * torch.arange(self.n_pad).unsqueeze(0)
        inside = idx < n_train
        idx = idx.clamp_(max=n_train - 1)
        A = data.x_train[idx] * inside.unsqueeze(2)
        y = data.y_train[idx] * inside
        self.counts = counts.to(device)
        self.A = A.to(device=device, dtype=dt)
        self.y = y.to(device=device, dtype=dt)
        self.valid = inside.to(device=device, dtype=dt)
        self._A_flat = self.A.view(k * self.n_pad, F)
        self._y_flat = self.y.view(k * self.n_pad)
        self._inv_n = self.counts.to(dt).reciprocal()
        self.num_samples = self.counts.double()
        self.weights = self.num_samples / n_train
        self._max_samples = int(counts.max()) if k else 0
        self.x_test = data.x_test.to(device=device, dtype=dt)
        self.y_test = data.y_test.to(device=device, dtype=dt)
        per_sample = (F + 8 * config.hidden + 6) * torch.finfo(dt).bits // 8
        self._pass_rows = max(1, PASS_BYTES // (self.chunk * per_sample))
        self.info: dict[str, object] = {
            "train_samples": n_train,
            "test_samples": n_test,
            "min_node_samples": int(sizes.min()),
            "max_node_samples": int(sizes.max()),
            "target_var": float(data.y_train.var(unbiased=False)),
            "noise_mse": data.noise_mse,
        }

    @property
    def max_samples(self) -> int:
        """Samples of the largest hosted node (the width of a :meth:`clipped_grad_sum`
        mask; 1,652 or 1,651 at the defaults with 10 nodes)."""
        return self._max_samples

    # ------------------------------------------------------------------ data passes

    def _ranks(self, rows: torch.Tensor) -> torch.Tensor:
        return self.data_ranks.index_select(0, rows)

    def batch_indices(self, rows: torch.Tensor, step: Step) -> torch.Tensor:
        """``[len(rows), batch_size]`` sample indices in ``[0, n_i)`` of each node's
        minibatch at ``step``, keyed by ``(seed, "batch", data rank, step)``."""
        keys = rng.node_keys(self.seed, "batch", self._ranks(rows), step)
        return rng.randint(keys, self.config.batch_size, self.counts.index_select(0, rows))

    def _row_slices(self, n: int) -> Iterator[slice]:
        for a in range(0, n, self._pass_rows):
            yield slice(a, min(a + self._pass_rows, n))

    def _full_passes(
        self, rows: torch.Tensor
    ) -> Iterator[tuple[slice, slice, torch.Tensor, torch.Tensor]]:
        """``(positions in rows, samples, A [c, S, F], y [c, S])`` over every stored
        sample (the padding included: weight it with :attr:`valid`)."""
        for sl in self._row_slices(len(rows)):
            r = rows[sl]
            A, y = take(self.A, r), take(self.y, r)
            for ss in sample_slices(self.n_pad, self.chunk):
                yield sl, ss, A[:, ss], y[:, ss]

    def _batch_passes(
        self, rows: torch.Tensor, step: Step
    ) -> Iterator[tuple[slice, slice, torch.Tensor, torch.Tensor]]:
        """As :meth:`_full_passes` over each node's minibatch at ``step``."""
        B, F = self.config.batch_size, self.config.features
        flat = self.batch_indices(rows, step).add_(rows.unsqueeze(1) * self.n_pad)
        for sl in self._row_slices(len(rows)):
            c = sl.stop - sl.start
            idx = flat[sl].reshape(-1)
            A = self._A_flat.index_select(0, idx).view(c, B, F)
            y = self._y_flat.index_select(0, idx).view(c, B)
            for ss in sample_slices(B, self.chunk):
                yield sl, ss, A[:, ss], y[:, ss]

    def _passes(
        self, rows: torch.Tensor, step: Step
    ) -> tuple[Iterator[tuple[slice, slice, torch.Tensor, torch.Tensor]], bool]:
        """The passes of ``grad``'s batch and whether it is the full (padded) dataset."""
        if self.config.batch_size == 0:
            return self._full_passes(rows), True
        return self._batch_passes(rows, step), False

    # ------------------------------------------------------------------ oracle

    def init_params(self, rows: torch.Tensor) -> torch.Tensor:
        ranks = self._ranks(rows)
        if self.config.same_init:
            ranks = torch.zeros_like(ranks)
        return self.layout.init_params(self.seed, ranks, self.dtype).to(self.device)

    @torch.no_grad()
    def _mean_grad(
        self, W: torch.Tensor, rows: torch.Tensor, step: Step, full: bool
    ) -> torch.Tensor:
        """Mean gradient over every sample (``full``) or over ``step``'s minibatch."""
        out = torch.zeros_like(W)
        passes = self._full_passes(rows) if full else self._batch_passes(rows, step)
        inv_b = 1.0 / max(1, self.config.batch_size)
        for sl, ss, A, y in passes:
            if full:
                inv_n = self._inv_n.index_select(0, rows[sl]).unsqueeze(1)
                w = take(self.valid, rows[sl])[:, ss] * inv_n
            else:
                w = torch.full_like(y, inv_b)
            out[sl] += self.net.weighted_sum(A, *self.net.deltas(W[sl], A, y), w)
        return out

    def full_grad(self, X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self._mean_grad(X.to(self.dtype), rows, 0, full=True)

    def grad(self, X: torch.Tensor, rows: torch.Tensor, step: Step) -> torch.Tensor:
        full = self.config.batch_size == 0
        return self._mean_grad(X.to(self.dtype), rows, step, full=full)

    def value(self, X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Mean squared error ``[k]`` float64 of each row on its node's samples
        (differentiable in ``X``)."""
        W = X.to(self.dtype)
        parts = []
        for sl in self._row_slices(len(rows)):
            r = rows[sl]
            total = torch.zeros(sl.stop - sl.start, dtype=torch.float64, device=W.device)
            A, y, valid = take(self.A, r), take(self.y, r), take(self.valid, r)
            for ss in sample_slices(self.n_pad, self.chunk):
                pred = self.net.forward(W[sl], A[:, ss])[2]
                res = (pred.double() - y[:, ss].double()).square() * valid[:, ss].double()
                total = total + res.sum(dim=1)
            parts.append(total / self.num_samples.index_select(0, r))
        if not parts:
            return torch.zeros(0, dtype=torch.float64, device=W.device)
        return torch.cat(parts)

    @torch.no_grad()
    def evaluate_test(self, x: torch.Tensor) -> dict[str, float]:
        """Mean squared error of ``x`` on the held-out rows: ``{"test_loss": ...}``."""
        if len(self.y_test) == 0:
            return {}
        W = x.to(self.dtype).reshape(1, -1)
        pred = self.net.forward(W, self.x_test.unsqueeze(0))[2][0]
        return {"test_loss": float((pred.double() - self.y_test.double()).square().mean())}

    # ------------------------------------------------------------------ per-sample gradients

    @torch.no_grad()
    def per_sample_grad(self, X: torch.Tensor, rows: torch.Tensor, step: Step) -> torch.Tensor:
        """``[k, b, dim]``: the gradient of each sample of :meth:`grad`'s batch.

        ``b = batch_size``; for the full batch ``b = max_samples`` and the rows beyond a
        node's ``n_i`` samples are zero, so ``sum_s g_s / n_i`` is :meth:`grad`.
        """
        W = X.to(self.dtype)
        passes, full = self._passes(rows, step)
        b = self.max_samples if full else self.config.batch_size
        out = torch.zeros(len(rows), b, self.dim, dtype=self.dtype, device=W.device)
        for sl, ss, A, y in passes:
            if ss.start >= b:
                continue
            delta, v, e = self.net.deltas(W[sl], A, y)
            if full:
                valid = take(self.valid, rows[sl])[:, ss]
                delta.mul_(valid.unsqueeze(2))
                v.mul_(valid.unsqueeze(2))
                e.mul_(valid)
            g = self.net.per_sample(A, delta, v, e)
            out[sl, ss.start : min(ss.stop, b)] = g[:, : min(ss.stop, b) - ss.start]
        return out

    @torch.no_grad()
    def clipped_mean_grad(
        self, X: torch.Tensor, rows: torch.Tensor, step: Step, clip: float
    ) -> torch.Tensor:
        """``[k, dim]``: ``(1/b) sum_s g_s min(1, clip / ||g_s||)`` over :meth:`grad`'s batch
        (``b = n_i``, the node's own samples, for the full batch); no ``[k, b, dim]``."""
        if not clip > 0:
            raise ValueError(f"clip: must be > 0, got {clip!r}")
        W = X.to(self.dtype)
        radii = torch.full((len(rows),), float(clip), dtype=self.dtype, device=W.device)
        passes, full = self._passes(rows, step)
        out = torch.zeros_like(W)
        inv_b = 1.0 / max(1, self.config.batch_size)
        for sl, ss, A, y in passes:
            delta, v, e = self.net.deltas(W[sl], A, y)
            f = clip_scale(self.net.norm2(A, delta, v, e), radii[sl], eps=0.0)
            if full:
                inv_n = self._inv_n.index_select(0, rows[sl]).unsqueeze(1)
                f.mul_(take(self.valid, rows[sl])[:, ss]).mul_(inv_n)
            else:
                f.mul_(inv_b)
            out[sl] += self.net.weighted_sum(A, delta, v, e, f)
        return out

    @torch.no_grad()
    def clipped_grad_sum(
        self,
        X: torch.Tensor,
        rows: torch.Tensor,
        clip: float | torch.Tensor,
        X_prev: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[k, dim]``: ``sum_s mask_s clip_c(g_s(x) - g_s(x'))`` over every sample of each
        node (see :meth:`fedopt.problems.capabilities.PerSampleGradients.clipped_grad_sum`).

        Ghost norms: the clip factors come from the per-sample ``(delta, v, e)`` of
        :class:`~fedopt.problems._fc10_net.Fc10Net` (differences of them with ``X_prev``),
        and the sum is one weighted backward pass; nothing of size ``[k, n, dim]``.
        """
        W = X.to(self.dtype)
        k = len(rows)
        radii = clip_radii(clip, k, self.dtype, W.device)
        weight = take(self.valid, rows)
        given = sample_mask(mask, k, self.max_samples, self.dtype, W.device)
        if given is not None:
            weight = weight.clone()
            weight[:, : self.max_samples].mul_(given)
        Wp = None if X_prev is None else X_prev.to(self.dtype)
        out = torch.zeros_like(W)
        for sl, ss, A, y in self._full_passes(rows):
            delta, v, e = self.net.deltas(W[sl], A, y)
            if Wp is not None:
                delta_p, v_p, e_p = self.net.deltas(Wp[sl], A, y)
                delta.sub_(delta_p)
                v.sub_(v_p)
                e.sub_(e_p)
            f = clip_scale(self.net.norm2(A, delta, v, e), radii[sl]).mul_(weight[sl, ss])
            out[sl] += self.net.weighted_sum(A, delta, v, e, f)
        return out


# ----------------------------------------------------------------------------- problem


@PROBLEMS.register("fc10_regression")
class Fc10Regression(Problem):
    """DIFF2's ``fc_10`` regression (MSE) on synthetic California-Housing-shaped data."""

    Config = Fc10Config

    oracle_class = Fc10Oracle

    @classmethod
    def param_dim(cls, config: ProblemConfig) -> int | None:
        cfg = coerce_config(config, Fc10Config, "problem")
        return cfg.features * cfg.hidden + 2 * cfg.hidden + 1

    @classmethod
    def data_bytes(cls, config: ProblemConfig, num_nodes: int) -> tuple[int, str]:
        """The whole dataset while it is drawn (every worker draws it), the hosted nodes'
        padded samples (inputs, target, mask), the test rows and the temporaries of a
        pass and of a test evaluation. ``num_nodes`` hosted nodes are assumed to be all
        the data nodes (the most samples each)."""
        cfg = coerce_config(config, Fc10Config, "problem")
        item = cls.param_itemsize(cfg)
        F, H = cfg.features, cfg.hidden
        n_train, n_test = split_sizes(cfg)
        n_max = math.ceil(n_train / max(1, num_nodes))
        n_pad = chunking(n_max)[1]
        draw = cfg.samples * (4 * F + 8) * 8
        stored = num_nodes * n_pad * (F + 2) * item + n_test * (F + 1) * item
        work = 2 * PASS_BYTES + 3 * n_test * H * item  # a pass at x and x'; the test set
        how = (
            f"{cfg.samples:,} rows x {F} features drawn; {num_nodes:,} nodes x {n_pad:,} "
            f"samples x {F + 2} values x {item} B stored"
        )
        return draw + stored + work, how

    @staticmethod
    def summary(config: ProblemConfig) -> dict[str, object]:
        cfg = coerce_config(config, Fc10Config, "problem")
        n_train, n_test = split_sizes(cfg)
        return {
            "dim": cfg.features * cfg.hidden + 2 * cfg.hidden + 1,
            "features": cfg.features,
            "hidden": cfg.hidden,
            "train_samples": n_train,
            "test_samples": n_test,
            "stochastic": cfg.batch_size > 0,
        }

"""Handwritten digits classification (``digits_softmax``, ``digits_mlp``, ``digits_model``).

Data: scikit-learn's bundled ``load_digits`` (1,797 images of 8x8 pixels, 10 classes;
no download), features divided by 16 so they lie in ``[0, 1]``. A fixed stratified
held-out test split (``test_fraction`` of each class, seeded by
``numpy_seed(seed, "split")``) is shared by all nodes; the training samples are split
across the data nodes by ``partition`` (:mod:`fedopt.problems.partition`, seeded by
``numpy_seed(seed, "partition")``).

Node ``i`` with ``m_i`` training samples ``(a_ij, y_ij)`` holds the mean cross-entropy

.. math::

    f_i(x) = \\frac{1}{m_i} \\sum_{j=1}^{m_i} -\\log \\mathrm{softmax}(h_x(a_{ij}))_{y_{ij}}
             + \\frac{\\lambda}{2} \\lVert x \\rVert^2,
    \\qquad p_i = m_i / \\sum_l m_l,

where ``h_x`` is a network of :mod:`fedopt.models` evaluated on node ``i``'s parameter
row ``x``:

* ``digits_softmax``: a linear model ``64 -> 10`` with bias (650 parameters), the
  ``digits_mlp`` model with no hidden layer;
* ``digits_mlp``: an MLP ``64 -> hidden -> 10`` with ReLU and biases (``75 * hidden + 10``
  parameters), model ``digits_mlp``;
* ``digits_model``: any registered model (``model: {name: digits_cnn_bn, channels: [8,
  16]}``) that maps the flat ``[b, 64]`` pixels to ``[b, 10]`` logits.

A node with no samples has ``p_i = 0`` and ``f_i = 0`` (zero gradient); such nodes are
listed in the oracle's ``info``.

Parameters are one flat vector per node, laid out by the model's
:class:`~fedopt.models.ParamLayout` (the MLPs: layer after layer, ``W`` ``in x out`` row
major, then ``b``). Initialisation is the layout's: fan-in uniform
``U(-1/sqrt(in), 1/sqrt(in))`` for linear and convolution weights and biases (BatchNorm
scale 1, shift 0), from ``fedopt.rng`` keyed by ``("init", data rank)``, or data rank 0's
key for every node when ``same_init`` (the default, so consensus methods start from one
model).

Gradients of a batch of nodes come from :meth:`fedopt.models.BatchedModel.grad`. The MLPs
(``digits_softmax``, ``digits_mlp``) use its hand-written kernel
(:class:`fedopt.models.kernels.DenseReluKernel`: ``torch.bmm`` over nodes, explicit
backpropagation), which is placement-invariant bit for bit and faster than the
``torch.func`` path (``python -m fedopt.bench.models_digits``). Other models run
``torch.func`` node by node by default (``strategy: loop``), because the vmapped
convolutions round differently depending on how many nodes share the call.
Node data are stored padded to the largest node of the whole partition,
``[k, max_m, 64]``, with per-node counts; minibatches are ``batch_size`` samples drawn
with replacement from the node's own samples (``batch_size: 0`` = full batch).

BatchNorm (``digits_model`` only), two modes:

* ``batchnorm: batch_stats`` (default): every batch is normalised with its own
  statistics, in training *and* in evaluation; running statistics are neither kept nor
  used. A full-batch pass over a node (its value, its full gradient, evaluation)
  normalises with the node's own samples only (no padding), and the test metrics
  normalise with the statistics of the whole test set.
* ``batchnorm: running``: as ``torch.nn.BatchNorm`` in train/eval mode. Each hosted node
  keeps its running means and variances as one buffer row ``[buf_dim]`` (the model's
  ``layout.buffers``); every training call (:meth:`DigitsOracle.grad`,
  :meth:`~DigitsOracle.sgd_step_`) normalises with the batch statistics and updates the
  rows' running statistics, ``r <- (1 - momentum) r + momentum * s_batch`` (the batch
  variance unbiased; a node without samples keeps its row), and evaluation (``value``,
  ``evaluate``, ``evaluate_test``, ``evaluate_nodes``) runs in eval mode on running
  statistics. Gradients are the same as with ``batch_stats`` (train mode never reads the
  running statistics). The rows are per-node state that travels with the parameters:
  algorithms that move models (``Algorithm.moves_buffers``) load them with
  :meth:`~DigitsOracle.set_buffers`, read them back with
  :meth:`~DigitsOracle.get_buffers`, and average, mix and checkpoint them with the
  parameters; the compiler refuses the others.

Capability ``batch_values`` (every digits problem): :meth:`DigitsOracle.batch_value`,
the loss on the minibatch of a step, for two-point zeroth-order methods, with the
counts ``forwards`` and ``backwards`` of minibatch passes.

Capability ``model`` (every digits problem; the MLPs have no buffers, ``buf_dim = 0``):
``layout``, the buffer rows (``buffers``, ``get_buffers``, ``set_buffers``,
``reset_buffers``: the BN reset on the node's own samples), ``evaluate_nodes`` (every
row's own model on its node's training samples and on the test set) and
``activations`` (capture at the layout's named points, for model merging).
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import torch
from pydantic import ConfigDict, Field, field_validator, model_validator

from fedopt import rng
from fedopt.errors import ConfigError
from fedopt.fields import COUNT_MAX, Section
from fedopt.models import MODELS, BatchedModel, ParamLayout, digits_mlp, reset_bn
from fedopt.problems._common import check_ranks, coerce_config, row_chunks, take
from fedopt.problems.base import Oracle, Problem, ProblemConfig, Step
from fedopt.problems.capabilities import Capability
from fedopt.problems.partition import PartitionConfig, partition
from fedopt.problems.registry import PROBLEMS

log = logging.getLogger(__name__)

NUM_FEATURES = 64
NUM_CLASSES = 10
BATCHNORM_MODES = ("batch_stats", "running")


class DigitsConfig(ProblemConfig):
    """Fields shared by the digits problems."""

    batch_size: int = Field(
        32,
        ge=0,
        le=COUNT_MAX,
        description="samples per stochastic gradient, with replacement; 0 = full batch",
    )
    l2: float = Field(0.0, ge=0, allow_inf_nan=False, description="ridge coefficient lambda")
    test_fraction: float = Field(
        0.2, ge=0, lt=1, allow_inf_nan=False, description="held-out share of each class"
    )
    partition: PartitionConfig = Field(
        default_factory=PartitionConfig, description="split of the training samples"
    )
    same_init: bool = Field(True, description="every node starts from data rank 0's draw")


class DigitsSoftmaxConfig(DigitsConfig):
    """Hyperparameters of ``digits_softmax`` (multinomial logistic regression)."""

    name: Literal["digits_softmax"] = "digits_softmax"


class DigitsMLPConfig(DigitsConfig):
    """Hyperparameters of ``digits_mlp`` (one hidden ReLU layer)."""

    name: Literal["digits_mlp"] = "digits_mlp"
    hidden: int = Field(32, ge=1, le=COUNT_MAX, description="width of the hidden layer")


class ModelSpec(Section):
    """A registered model and its builder's keyword arguments (every other key).

    ``{name: digits_cnn_bn, channels: [8, 16]}`` builds ``MODELS.get("digits_cnn_bn")(
    channels=[8, 16], strategy="loop")``; ``strategy`` defaults to ``"loop"`` here (one
    node at a time: bit-identical whatever the placement) where the builder takes one.
    ``strategy: vmap`` (or ``auto``) is about 2.5 times faster for the digits CNN but its
    gradients then differ in the last bits with the number of nodes sharing a call.
    """

    model_config = ConfigDict(frozen=True, extra="allow", allow_inf_nan=False)

    name: str = Field("digits_cnn_bn", description="registered model (fedopt.models.MODELS)")

    @property
    def params(self) -> dict[str, Any]:
        """The builder's keyword arguments."""
        return dict(self.model_extra or {})


class DigitsModelConfig(DigitsConfig):
    """Hyperparameters of ``digits_model`` (any registered model on the digits data)."""

    name: Literal["digits_model"] = "digits_model"
    model: ModelSpec = Field(
        default_factory=ModelSpec, description="registered model and its builder's arguments"
    )
    batchnorm: str = Field(
        "batch_stats",
        description="BatchNorm mode: batch_stats (every batch normalised with its own "
        "statistics, in training and evaluation) or running (per-node running statistics "
        "updated in training, used in evaluation, moved with the parameters)",
    )

    @field_validator("batchnorm")
    @classmethod
    def _batchnorm(cls, value: str) -> str:
        if value not in BATCHNORM_MODES:
            raise ConfigError(
                f"{value!r} is not a BatchNorm mode; use 'batch_stats' (every batch, in "
                "training and in evaluation, normalised with its own statistics) or "
                "'running' (per-node running statistics, as torch's train/eval modes)."
            )
        return value

    @model_validator(mode="after")
    def _model_builds(self) -> DigitsModelConfig:
        model = build_model(self)  # raises a problem.model.* message when it cannot
        if self.batchnorm == "running" and not model.has_bn:
            raise ConfigError(
                f"problem.batchnorm: 'running' keeps BatchNorm running statistics, but model "
                f"{self.model.name!r} has no BatchNorm layer (that tracks them); use "
                "batchnorm: batch_stats or a model with BatchNorm (digits_cnn_bn)."
            )
        return self


# ----------------------------------------------------------------------------- models


def _call_builder(spec: ModelSpec) -> BatchedModel:
    try:
        builder = MODELS.get(spec.name)
    except ConfigError as exc:
        raise ConfigError(f"problem.{exc}") from None
    params = spec.params
    try:
        sig = inspect.signature(builder)
    except (TypeError, ValueError):  # not introspectable: let the call decide
        sig = None
    if sig is not None:
        if "strategy" in sig.parameters and "strategy" not in params:
            params["strategy"] = "loop"
        try:
            sig.bind(**params)
        except TypeError as exc:
            known = [n for n, p in sig.parameters.items() if p.kind != p.VAR_KEYWORD]
            raise ConfigError(
                f"problem.model: model {spec.name!r} does not take these arguments "
                f"({exc}); its arguments are: {', '.join(known) or '(none)'}."
            ) from None
    try:
        model = builder(**params)
    except ConfigError as exc:
        raise ConfigError(f"problem.{exc}") from None
    if not isinstance(model, BatchedModel):
        raise ConfigError(
            f"problem.model.name: {spec.name!r} built a {type(model).__name__}, not a "
            "fedopt.models.BatchedModel; register a builder that returns one."
        )
    return model


def _probe(model: BatchedModel, features: int = NUM_FEATURES) -> tuple[int, ...]:
    """Output shape of ``model`` on a ``[1, 2, features]`` batch (digits: 64)."""
    X = model.init_params(0, [0])
    B = model.init_buffers(1) if model.has_bn else None
    return tuple(model.forward(X, torch.zeros(1, 2, features), B, train=model.has_bn).shape)


def build_model(config: DigitsConfig) -> BatchedModel:
    """The :class:`~fedopt.models.BatchedModel` of a digits problem's config.

    ``digits_softmax`` is ``digits_mlp(hidden=())``, ``digits_mlp`` is
    ``digits_mlp(hidden)``; ``digits_model`` builds ``config.model`` and checks that it
    maps ``[b, 64]`` pixels to ``[b, 10]`` logits.
    """
    if isinstance(config, DigitsMLPConfig):
        return digits_mlp(config.hidden)
    if not isinstance(config, DigitsModelConfig):
        return digits_mlp(())
    model = _call_builder(config.model)
    nf = int(getattr(config, "num_features", NUM_FEATURES))  # image problems: their size
    what = str(getattr(config, "inputs_name", "digits inputs"))
    try:
        shape = _probe(model, nf)
    except Exception as exc:
        raise ConfigError(
            f"problem.model: model {config.model.name!r} cannot run on {what} "
            f"[batch, {nf}] ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            f"it must map [batch, {nf}] pixels to [batch, {NUM_CLASSES}] logits."
        ) from None
    if shape != (1, 2, NUM_CLASSES):
        raise ConfigError(
            f"problem.model: model {config.model.name!r} maps {what} [2, "
            f"{nf}] to outputs {list(shape[1:])}; it must output [batch, "
            f"{NUM_CLASSES}] logits (10 classes)."
        )
    return model


# ----------------------------------------------------------------------------- data


@lru_cache(maxsize=1)
def load() -> tuple[np.ndarray, np.ndarray]:
    """All digits: features ``[1797, 64]`` float32 in ``[0, 1]``, labels ``[1797]`` int64."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = (np.asarray(digits.data, dtype=np.float64) / 16.0).astype(np.float32)
    y = np.asarray(digits.target, dtype=np.int64)
    X.flags.writeable = False
    y.flags.writeable = False
    return X, y


def split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified ``(train, test)`` index arrays (sorted): ``round(fraction * n_c)`` of class c."""
    r = np.random.default_rng(rng.numpy_seed(seed, "split"))
    train, test = [], []
    for c in np.unique(labels):
        idx = r.permutation(np.flatnonzero(labels == c))
        n_test = round(test_fraction * len(idx))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


class DigitsOracle(Oracle):
    """Oracle of the digits problems for the hosted data nodes.

    Capabilities: ``labels`` (ten classes; :meth:`flipped_grad` maps ``y -> 9 - y``) and
    ``model`` (:attr:`layout`, per-node buffer rows, :meth:`evaluate_nodes`,
    :meth:`activations`).

    Attributes
    ----------
    model
        The :class:`~fedopt.models.BatchedModel` (its ``layout`` is the parameter row's).
    running
        ``batchnorm: running``: per-node running statistics are kept, updated by the
        training calls and used by evaluation.
    buf_dim
        Width of the buffer rows that travel (the model's ``buf_dim`` with running
        statistics, else 0).
    X
        ``[k, max_m, 64]`` float32 training features, zero-padded per node.
    labels
        ``[k, max_m]`` int64 labels (0 in the padding).
    counts
        ``[k]`` int64 number of training samples per node.
    info
        Facts about the partition (the same on every worker): ``train_samples``,
        ``test_samples``, ``min_node_samples``, ``max_node_samples`` and
        ``empty_nodes`` (data ranks without samples).
    """

    capabilities = frozenset({Capability.LABELS, Capability.MODEL, Capability.BATCH_VALUES})
    buf_dim: int = 0
    forwards: int = 0
    """Forward passes over one row's minibatch served so far (:meth:`grad`, :meth:`batch_value`)."""
    backwards: int = 0
    """Backward passes over one row's minibatch served so far (:meth:`grad`)."""

    def __init__(
        self,
        config: DigitsConfig,
        seed: int,
        data_ranks: torch.Tensor,
        num_data_nodes: int,
        device: torch.device,
    ) -> None:
        self.config = config
        self.seed = int(seed)
        self.device = device
        self.dtype = torch.float32
        self.model = build_model(config)
        self.dim = self.model.dim
        self._bn = self.model.has_bn
        self.running = isinstance(config, DigitsModelConfig) and config.batchnorm == "running"
        self.buf_dim = self.model.buf_dim if self.running else 0
        self.data_ranks = ranks = check_ranks(data_ranks, num_data_nodes, device)
        k = len(ranks)

        X_train, y_train, X_test, y_test = self.dataset()
        self.num_features = nf = int(X_train.shape[1])
        part_rng = np.random.default_rng(rng.numpy_seed(self.seed, "partition"))
        parts = partition(config.partition, y_train, num_data_nodes, part_rng)
        sizes = np.array([len(p) for p in parts], dtype=np.int64)
        self.max_m = max_m = max(1, int(sizes.max()))
        empty = np.flatnonzero(sizes == 0).tolist()
        self.info: dict[str, object] = {
            "train_samples": len(y_train),
            "test_samples": len(y_test),
            "partitioned_samples": int(sizes.sum()),
            "min_node_samples": int(sizes.min()),
            "max_node_samples": int(sizes.max()),
            "empty_nodes": empty,
        }
        if empty:
            log.warning(
                "digits: %d of %d data nodes have no training samples (p_i = 0): %s",
                len(empty),
                num_data_nodes,
                empty[:20],
            )

        Xp = np.zeros((k, max_m, nf), dtype=np.float32)
        yp = np.zeros((k, max_m), dtype=np.int64)
        classes = np.zeros((k, NUM_CLASSES), dtype=bool)
        for i, rank in enumerate(ranks.cpu().tolist()):
            idx = parts[rank]
            Xp[i, : len(idx)] = X_train[idx]
            yp[i, : len(idx)] = y_train[idx]
            classes[i, np.unique(y_train[idx])] = True
        counts = torch.from_numpy(sizes[ranks.cpu().numpy()]).to(device)
        self.X = torch.from_numpy(Xp).to(device)
        self.labels = torch.from_numpy(yp).to(device)
        self.counts = counts
        self._X_flat = self.X.view(k * max_m, nf)
        self._labels_flat = self.labels.view(k * max_m)
        self.mask = (torch.arange(max_m, device=device) < counts.unsqueeze(1)).float()
        self._full_w = self.mask / counts.clamp(min=1).unsqueeze(1).float()
        self.num_samples = counts.double()
        # p_i over the partitioned samples (the classes split drops its trimmed surplus)
        self.weights = counts.double() / max(1, int(sizes.sum()))
        self.classes = torch.from_numpy(classes).to(device)
        """``[k, 10]`` bool: the classes among each hosted node's training samples."""
        self.X_test = torch.from_numpy(np.array(X_test, dtype=np.float32)).to(device)
        self.y_test = torch.from_numpy(np.array(y_test, dtype=np.int64)).to(device)
        widest = max(e.shape[-1] for e in self.layout.params if e.shape)
        self._bytes_per_node = self.max_m * (nf + 2 * widest) * 8
        self._B = (
            self.model.init_buffers(k, self.dtype, device)
            if self.running
            else torch.zeros(k, 0, dtype=self.dtype, device=device)
        )
        """Running statistics ``[k, buf_dim]`` of the hosted nodes (``[k, 0]`` without)."""

    def dataset(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(X_train [m, F], y_train [m], X_test, y_test)``: here the digits with the
        stratified ``test_fraction`` split (problems on other data override this)."""
        X_all, y_all = load()
        train, test = split(y_all, self.config.test_fraction, self.seed)
        return X_all[train], y_all[train], X_all[test], y_all[test]

    @property
    def layout(self) -> ParamLayout:
        """The model's :class:`~fedopt.models.ParamLayout` (parameter and buffer rows)."""
        return self.model.layout

    # ------------------------------------------------------------------ model

    def _buffers(self, n: int, W: torch.Tensor) -> torch.Tensor | None:
        """Scratch BatchNorm buffer rows (batch statistics only: written, never read)."""
        return self.model.init_buffers(n, W.dtype, W.device) if self._bn else None

    def _logits(
        self, W: torch.Tensor, inputs: torch.Tensor, B: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits ``[n, S, 10]`` of every node's rows ``W [n, dim]`` on ``inputs [n, S, 64]``.

        With running statistics: eval mode on the buffer rows ``B [n, buf_dim]``.
        Differentiable in ``W`` (callers may backpropagate through :meth:`value`).
        """
        if self.running:
            return self.model.forward(W, inputs, B, train=False, differentiable=True)
        B = self._buffers(len(W), W)
        return self.model.forward(W, inputs, B, train=self._bn, differentiable=True)

    def _grad_rows(
        self,
        W: torch.Tensor,
        Xb: torch.Tensor,
        lab: torch.Tensor,
        wts: torch.Tensor,
        B: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Gradient ``[n, dim]`` of ``sum_s wts[n, s] * CE(sample s)`` (the model's kernel
        where it has one). Train mode; the running statistics in ``B`` (when given) are
        updated in place, else scratch rows are."""
        if B is None:
            B = self._buffers(len(W), W)
        return self.model.grad(W, Xb, lab, B, weights=wts, train=self._bn)

    def _full_batches(self, rows: torch.Tensor) -> Iterator[tuple[Any, int]]:
        """``(selection of rows, samples)`` covering ``rows`` for full-batch passes.

        Without BatchNorm: chunks of consecutive rows on the padded data (the padding has
        weight 0). With BatchNorm the batch statistics must see a node's own samples only,
        so the rows with ``m`` samples go together on their first ``m`` samples (nodes
        without samples are skipped).
        """
        if not self._bn:
            for sl in row_chunks(len(rows), self._bytes_per_node):
                yield sl, self.max_m
            return
        counts = self.counts.index_select(0, rows)
        for m in torch.unique(counts).tolist():
            if m > 0:
                yield torch.nonzero(counts == m).squeeze(1), int(m)

    def _data(self, r: torch.Tensor, m: int, t: torch.Tensor) -> torch.Tensor:
        """Rows ``r`` of the padded per-node tensor ``t``, cut to ``m`` samples."""
        out = take(t, r)
        return out if m == self.max_m else out[:, :m]

    def _finish(self, out: torch.Tensor, W: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Add the ridge term and zero the gradient of nodes without samples."""
        if self.config.l2 > 0:
            out.add_(W, alpha=self.config.l2)
        empty = self.counts.index_select(0, rows) == 0
        if bool(empty.any()):
            out[empty] = 0.0
        return out

    # ------------------------------------------------------------------ oracle

    def _ranks(self, rows: torch.Tensor) -> torch.Tensor:
        return self.data_ranks.index_select(0, rows)

    def init_params(self, rows: torch.Tensor) -> torch.Tensor:
        ranks = self._ranks(rows)
        if self.config.same_init:
            ranks = torch.zeros_like(ranks)
        return self.layout.init_params(self.seed, ranks, self.dtype)

    def batch_indices(self, rows: torch.Tensor, step: Step) -> torch.Tensor:
        """``[len(rows), batch_size]`` sample indices of each node's minibatch at ``step``.

        Indices lie in ``[0, m_i)``; a node without samples gets zeros (masked out).
        """
        keys = rng.node_keys(self.seed, "batch", self._ranks(rows), step)
        return rng.randint(keys, self.config.batch_size, self.counts.index_select(0, rows))

    def full_grad(self, X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Exact gradient (train mode); it leaves the running statistics alone."""
        return self._full_grad(X.to(self.dtype), rows, flip=False)

    def _full_grad(
        self, W: torch.Tensor, rows: torch.Tensor, flip: bool, update: bool = False
    ) -> torch.Tensor:
        out = torch.zeros_like(W) if self._bn else torch.empty_like(W)
        if flip and not self._bn:  # one node at a time (as the attack was first written)
            batches: Iterator[tuple[Any, int]] = (
                (slice(i, i + 1), self.max_m) for i in range(len(rows))
            )
        else:
            batches = self._full_batches(rows)
        for sl, m in batches:
            r = rows[sl]
            lab = self._data(r, m, self.labels)
            if flip:
                lab = (NUM_CLASSES - 1) - lab
            B = self._B.index_select(0, r) if update and self.running else None
            out[sl] = self._grad_rows(
                W[sl], self._data(r, m, self.X), lab, self._data(r, m, self._full_w), B
            )
            if B is not None:  # groups hold nodes with samples only
                self._B.index_copy_(0, r, B)
        return self._finish(out, W, rows)

    def grad(self, X: torch.Tensor, rows: torch.Tensor, step: Step) -> torch.Tensor:
        """Minibatch gradient; with running statistics it updates the rows' statistics."""
        self.forwards += len(rows)
        self.backwards += len(rows)
        return self._minibatch_grad(X, rows, step, flip=False, update=True)

    num_classes = NUM_CLASSES

    def flipped_grad(self, X: torch.Tensor, rows: torch.Tensor, step: Step) -> torch.Tensor:
        """:meth:`grad` on the same minibatch with every label ``y`` mapped to ``9 - y``.

        What a label-flipping attacker computes (Allen-Zhu et al., ICLR 2021; the MoNNA
        paper's LF attack).
        """
        return self._minibatch_grad(X, rows, step, flip=True)

    def _minibatch_grad(
        self, X: torch.Tensor, rows: torch.Tensor, step: Step, flip: bool, update: bool = False
    ) -> torch.Tensor:
        B = self.config.batch_size
        W = X.to(self.dtype)
        if B == 0:
            return self._full_grad(W, rows, flip, update)
        n = len(rows)
        flat = self.batch_indices(rows, step).add_(rows.unsqueeze(1) * self.max_m).view(-1)
        Xb = self._X_flat.index_select(0, flat).view(n, B, self.num_features)
        lab = self._labels_flat.index_select(0, flat).view(n, B)
        if flip:
            lab = (NUM_CLASSES - 1) - lab
        wts = torch.full((n, B), 1.0 / B, dtype=self.dtype, device=W.device)
        if not (update and self.running):
            return self._finish(self._grad_rows(W, Xb, lab, wts), W, rows)
        stats = self._B.index_select(0, rows)
        G = self._grad_rows(W, Xb, lab, wts, stats)
        kept = self.counts.index_select(0, rows) > 0  # a node without samples keeps its row
        self._B.index_copy_(0, rows[kept], stats[kept])
        return self._finish(G, W, rows)

    def batch_value(self, X: torch.Tensor, rows: torch.Tensor, step: Step) -> torch.Tensor:
        """Mean cross-entropy ``[k]`` float64 of each row on :meth:`grad`'s minibatch at
        ``step`` (train mode as the gradient's pass; running statistics are left alone),
        plus the ridge term; ``batch_size: 0`` is the full local loss."""
        B = self.config.batch_size
        self.forwards += len(rows)
        if B == 0:
            return self.value(X, rows)
        W = X.to(self.dtype)
        n = len(rows)
        flat = self.batch_indices(rows, step).add_(rows.unsqueeze(1) * self.max_m).view(-1)
        Xb = self._X_flat.index_select(0, flat).view(n, B, NUM_FEATURES)
        lab = self._labels_flat.index_select(0, flat).view(n, B)
        logits = self.model.forward(W, Xb, self._buffers(n, W), train=self._bn)
        logp = torch.log_softmax(logits.double(), dim=2)
        loss = -logp.gather(2, lab.unsqueeze(2)).squeeze(2).mean(dim=1)
        loss = loss * (self.counts.index_select(0, rows) > 0).double()
        return loss.add_(self._penalty(X, rows)) if self.config.l2 > 0 else loss

    def _losses(
        self, X: torch.Tensor, rows: torch.Tensor, B: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-node mean cross-entropy ``[n]`` float64 and correct predictions ``[n]``
        (running statistics: eval mode on the buffer rows ``B [n, buf_dim]``)."""
        W = X.to(self.dtype)
        loss = torch.zeros(len(rows), dtype=torch.float64, device=X.device)
        correct = torch.zeros(len(rows), dtype=torch.int64, device=X.device)
        for sl, m in self._full_batches(rows):
            r = rows[sl]
            stats = B[sl] if B is not None else None
            logits = self._logits(W[sl].contiguous(), self._data(r, m, self.X), stats)
            lab = self._data(r, m, self.labels)
            mask = self._data(r, m, self.mask).bool()
            logp = torch.log_softmax(logits.double(), dim=2)
            nll = -logp.gather(2, lab.unsqueeze(2)).squeeze(2)
            total = torch.where(mask, nll, torch.zeros_like(nll)).sum(dim=1)
            loss[sl] = total / take(self.counts, r).clamp(min=1).double()
            hits = (logits.argmax(dim=2) == lab) & mask
            correct[sl] = hits.sum(dim=1)
        return loss, correct

    def _penalty(self, X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        pen = X.to(self.dtype).double().square().sum(dim=1).mul_(self.config.l2 / 2)
        return pen.mul_((self.counts.index_select(0, rows) > 0).double())

    def value(
        self, X: torch.Tensor, rows: torch.Tensor, buffers: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``f_i`` at each row; with running statistics in eval mode on ``buffers``
        (``[k, buf_dim]`` or one ``[buf_dim]`` row for all; default the rows' own)."""
        loss, _ = self._losses(X, rows, self._eval_buffers(rows, buffers))
        return loss.add_(self._penalty(X, rows)) if self.config.l2 > 0 else loss

    def evaluate(self, x: torch.Tensor, buffers: torch.Tensor | None = None) -> dict[str, float]:
        """Additive sums of one model ``x`` (and its running statistics ``buffers
        [buf_dim]``; default each node's own) on the hosted nodes."""
        rows = torch.arange(len(self.data_ranks), device=self.device)
        X = x.to(self.dtype).unsqueeze(0).expand(len(rows), -1)
        loss, correct = self._losses(X, rows, self._eval_buffers(rows, buffers))
        if self.config.l2 > 0:
            loss.add_(self._penalty(X, rows))
        return {
            "loss": float((loss * self.weights).sum()),
            "correct": float(correct.sum()),
            "count": float(self.counts.sum()),
        }

    def evaluate_test(
        self, x: torch.Tensor, buffers: torch.Tensor | None = None
    ) -> dict[str, float]:
        """Mean cross-entropy and accuracy of ``x`` on the held-out test set.

        With BatchNorm batch statistics the test set is one batch, normalised with its own
        statistics; with running statistics, eval mode on ``buffers [buf_dim]`` (needed).
        """
        if len(self.y_test) == 0:
            return {}
        W = x.to(self.dtype).reshape(1, -1)
        if self.running and buffers is None:
            raise ValueError(
                "evaluate_test: the model keeps running statistics (batchnorm: running); "
                f"pass the model's buffer row buffers=[{self.buf_dim}]"
            )
        B = self._eval_buffers(torch.zeros(1, dtype=torch.int64), buffers)
        with torch.no_grad():
            logits = self._logits(W, self.X_test.unsqueeze(0), B)
        logp = torch.log_softmax(logits[0].double(), dim=1)
        nll = -logp.gather(1, self.y_test.unsqueeze(1)).squeeze(1)
        acc = (logits[0].argmax(dim=1) == self.y_test).double().mean()
        return {"test_loss": float(nll.mean()), "test_accuracy": float(acc)}

    # ------------------------------------------------------------------ capability: model

    def _eval_buffers(
        self, rows: torch.Tensor, buffers: torch.Tensor | None
    ) -> torch.Tensor | None:
        """Buffer rows ``[len(rows), buf_dim]`` for an evaluation (None without running
        statistics): ``buffers`` (one row broadcast to all) or the rows' own."""
        if not self.running:
            return None
        if buffers is None:
            return self._B.index_select(0, rows)
        B = buffers.to(device=self._B.device, dtype=self.dtype)
        if B.ndim == 1:
            B = B.unsqueeze(0).expand(len(rows), -1)
        if B.shape != (len(rows), self.buf_dim):
            raise ValueError(
                f"buffers: expected [{len(rows)}, {self.buf_dim}] or [{self.buf_dim}], "
                f"got {list(buffers.shape)}"
            )
        return B

    def buffers(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """The rows' running statistics by name, ``{"bn1.running_mean": [k, c1], ...}``
        (``{}`` without running statistics)."""
        if not self.running:
            return {}
        return dict(self.layout.unflatten_buffers(self.get_buffers(rows)))

    def get_buffers(self, rows: torch.Tensor) -> torch.Tensor:
        """A copy of the rows' buffer rows ``[k, buf_dim]`` (``[k, 0]`` without)."""
        return self._B.index_select(0, rows)

    def set_buffers(self, rows: torch.Tensor, B: torch.Tensor) -> None:
        """Replace the rows' buffer rows by ``B [k, buf_dim]`` (what a node received)."""
        if B.shape != (len(rows), self.buf_dim):
            raise ValueError(
                f"set_buffers: expected [{len(rows)}, {self.buf_dim}] buffer rows, "
                f"got {list(B.shape)}"
            )
        if self.buf_dim:
            self._B.index_copy_(0, rows, B.to(device=self._B.device, dtype=self.dtype))

    def reset_buffers(
        self, X: torch.Tensor, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """BN reset of the parameter rows ``X`` on each node's own training samples.

        The statistics are recomputed as torch's ``momentum=None`` does
        (:func:`fedopt.models.reset_bn`): reset, then train-mode forward passes without
        gradients over the node's samples in order, in batches of ``batch_size`` (one
        batch of all for ``batch_size: 0``), each statistic the cumulative average of the
        batch statistics. A node without samples gets the initial statistics. The oracle
        keeps the new rows.

        Returns
        -------
        tuple
            ``(buffers [k, buf_dim], forward passes [k] int64)``.
        """
        counts = self.counts.index_select(0, rows)
        k = len(rows)
        if not self.running or k == 0:
            return self._B.new_zeros(k, self.buf_dim), torch.zeros(k, dtype=torch.int64)
        bs = self.config.batch_size
        W = X.to(self.dtype)
        with torch.no_grad():
            B = reset_bn(self.model, W, take(self.X, rows), batch_size=bs or None, counts=counts)
        self._B.index_copy_(0, rows, B)
        passes = (counts + bs - 1) // bs if bs else (counts > 0).to(torch.int64)
        return B, passes.cpu()

    def evaluate_nodes(
        self, X: torch.Tensor, rows: torch.Tensor, buffers: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Every row's own model on its node's training samples and on the test set.

        Row ``j`` is node ``rows[j]``'s model ``X[j]`` (with running statistics: eval mode
        on ``buffers[j]``, default the node's own row). Returns ``[k]`` float64 tensors:
        ``loss`` (``f_i``, :meth:`value`), ``correct`` and ``count`` on the node's training
        samples, and ``test_loss``, ``test_accuracy`` on the whole test set (as
        :meth:`evaluate_test` for each row; absent without a test set) and
        ``own_classes_test_accuracy``, the accuracy on the test samples of the classes the
        node holds (:meth:`node_classes`; NaN for a node without samples).
        """
        B = self._eval_buffers(rows, buffers)
        W = X.to(self.dtype)
        with torch.no_grad():
            loss, correct = self._losses(W, rows, B)
            if self.config.l2 > 0:
                loss.add_(self._penalty(W, rows))
            out = {
                "loss": loss,
                "correct": correct.double(),
                "count": self.counts.index_select(0, rows).double(),
            }
            n_test = len(self.y_test)
            if n_test and len(rows):
                inputs = self.X_test.unsqueeze(0).expand(len(rows), -1, -1)
                logits = self._logits(W.contiguous(), inputs, B)
                logp = torch.log_softmax(logits.double(), dim=2)
                y = self.y_test.unsqueeze(0).expand(len(rows), -1)
                nll = -logp.gather(2, y.unsqueeze(2)).squeeze(2)
                out["test_loss"] = nll.mean(dim=1)
                hits = (logits.argmax(dim=2) == y).double()
                out["test_accuracy"] = hits.mean(dim=1)
                own = self.classes.index_select(0, rows).gather(1, y)  # test sample in i's classes
                n_own = own.double().sum(dim=1)
                acc = (hits * own).sum(dim=1) / n_own.clamp(min=1)
                out["own_classes_test_accuracy"] = torch.where(n_own > 0, acc, torch.nan)
        return out

    def node_classes(self, rows: torch.Tensor) -> torch.Tensor:
        """``[k, 10]`` bool: which classes each row's node holds among its training samples
        (DIMAT's per-agent class set under a non-IID split)."""
        return self.classes.index_select(0, rows)

    def activations(
        self,
        X: torch.Tensor,
        rows: torch.Tensor,
        points: Sequence[str] | None = None,
        data: str | torch.Tensor = "train",
        samples: int | None = None,
        buffers: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Activations ``{group: [k, samples x positions, units]}`` of every row's model.

        ``points`` are permutable groups of the layout that have a capture point
        (default: all; :meth:`fedopt.models.BatchedModel.capture`). ``data``:

        * ``"train"``: each node's own first ``samples`` training samples (default the
          fewest samples of the rows; every row needs that many);
        * ``"test"``: the first ``samples`` test samples (default all), the same for every
          row;
        * a tensor ``[k, b, 64]`` of inputs.

        BatchNorm: with running statistics eval mode on ``buffers`` (default the rows'
        own), else the batch's own statistics (scratch rows: nothing is updated).
        """
        W = X.to(self.dtype)
        k = len(rows)
        if isinstance(data, torch.Tensor):
            inputs = data.to(device=W.device, dtype=self.dtype)
        elif data == "train":
            counts = self.counts.index_select(0, rows)
            fewest = int(counts.min()) if k else 0
            s = fewest if samples is None else int(samples)
            if not 1 <= s <= fewest:
                raise ValueError(
                    f"activations: data='train' takes the first {s} samples of every row, but "
                    f"the rows hold {fewest} at least; pass samples between 1 and {fewest} "
                    "(rows without samples cannot be captured on their own data)"
                )
            inputs = take(self.X, rows)[:, :s]
        elif data == "test":
            n_test = len(self.y_test)
            s = n_test if samples is None else int(samples)
            if not 1 <= s <= n_test:
                raise ValueError(
                    f"activations: samples={s}, the test set holds {n_test}; pass 1..{n_test}"
                )
            inputs = self.X_test[:s].unsqueeze(0).expand(k, -1, -1)
        else:
            raise ValueError(
                f"activations: data={data!r}; use 'train', 'test' or a [k, b, 64] tensor"
            )
        if self.running:
            B = self._eval_buffers(rows, buffers)
            return self.model.capture(W, inputs, B, points, train=False)
        return self.model.capture(W, inputs, self._buffers(k, W), points, train=self._bn)


def _data_bytes(config: DigitsConfig, num_nodes: int) -> tuple[int, str]:
    """Upper bound of the padded training data ``[k, max_m]`` (features, labels, masks)
    and of one batched forward pass over it."""
    total = 1797  # samples of load_digits (before the test split)
    train = total - math.floor(config.test_fraction * total) + NUM_CLASSES
    part = config.partition
    if part.kind == "iid":
        max_m = math.ceil(train / num_nodes)
    elif part.kind == "shards":
        per = math.ceil(train / (num_nodes * part.shards_per_node)) + 1
        max_m = part.shards_per_node * per
    else:  # a Dirichlet draw may give one node almost everything
        max_m = train
    max_m = max(1, min(train, max_m))
    width = config.hidden if isinstance(config, DigitsMLPConfig) else 0
    per_slot = NUM_FEATURES * 4 + 8 + 2 * 4 + 3 * (width + NUM_CLASSES) * 4
    return num_nodes * max_m * per_slot, f"{num_nodes:,} nodes x {max_m:,} samples x {per_slot} B"


def _summary(config: DigitsConfig) -> dict[str, object]:
    _, y = load()
    train, test = split(y, config.test_fraction, 0)
    return {
        "dim": build_model(config).dim,
        "classes": NUM_CLASSES,
        "train_samples": len(train),
        "test_samples": len(test),
        "partition": config.partition.kind,
    }


@PROBLEMS.register("digits_softmax")
class DigitsSoftmax(Problem):
    """Multinomial logistic regression ``64 -> 10`` with bias on scikit-learn digits."""

    Config = DigitsSoftmaxConfig

    oracle_class = DigitsOracle

    @classmethod
    def param_dim(cls, config: ProblemConfig) -> int | None:
        return build_model(coerce_config(config, DigitsSoftmaxConfig, "problem")).layout.dim

    @classmethod
    def data_bytes(cls, config: ProblemConfig, num_nodes: int) -> tuple[int, str]:
        return _data_bytes(coerce_config(config, DigitsSoftmaxConfig, "problem"), num_nodes)

    @staticmethod
    def summary(config: ProblemConfig) -> dict[str, object]:
        return _summary(coerce_config(config, DigitsSoftmaxConfig, "problem"))


@PROBLEMS.register("digits_mlp")
class DigitsMLP(Problem):
    """MLP ``64 -> hidden -> 10`` (ReLU, biases) on scikit-learn digits."""

    Config = DigitsMLPConfig

    oracle_class = DigitsOracle

    @classmethod
    def param_dim(cls, config: ProblemConfig) -> int | None:
        return build_model(coerce_config(config, DigitsMLPConfig, "problem")).layout.dim

    @classmethod
    def data_bytes(cls, config: ProblemConfig, num_nodes: int) -> tuple[int, str]:
        return _data_bytes(coerce_config(config, DigitsMLPConfig, "problem"), num_nodes)

    @staticmethod
    def summary(config: ProblemConfig) -> dict[str, object]:
        return _summary(coerce_config(config, DigitsMLPConfig, "problem"))


@PROBLEMS.register("digits_model")
class DigitsModel(Problem):
    """Any registered model of :mod:`fedopt.models` (default the CNN ``digits_cnn_bn``) on
    scikit-learn digits."""

    Config = DigitsModelConfig

    oracle_class = DigitsOracle

    @classmethod
    def param_dim(cls, config: ProblemConfig) -> int | None:
        return build_model(coerce_config(config, DigitsModelConfig, "problem")).layout.dim

    @classmethod
    def data_bytes(cls, config: ProblemConfig, num_nodes: int) -> tuple[int, str]:
        return _data_bytes(coerce_config(config, DigitsModelConfig, "problem"), num_nodes)

    @classmethod
    def buffer_dim(cls, config: ProblemConfig) -> int:
        cfg = coerce_config(config, DigitsModelConfig, "problem")
        return build_model(cfg).buf_dim if cfg.batchnorm == "running" else 0

    @staticmethod
    def summary(config: ProblemConfig) -> dict[str, object]:
        cfg = coerce_config(config, DigitsModelConfig, "problem")
        out = {**_summary(cfg), "model": cfg.model.name}
        if cfg.batchnorm == "running":
            out["buf_dim"] = build_model(cfg).buf_dim
        return out

"""Handwritten digits classification (``digits_softmax``, ``digits_mlp``).

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

where ``h_x`` is a linear model ``64 -> 10`` with bias (``digits_softmax``, 650
parameters) or an MLP ``64 -> hidden -> 10`` with ReLU and biases (``digits_mlp``,
``75 * hidden + 10`` parameters). A node with no samples has ``p_i = 0`` and
``f_i = 0`` (zero gradient); such nodes are listed in the oracle's ``info``.

Parameters are one flat vector per node, layer after layer: ``W`` (``in x out``, row
major) then ``b``. Initialisation is the usual fan-in uniform
``U(-1/sqrt(in), 1/sqrt(in))`` for weights and biases, from ``fedopt.rng`` keyed by
``("init", data rank)``, or data rank 0's key for every node when ``same_init`` (the
default, so consensus methods start from one model).

Gradients of a batch of nodes come from one batched forward/backward pass
(``torch.bmm`` over nodes, explicit backpropagation). Node data are stored padded to
the largest node of the whole partition, ``[k, max_m, 64]``, with per-node counts;
minibatches are ``batch_size`` samples drawn with replacement from the node's own
samples (``batch_size: 0`` = full batch).
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from fedopt import rng
from fedopt.fields import COUNT_MAX
from fedopt.problems._common import bmm, check_ranks, coerce_config, row_chunks, take
from fedopt.problems.base import Oracle, Problem, ProblemConfig, Step
from fedopt.problems.capabilities import Capability
from fedopt.problems.partition import PartitionConfig, partition
from fedopt.problems.registry import PROBLEMS

log = logging.getLogger(__name__)

NUM_FEATURES = 64
NUM_CLASSES = 10


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


def layer_sizes(config: DigitsConfig) -> list[tuple[int, int]]:
    """``(in, out)`` of each linear layer."""
    if isinstance(config, DigitsMLPConfig):
        return [(NUM_FEATURES, config.hidden), (config.hidden, NUM_CLASSES)]
    return [(NUM_FEATURES, NUM_CLASSES)]


class Layout:
    """Offsets of each layer's ``W [in, out]`` and ``b [out]`` in the flat parameter vector."""

    def __init__(self, sizes: list[tuple[int, int]]) -> None:
        self.sizes = sizes
        self.offsets: list[tuple[int, int]] = []
        off = 0
        for fan_in, fan_out in sizes:
            self.offsets.append((off, off + fan_in * fan_out))
            off += fan_in * fan_out + fan_out
        self.dim = off

    def unpack(self, X: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Views ``(W [n, in, out], b [n, out])`` per layer into ``X [n, dim]``."""
        n = X.shape[0]
        out = []
        for (fan_in, fan_out), (w, b) in zip(self.sizes, self.offsets, strict=True):
            out.append((X[:, w:b].view(n, fan_in, fan_out), X[:, b : b + fan_out]))
        return out

    def init_bounds(self) -> torch.Tensor:
        """``[dim]`` float64 fan-in bounds ``1/sqrt(in)`` of every parameter."""
        bounds = torch.empty(self.dim, dtype=torch.float64)
        for (fan_in, fan_out), (w, b) in zip(self.sizes, self.offsets, strict=True):
            bounds[w : b + fan_out] = fan_in**-0.5
        return bounds


class DigitsOracle(Oracle):
    """Oracle of the digits problems for the hosted data nodes.

    Capabilities: ``labels`` (ten classes; :meth:`flipped_grad` maps ``y -> 9 - y``).

    Attributes
    ----------
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

    capabilities = frozenset({Capability.LABELS})

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
        self.layout = Layout(layer_sizes(config))
        self.dim = self.layout.dim
        self.data_ranks = ranks = check_ranks(data_ranks, num_data_nodes, device)
        k = len(ranks)

        X_all, y_all = load()
        train, test = split(y_all, config.test_fraction, self.seed)
        part_rng = np.random.default_rng(rng.numpy_seed(self.seed, "partition"))
        parts = partition(config.partition, y_all[train], num_data_nodes, part_rng)
        sizes = np.array([len(p) for p in parts], dtype=np.int64)
        self.max_m = max_m = max(1, int(sizes.max()))
        empty = np.flatnonzero(sizes == 0).tolist()
        self.info: dict[str, object] = {
            "train_samples": len(train),
            "test_samples": len(test),
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

        Xp = np.zeros((k, max_m, NUM_FEATURES), dtype=np.float32)
        yp = np.zeros((k, max_m), dtype=np.int64)
        for i, rank in enumerate(ranks.cpu().tolist()):
            idx = train[parts[rank]]
            Xp[i, : len(idx)] = X_all[idx]
            yp[i, : len(idx)] = y_all[idx]
        counts = torch.from_numpy(sizes[ranks.cpu().numpy()]).to(device)
        self.X = torch.from_numpy(Xp).to(device)
        self.labels = torch.from_numpy(yp).to(device)
        self.counts = counts
        self._X_flat = self.X.view(k * max_m, NUM_FEATURES)
        self._labels_flat = self.labels.view(k * max_m)
        self.mask = (torch.arange(max_m, device=device) < counts.unsqueeze(1)).float()
        self._full_w = self.mask / counts.clamp(min=1).unsqueeze(1).float()
        self.num_samples = counts.double()
        self.weights = counts.double() / len(train)
        self.X_test = torch.from_numpy(X_all[test]).to(device)
        self.y_test = torch.from_numpy(y_all[test]).to(device)

    # ------------------------------------------------------------------ model

    def _forward(
        self, W: torch.Tensor, Xb: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits ``[n, S, 10]`` and the input of every layer, for ``Xb [n, S, 64]``."""
        inputs = []
        h = Xb
        layers = self.layout.unpack(W)
        for i, (Wl, bl) in enumerate(layers):
            inputs.append(h)
            h = bmm(h, Wl).add_(bl.unsqueeze(1))
            if i < len(layers) - 1:
                h = h.relu_()
        return h, inputs

    def _grad_batch(
        self, W: torch.Tensor, Xb: torch.Tensor, lab: torch.Tensor, wts: torch.Tensor
    ) -> torch.Tensor:
        """Gradient ``[n, dim]`` of ``sum_s wts[n, s] * CE(sample s)`` by backpropagation."""
        n = W.shape[0]
        logits, inputs = self._forward(W, Xb)
        d = torch.softmax(logits, dim=2)
        d.scatter_add_(2, lab.unsqueeze(2), torch.full_like(d[:, :, :1], -1.0))
        d.mul_(wts.unsqueeze(2))
        out = torch.empty(n, self.dim, dtype=self.dtype, device=W.device)
        layers = self.layout.unpack(W)
        for i in range(len(layers) - 1, -1, -1):
            Wl, _ = layers[i]
            w_off, b_off = self.layout.offsets[i]
            gW = bmm(inputs[i].transpose(1, 2), d)  # [n, in, out]
            out[:, w_off:b_off] = gW.reshape(n, -1)
            out[:, b_off : b_off + Wl.shape[2]] = d.sum(dim=1)
            if i > 0:
                d = bmm(d, Wl.transpose(1, 2)).mul_(inputs[i] > 0)
        return out

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
        u = rng.uniform(rng.node_keys(self.seed, "init", ranks, 0), self.dim, torch.float64)
        bounds = self.layout.init_bounds().to(u.device)
        return ((2.0 * u - 1.0) * bounds).to(self.dtype)

    def batch_indices(self, rows: torch.Tensor, step: Step) -> torch.Tensor:
        """``[len(rows), batch_size]`` sample indices of each node's minibatch at ``step``.

        Indices lie in ``[0, m_i)``; a node without samples gets zeros (masked out).
        """
        keys = rng.node_keys(self.seed, "batch", self._ranks(rows), step)
        return rng.randint(keys, self.config.batch_size, self.counts.index_select(0, rows))

    def full_grad(self, X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        W = X.to(self.dtype)
        out = torch.empty_like(W)
        per_node = self.max_m * (NUM_FEATURES + 2 * max(s[1] for s in self.layout.sizes)) * 8
        for sl in row_chunks(len(rows), per_node):
            r = rows[sl]
            out[sl] = self._grad_batch(
                W[sl], take(self.X, r), take(self.labels, r), take(self._full_w, r)
            )
        return self._finish(out, W, rows)

    def grad(self, X: torch.Tensor, rows: torch.Tensor, step: Step) -> torch.Tensor:
        return self._minibatch_grad(X, rows, step, flip=False)

    num_classes = NUM_CLASSES

    def flipped_grad(self, X: torch.Tensor, rows: torch.Tensor, step: Step) -> torch.Tensor:
        """:meth:`grad` on the same minibatch with every label ``y`` mapped to ``9 - y``.

        What a label-flipping attacker computes (Allen-Zhu et al., ICLR 2021; the MoNNA
        paper's LF attack).
        """
        return self._minibatch_grad(X, rows, step, flip=True)

    def _minibatch_grad(
        self, X: torch.Tensor, rows: torch.Tensor, step: Step, flip: bool
    ) -> torch.Tensor:
        B = self.config.batch_size
        W = X.to(self.dtype)
        if B == 0:
            if not flip:
                return self.full_grad(X, rows)
            out = torch.empty_like(W)
            for i in range(len(rows)):
                r = rows[i : i + 1]
                lab = (NUM_CLASSES - 1) - take(self.labels, r)
                out[i : i + 1] = self._grad_batch(
                    W[i : i + 1], take(self.X, r), lab, take(self._full_w, r)
                )
            return self._finish(out, W, rows)
        n = len(rows)
        flat = self.batch_indices(rows, step).add_(rows.unsqueeze(1) * self.max_m).view(-1)
        Xb = self._X_flat.index_select(0, flat).view(n, B, NUM_FEATURES)
        lab = self._labels_flat.index_select(0, flat).view(n, B)
        if flip:
            lab = (NUM_CLASSES - 1) - lab
        wts = torch.full((n, B), 1.0 / B, dtype=self.dtype, device=W.device)
        return self._finish(self._grad_batch(W, Xb, lab, wts), W, rows)

    def _losses(self, X: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-node mean cross-entropy ``[n]`` float64 and correct predictions ``[n]``."""
        W = X.to(self.dtype)
        loss = torch.empty(len(rows), dtype=torch.float64, device=X.device)
        correct = torch.empty(len(rows), dtype=torch.int64, device=X.device)
        per_node = self.max_m * (NUM_FEATURES + 2 * max(s[1] for s in self.layout.sizes)) * 8
        for sl in row_chunks(len(rows), per_node):
            r = rows[sl]
            logits, _ = self._forward(W[sl].contiguous(), take(self.X, r))
            lab = take(self.labels, r)
            mask = take(self.mask, r).bool()
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

    def value(self, X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        loss, _ = self._losses(X, rows)
        return loss.add_(self._penalty(X, rows)) if self.config.l2 > 0 else loss

    def evaluate(self, x: torch.Tensor) -> dict[str, float]:
        rows = torch.arange(len(self.data_ranks), device=self.device)
        X = x.to(self.dtype).unsqueeze(0).expand(len(rows), -1)
        loss, correct = self._losses(X, rows)
        if self.config.l2 > 0:
            loss.add_(self._penalty(X, rows))
        return {
            "loss": float((loss * self.weights).sum()),
            "correct": float(correct.sum()),
            "count": float(self.counts.sum()),
        }

    def evaluate_test(self, x: torch.Tensor) -> dict[str, float]:
        """Mean cross-entropy and accuracy of ``x`` on the held-out test set."""
        if len(self.y_test) == 0:
            return {}
        W = x.to(self.dtype).reshape(1, -1)
        logits, _ = self._forward(W, self.X_test.unsqueeze(0))
        logp = torch.log_softmax(logits[0].double(), dim=1)
        nll = -logp.gather(1, self.y_test.unsqueeze(1)).squeeze(1)
        acc = (logits[0].argmax(dim=1) == self.y_test).double().mean()
        return {"test_loss": float(nll.mean()), "test_accuracy": float(acc)}


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
        "dim": Layout(layer_sizes(config)).dim,
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
        return Layout(layer_sizes(coerce_config(config, DigitsSoftmaxConfig, "problem"))).dim

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
        return Layout(layer_sizes(coerce_config(config, DigitsMLPConfig, "problem"))).dim

    @classmethod
    def data_bytes(cls, config: ProblemConfig, num_nodes: int) -> tuple[int, str]:
        return _data_bytes(coerce_config(config, DigitsMLPConfig, "problem"), num_nodes)

    @staticmethod
    def summary(config: ProblemConfig) -> dict[str, object]:
        return _summary(coerce_config(config, DigitsMLPConfig, "problem"))

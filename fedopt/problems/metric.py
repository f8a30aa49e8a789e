"""Federated non-differentiable metric optimisation on digits (``digits_metric``, a black box).

The offline stand-in for FZooS's Covertype task (spec ``fzoos.md`` §2.8.3): an MLP
``64 -> 30 -> 14 -> 10`` (ReLU; ``d = 2,534`` parameters) is pre-trained with
cross-entropy on the training half of scikit-learn's digits (a stratified 50/50 split),
then the clients jointly tune a bounded perturbation of its parameters to raise a
*macro* classification metric on their own data, which has no useful gradient:

.. math::

    f_i(x) = 1 - \\mathrm{macro}_m\\bigl(\\theta^* + r\\,(2\\,\\mathrm{clip}_{[0,1]}(x) - 1);
             D_i\\bigr),

``r = radius`` (0.2), ``m`` one of F1, precision, recall, Jaccard (``metric``), ``D_i``
client ``i``'s samples. ``x_0 = 0.5 * 1`` is the pre-trained model itself. Clients are
built from the *test* half by class subsets: client ``i`` holds every test sample of
``max(2, round(10 P))`` classes (``portion = P``, keyed by (seed, "metric/classes",
data rank); larger ``P`` = less heterogeneous; two clients may share samples). The
macro average runs over the classes present in the client's labels or predictions
(scikit-learn's convention), a class with a zero denominator scoring 0.

Pre-training is deterministic and identical on every worker: full-batch Adam (lr 0.01,
``pretrain_steps`` steps) from a fan-in uniform initialisation keyed by
(seed, "metric/init"). Forward passes of a batch of perturbed models use
:func:`fedopt.numerics.bmm`, so a client's value does not depend on placement.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import pairwise
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from fedopt import rng
from fedopt.numerics import bmm
from fedopt.problems._common import check_ranks, coerce_config
from fedopt.problems.attack import class_subsets
from fedopt.problems.base import Oracle, Problem, ProblemConfig, Step
from fedopt.problems.capabilities import Capability, CountedQueries
from fedopt.problems.digits import load, split
from fedopt.problems.registry import PROBLEMS

LAYERS = (64, 30, 14, 10)
DIM = sum(a * b + b for a, b in pairwise(LAYERS))  # 2,534


class DigitsMetricConfig(ProblemConfig):
    """Hyperparameters of ``digits_metric``."""

    name: Literal["digits_metric"] = "digits_metric"
    metric: Literal["f1", "precision", "recall", "jaccard"] = Field(
        "f1", description="the macro metric m of f_i = 1 - macro m"
    )
    portion: float = Field(0.3, gt=0, le=1, description="P: fraction of the classes per client")
    radius: float = Field(
        0.2, gt=0, allow_inf_nan=False, description="r: parameter perturbation bound"
    )
    pretrain_steps: int = Field(
        150, ge=0, le=100_000, description="full-batch Adam steps of the pre-training"
    )
    dtype: Literal["float64"] = Field("float64", description="dtype of the parameters")


def unflatten(theta: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``[k, DIM]`` -> per layer ``(W [k, in, out], b [k, 1, out])`` (views)."""
    out, at = [], 0
    for a, b in pairwise(LAYERS):
        W = theta[:, at : at + a * b].reshape(-1, a, b)
        at += a * b
        out.append((W, theta[:, at : at + b].reshape(-1, 1, b)))
        at += b
    return out


def logits(theta: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``[k, m, 10]`` logits of models ``theta [k, DIM]`` on ``inputs [k, m, 64]``."""
    h = inputs
    layers = unflatten(theta)
    for i, (W, b) in enumerate(layers):
        h = bmm(h, W) + b
        if i < len(layers) - 1:
            h = torch.relu(h)
    return h


def macro_metric(
    pred: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor, metric: str
) -> torch.Tensor:
    """Macro ``metric`` of each row ``[k]``: predictions, labels and 0/1 mask ``[k, m]``.

    Per class ``c``: ``TP``, ``FP``, ``FN`` over the masked samples; F1 ``2TP/(2TP+FP+FN)``,
    precision ``TP/(TP+FP)``, recall ``TP/(TP+FN)``, Jaccard ``TP/(TP+FP+FN)`` (0 on a zero
    denominator); averaged over the classes that occur in the labels or predictions.
    """
    classes = LAYERS[-1]
    P = torch.nn.functional.one_hot(pred, classes).double() * mask.unsqueeze(2)
    T = torch.nn.functional.one_hot(truth, classes).double() * mask.unsqueeze(2)
    tp = (P * T).sum(dim=1)
    fp = P.sum(dim=1) - tp
    fn = T.sum(dim=1) - tp
    num, den = {
        "f1": (2 * tp, 2 * tp + fp + fn),
        "precision": (tp, tp + fp),
        "recall": (tp, tp + fn),
        "jaccard": (tp, tp + fp + fn),
    }[metric]
    score = torch.where(den > 0, num / den.clamp(min=1.0), torch.zeros_like(num))
    present = ((tp + fp + fn) > 0).double()
    return (score * present).sum(dim=1) / present.sum(dim=1).clamp(min=1.0)


def pretrain(seed: int, features: torch.Tensor, labels: torch.Tensor, steps: int) -> torch.Tensor:
    """``[DIM]`` float64 parameters after full-batch Adam on the mean cross-entropy."""
    parts = []
    for j, (a, b) in enumerate(pairwise(LAYERS)):
        keys = rng.node_keys(seed, "metric/init", torch.tensor([j]), 0)
        u = rng.uniform(keys, a * b + b, torch.float64)[0]
        parts.append((2 * u - 1) / a**0.5)  # U(-1/sqrt(in), 1/sqrt(in))
    theta = torch.cat(parts).requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=0.01)
    inputs = features.unsqueeze(0)
    for _ in range(steps):
        opt.zero_grad()
        out = logits(theta.unsqueeze(0), inputs)[0]
        torch.nn.functional.cross_entropy(out, labels).backward()
        opt.step()
    return theta.detach()


@lru_cache(maxsize=4)
def _setup(seed: int, steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pre-trained ``theta*``, the test-half images and their labels."""
    X, y = load()
    train, test = split(y, 0.5, seed)
    feats = torch.from_numpy(X.astype(np.float64))  # a copy
    labels = torch.from_numpy(y.copy())
    theta = pretrain(seed, feats[train], labels[train], steps)
    return theta, feats[test], labels[test]


class DigitsMetricOracle(CountedQueries, Oracle):
    """``1 - macro metric`` of the perturbed pre-trained MLP on each client's samples.

    Attributes
    ----------
    theta_star
        ``[DIM]`` the pre-trained parameters.
    inputs, labels, mask
        ``[k, m, 64]``, ``[k, m]``, ``[k, m]``: each hosted client's samples, padded to the
        largest client of the whole federation.
    """

    capabilities = frozenset({Capability.NOISY_QUERIES})
    has_gradients: ClassVar[bool] = False

    def __init__(
        self,
        config: DigitsMetricConfig,
        seed: int,
        data_ranks: torch.Tensor,
        num_data_nodes: int,
        device: torch.device,
    ) -> None:
        self.config = config
        self.seed = int(seed)
        self.dim = DIM
        self.dtype = torch.float64
        self.data_ranks = check_ranks(data_ranks, num_data_nodes, device)
        k = len(self.data_ranks)
        self.weights = torch.full((k,), 1.0 / num_data_nodes, dtype=torch.float64, device=device)
        theta, images, truth = _setup(self.seed, config.pretrain_steps)
        self.theta_star = theta.to(device)
        subsets = class_subsets(self.seed, int(num_data_nodes), config.portion)
        held = subsets[:, truth]  # [N, test samples]: client i holds sample s
        m = int(held.sum(dim=1).max())
        self.inputs = torch.zeros(k, m, LAYERS[0], dtype=torch.float64, device=device)
        self.labels = torch.zeros(k, m, dtype=torch.int64, device=device)
        self.mask = torch.zeros(k, m, dtype=torch.float64, device=device)
        for i, r in enumerate(self.data_ranks.tolist()):
            idx = torch.nonzero(held[r]).squeeze(1)
            self.inputs[i, : len(idx)] = images[idx].to(device)
            self.labels[i, : len(idx)] = truth[idx].to(device)
            self.mask[i, : len(idx)] = 1.0
        self.num_samples = self.mask.sum(dim=1)

    def params(self, X: torch.Tensor) -> torch.Tensor:
        """``theta* + r (2 clip(x, 0, 1) - 1)``: ``[k, DIM]`` float64."""
        return self.theta_star + self.config.radius * (2.0 * X.double().clamp(0.0, 1.0) - 1.0)

    def init_params(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.full((len(rows), DIM), 0.5, dtype=torch.float64)

    def grad(self, X: torch.Tensor, rows: torch.Tensor, step: Step) -> torch.Tensor:
        """Refused: the metric is a black box (``TypeError`` naming the fix)."""
        raise TypeError(
            "problem 'digits_metric' is a black box: f_i can only be queried (capability "
            "'noisy_queries'), it has no gradients; use a zeroth-order algorithm "
            "(fedzo, fedprox_zo, scaffold_zo1, scaffold_zo2)"
        )

    def full_grad(self, X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.grad(X, rows, 0)

    def sgd_step_(self, X: torch.Tensor, rows: torch.Tensor, step: Step, lr: float) -> None:
        self.grad(X, rows, step)

    def value(self, X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z = logits(self.params(X), self.inputs.index_select(0, rows))
        pred = z.argmax(dim=2)
        score = macro_metric(
            pred,
            self.labels.index_select(0, rows),
            self.mask.index_select(0, rows),
            self.config.metric,
        )
        return 1.0 - score


@PROBLEMS.register("digits_metric")
class DigitsMetric(Problem):
    """Federated tuning of a pre-trained MLP for a macro metric (black box)."""

    Config = DigitsMetricConfig
    oracle_class = DigitsMetricOracle

    @classmethod
    def param_dim(cls, config: ProblemConfig) -> int | None:
        return DIM

    @classmethod
    def data_bytes(cls, config: ProblemConfig, num_nodes: int) -> tuple[int, str]:
        """Each client's padded test samples (at most the 899 test images) and labels."""
        per = 899 * (LAYERS[0] + 2) * 8
        return num_nodes * per, f"{num_nodes:,} clients x {per:,} B"

    @staticmethod
    def summary(config: ProblemConfig) -> dict[str, object]:
        cfg = coerce_config(config, DigitsMetricConfig, "problem")
        return {"dim": DIM, "metric": cfg.metric, "portion": cfg.portion, "gradients": False}

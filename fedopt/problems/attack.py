"""Federated black-box adversarial attack on digits (``digits_attack``, a black box).

The offline stand-in for FZooS's MNIST/CIFAR attack (spec ``fzoos.md`` §2.8.2): ``N``
clients each own a private classifier, a multinomial logistic regression
``64 -> 10`` trained on the scikit-learn digits training split restricted to a random
subset of ``max(2, round(P * 10))`` classes (``portion = P``; larger ``P`` = less
heterogeneous). The clients jointly search one perturbation of one test image that
fools their ensemble; client ``i`` can only query the margin of its own model,

.. math::

    f_i(x) = z_{i, y}(a(x)) - \\max_{c \\neq y} z_{i, c}(a(x)),
    \\qquad a(x) = \\mathrm{clip}_{[0,1]}\\bigl(a_0 + \\epsilon\\,
        (2\\,\\mathrm{clip}_{[0,1]}(x) - 1)\\bigr),

``z_i`` the logits of model ``i``, ``y`` the true label of the image ``a_0``, ``x`` in
``[0, 1]^64`` (clipped inside ``f``, pitfall P7) and ``epsilon`` the perturbation bound
(default 0.1, the paper's CIFAR value; its MNIST value 0.3 fools these linear models
within a few rounds). ``F = (1/N) sum_i f_i``; the attack succeeds when
``F(x) < 0``, reported as ``attack_success`` (0 or 1) at every evaluation. The paper's
success rate over 15 images is the mean of ``attack_success`` over runs with
``image: 0 .. 14``.

Every worker trains all ``N`` classifiers in one batched, full-batch gradient descent
(``train_steps`` steps, lr 1, L2 ``1e-3``, zero init: deterministic, no RNG; about 97 %
test accuracy on a model's own classes), so every worker has the same bits for every
model and can evaluate the ensemble. Class subsets
are keyed by (seed, "attack/classes", data rank). The candidate images are the test
images whose ensemble margin at ``x_0`` is positive (correctly classified before the
attack), in a keyed order (``numpy_seed(seed, "attack/images")``); ``image`` picks one.

``init: center`` starts at ``x_0 = 0.5 * 1`` (zero perturbation). ``init: reference``
starts at ``x_0 = 0`` as the FZooS code does, which the box map sends to ``-epsilon`` on
every pixel, not to zero (pitfall P11); the candidate images are then those the
ensemble still classifies correctly at that point.
"""

from __future__ import annotations

from functools import lru_cache
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from fedopt import rng
from fedopt.errors import ConfigError
from fedopt.fields import COUNT_MAX
from fedopt.numerics import bmm
from fedopt.problems._common import check_ranks, coerce_config
from fedopt.problems.base import Oracle, Problem, ProblemConfig, Step
from fedopt.problems.capabilities import Capability, CountedQueries
from fedopt.problems.digits import load, split
from fedopt.problems.registry import PROBLEMS

PIXELS, CLASSES = 64, 10


class DigitsAttackConfig(ProblemConfig):
    """Hyperparameters of ``digits_attack``."""

    name: Literal["digits_attack"] = "digits_attack"
    portion: float = Field(
        0.5, gt=0, le=1, description="P: fraction of the 10 classes each client's model knows"
    )
    epsilon: float = Field(
        0.1, gt=0, le=1, allow_inf_nan=False, description="perturbation bound (pixels in [0, 1])"
    )
    image: int = Field(0, ge=0, le=COUNT_MAX, description="which candidate test image to attack")
    init: Literal["center", "reference"] = Field(
        "center", description="x_0: center = 0.5 (no perturbation); reference = 0 (P11)"
    )
    train_steps: int = Field(
        100, ge=1, le=100_000, description="full-batch GD steps training each classifier"
    )
    test_fraction: float = Field(0.25, gt=0, lt=1, description="held-out share of each class")
    dtype: Literal["float64"] = Field("float64", description="dtype of the parameters")


def class_subsets(seed: int, num_clients: int, portion: float) -> torch.Tensor:
    """``[N, 10]`` bool: the classes each client's model is trained on (keyed per rank)."""
    m = max(2, round(portion * CLASSES))
    keys = rng.node_keys(seed, "attack/classes", torch.arange(num_clients), 0)
    order = torch.argsort(rng.bits(keys, CLASSES), dim=1, stable=True)[:, :m]
    mask = torch.zeros(num_clients, CLASSES, dtype=torch.bool)
    mask.scatter_(1, order, True)
    return mask


def train_classifiers(
    features: torch.Tensor, labels: torch.Tensor, subsets: torch.Tensor, steps: int
) -> torch.Tensor:
    """``[N, 65, 10]`` float64 softmax-regression weights (bias row last), one per client.

    Full-batch gradient descent from zero on the mean cross-entropy over the client's
    samples (those whose label is in its subset) plus ``(1e-3 / 2) ||W||^2``, lr 1.
    """
    n, samples = len(subsets), len(labels)
    A = torch.cat([features, torch.ones(samples, 1, dtype=torch.float64)], dim=1)
    onehot = torch.nn.functional.one_hot(labels, CLASSES).double().unsqueeze(1)
    mask = subsets[:, labels].double().T  # [samples, N]
    scale = (mask / mask.sum(dim=0).clamp(min=1.0)).unsqueeze(2)
    W = torch.zeros(PIXELS + 1, n * CLASSES, dtype=torch.float64)  # every client side by side
    for _ in range(steps):  # one matrix product for all clients (the same on every worker)
        p = torch.softmax((A @ W).view(samples, n, CLASSES), dim=2)
        resid = ((p - onehot) * scale).view(samples, n * CLASSES)
        W = W - (A.T @ resid + 1e-3 * W)
    return W.view(PIXELS + 1, n, CLASSES).permute(1, 0, 2).contiguous()


def margins(W: torch.Tensor, images: torch.Tensor, label: int) -> torch.Tensor:
    """``z_y - max_{c != y} z_c`` of each model ``W [k, 65, 10]`` on ``images [k, 64]``."""
    A = torch.cat([images, torch.ones(len(images), 1, dtype=images.dtype)], dim=1)
    z = bmm(A.unsqueeze(1), W)[:, 0]  # [k, 10]
    others = torch.cat([z[:, :label], z[:, label + 1 :]], dim=1)
    return z[:, label] - others.max(dim=1).values


@lru_cache(maxsize=4)
def _models(
    seed: int, num_clients: int, portion: float, steps: int, fraction: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every client's model ``[N, 65, 10]``, the test images and their labels."""
    X, y = load()
    train, test = split(y, fraction, seed)
    feats = torch.from_numpy(X.astype(np.float64))  # a copy
    labels = torch.from_numpy(y.copy())
    subsets = class_subsets(seed, num_clients, portion)
    W = train_classifiers(feats[train], labels[train], subsets, steps)
    return W, feats[test], labels[test]


@lru_cache(maxsize=16)
def _setup(
    seed: int, num_clients: int, portion: float, steps: int, fraction: float, x0: float, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
    """Models, test images, labels and the candidate images' indices (keyed order)."""
    W, images, truth = _models(seed, num_clients, portion, steps, fraction)
    start = (images + eps * (2 * x0 - 1)).clamp(0, 1)
    good = []
    for j in range(len(images)):  # ensemble margin at x_0, models in rank order
        m = margins(W, start[j].expand(num_clients, -1), int(truth[j]))
        if float(m.sum()) / num_clients > 0:
            good.append(j)
    order = np.random.default_rng(rng.numpy_seed(seed, "attack/images")).permutation(len(good))
    return W, images, truth, np.asarray(good, dtype=np.int64)[order]


class DigitsAttackOracle(CountedQueries, Oracle):
    """Margins of the hosted clients' classifiers on the perturbed image (queries only).

    Attributes
    ----------
    W
        ``[k, 65, 10]`` the hosted clients' models (``W_all``: all ``N``, rank order).
    image, label
        The attacked test image ``[64]`` and its true class.
    """

    capabilities = frozenset({Capability.NOISY_QUERIES})
    has_gradients: ClassVar[bool] = False

    def __init__(
        self,
        config: DigitsAttackConfig,
        seed: int,
        data_ranks: torch.Tensor,
        num_data_nodes: int,
        device: torch.device,
    ) -> None:
        self.config = config
        self.seed = int(seed)
        self.dim = PIXELS
        self.dtype = torch.float64
        self.data_ranks = check_ranks(data_ranks, num_data_nodes, device)
        k = len(self.data_ranks)
        self.weights = torch.full((k,), 1.0 / num_data_nodes, dtype=torch.float64, device=device)
        self.num_samples = torch.ones(k, dtype=torch.float64, device=device)
        x0 = 0.5 if config.init == "center" else 0.0
        W, images, truth, candidates = _setup(
            self.seed,
            int(num_data_nodes),
            config.portion,
            config.train_steps,
            config.test_fraction,
            x0,
            config.epsilon,
        )
        if config.image >= len(candidates):
            raise ConfigError(
                f"problem.image: {config.image} is out of range: {len(candidates)} test images "
                f"are classified correctly by the ensemble at x_0; use 0..{len(candidates) - 1}"
            )
        j = int(candidates[config.image])
        self.x0 = x0
        self.candidates = len(candidates)
        self.W_all = W.to(device)
        self.W = self.W_all.index_select(0, self.data_ranks)
        self.image = images[j].to(device)
        self.label = int(truth[j])

    def perturbed(self, X: torch.Tensor) -> torch.Tensor:
        """``a(x) = clip(a_0 + eps (2 clip(x, 0, 1) - 1), 0, 1)``: ``[k, 64]`` float64."""
        delta = self.config.epsilon * (2.0 * X.double().clamp(0.0, 1.0) - 1.0)
        return (self.image + delta).clamp(0.0, 1.0)

    def init_params(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.full((len(rows), PIXELS), self.x0, dtype=torch.float64)

    def grad(self, X: torch.Tensor, rows: torch.Tensor, step: Step) -> torch.Tensor:
        """Refused: the classifiers are black boxes (``TypeError`` naming the fix)."""
        raise TypeError(
            "problem 'digits_attack' is a black box: f_i can only be queried (capability "
            "'noisy_queries'), it has no gradients; use a zeroth-order algorithm "
            "(fedzo, fedprox_zo, scaffold_zo1, scaffold_zo2)"
        )

    def full_grad(self, X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.grad(X, rows, 0)

    def sgd_step_(self, X: torch.Tensor, rows: torch.Tensor, step: Step, lr: float) -> None:
        self.grad(X, rows, step)

    def value(self, X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return margins(self.W.index_select(0, rows), self.perturbed(X), self.label)

    def evaluate_test(self, x: torch.Tensor) -> dict[str, float]:
        """``attack_success = 1`` when the ensemble margin ``F(x)`` is negative, else 0."""
        n = len(self.W_all)
        m = margins(self.W_all, self.perturbed(x.reshape(1, -1)).expand(n, -1), self.label)
        return {"attack_success": float(float(m.sum()) / n < 0)}


@PROBLEMS.register("digits_attack")
class DigitsAttack(Problem):
    """Federated black-box attack: one perturbation of a digit fooling N private models."""

    Config = DigitsAttackConfig
    oracle_class = DigitsAttackOracle

    @classmethod
    def param_dim(cls, config: ProblemConfig) -> int | None:
        return PIXELS

    @classmethod
    def data_bytes(cls, config: ProblemConfig, num_nodes: int) -> tuple[int, str]:
        """Every client's model (all ``N`` on every worker) and the digits set."""
        per = (PIXELS + 1) * CLASSES * 8 * 3
        data = 1797 * PIXELS * 8 * 4
        return num_nodes * per + data, f"{num_nodes:,} models x {per} B + digits {data:,} B"

    @staticmethod
    def summary(config: ProblemConfig) -> dict[str, object]:
        cfg = coerce_config(config, DigitsAttackConfig, "problem")
        return {"dim": PIXELS, "portion": cfg.portion, "epsilon": cfg.epsilon, "gradients": False}

"""``image_model``: any registered model on synthetic images or Fashion-MNIST.

The digits problems' oracle (:class:`~fedopt.problems.digits.DigitsOracle`: node-batched
cross-entropy of a :mod:`fedopt.models` network, minibatches keyed by
``(seed, "batch", data rank, step)``, BatchNorm modes, partitions, per-node class sets and
own-class accuracy) on other offline image sets (:mod:`fedopt.problems.image_data`):

* ``dataset: synthetic`` (default): ten classes of keyed synthetic ``image_size x
  image_size`` images, ``samples_per_class`` for training and ``test_per_class`` for
  the test set (default 8 x 8, so the digits models ``digits_mlp`` and
  ``digits_cnn_bn`` run on them unchanged);
* ``dataset: fashion_mnist``: Fashion-MNIST (28 x 28 = 784 features; 60,000 training
  and 10,000 test images) from Debian's ``dataset-fashion-mnist`` in ``data_dir``
  (default ``/usr/share/datasets/fashion-mnist``), checked when the config is validated:
  absent, a ``ConfigError`` names the package. ``max_train_samples`` /
  ``max_test_samples`` keep only the first images (the files are in random class order)
  for runs on a CPU.

Inputs are the flat pixels ``[b, F]`` in ``[0, 1]``; the model (``model: {name:
synthetic_mlp, in_features: 784}`` for Fashion-MNIST) must map them to ten logits.
``f_i`` is node ``i``'s mean cross-entropy (plus ``l2 / 2 ||x||^2``), ``p_i = m_i / m``.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from fedopt.errors import ConfigError
from fedopt.fields import COUNT_MAX
from fedopt.problems._common import coerce_config
from fedopt.problems.base import Problem, ProblemConfig
from fedopt.problems.digits import DigitsModelConfig, DigitsOracle, ModelSpec, build_model
from fedopt.problems.image_data import (
    FASHION_DIR,
    NUM_CLASSES,
    load_fashion_mnist,
    require_fashion_mnist,
    synthetic_images,
)
from fedopt.problems.registry import PROBLEMS

FASHION_TRAIN, FASHION_TEST, FASHION_FEATURES = 60_000, 10_000, 28 * 28


class ImageModelConfig(DigitsModelConfig):
    """Hyperparameters of ``image_model``."""

    name: Literal["image_model"] = "image_model"  # type: ignore[assignment]
    dataset: Literal["synthetic", "fashion_mnist"] = Field(
        "synthetic", description="synthetic (keyed, offline) or fashion_mnist (Debian files)"
    )
    model: ModelSpec = Field(
        default_factory=lambda: ModelSpec(name="digits_mlp"),
        description="registered model and its builder's arguments",
    )
    image_size: int = Field(8, ge=2, le=64, description="synthetic: side of the images")
    samples_per_class: int = Field(
        100, ge=1, le=COUNT_MAX, description="synthetic: training images per class"
    )
    test_per_class: int = Field(30, ge=1, le=COUNT_MAX, description="synthetic: test images")
    noise: float = Field(0.3, ge=0, description="synthetic: std of the pixel noise")
    data_dir: str = Field(FASHION_DIR, description="fashion_mnist: folder of the IDX files")
    max_train_samples: int | None = Field(
        None, ge=1, le=COUNT_MAX, description="fashion_mnist: keep the first training images"
    )
    max_test_samples: int | None = Field(
        None, ge=1, le=COUNT_MAX, description="fashion_mnist: keep the first test images"
    )

    @model_validator(mode="before")
    @classmethod
    def _fashion_present(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("dataset") == "fashion_mnist":
            require_fashion_mnist(data.get("data_dir", FASHION_DIR))
        return data

    @model_validator(mode="after")
    def _fields_of_the_dataset(self) -> ImageModelConfig:
        if "test_fraction" in self.model_fields_set:
            raise ConfigError(
                "problem.test_fraction: image_model's data sets come with their own test "
                "sets (synthetic: test_per_class; fashion_mnist: the 10,000 t10k images, "
                "max_test_samples); remove test_fraction"
            )
        return self

    @property
    def num_features(self) -> int:
        """Pixels per image (what the model must take)."""
        return FASHION_FEATURES if self.dataset == "fashion_mnist" else self.image_size**2

    @property
    def inputs_name(self) -> str:
        """How the inputs are named in model errors."""
        return f"{self.dataset} inputs"


class ImageOracle(DigitsOracle):
    """The digits oracle on ``image_model``'s dataset (see the module doc)."""

    def dataset(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        cfg: ImageModelConfig = self.config  # type: ignore[assignment]
        if cfg.dataset == "synthetic":
            return synthetic_images(
                self.seed, cfg.image_size, cfg.samples_per_class, cfg.test_per_class, cfg.noise
            )
        Xtr, ytr, Xte, yte = load_fashion_mnist(str(cfg.data_dir))
        a, b = cfg.max_train_samples or len(ytr), cfg.max_test_samples or len(yte)
        return Xtr[:a], ytr[:a], Xte[:b], yte[:b]


def _sizes(cfg: ImageModelConfig) -> tuple[int, int]:
    if cfg.dataset == "synthetic":
        return NUM_CLASSES * cfg.samples_per_class, NUM_CLASSES * cfg.test_per_class
    return (
        min(FASHION_TRAIN, cfg.max_train_samples or FASHION_TRAIN),
        min(FASHION_TEST, cfg.max_test_samples or FASHION_TEST),
    )


@PROBLEMS.register("image_model")
class ImageModel(Problem):
    """A registered model on synthetic images or Fashion-MNIST (module doc)."""

    Config = ImageModelConfig
    oracle_class = ImageOracle

    @classmethod
    def param_dim(cls, config: ProblemConfig) -> int | None:
        return build_model(coerce_config(config, ImageModelConfig, "problem")).layout.dim

    @classmethod
    def buffer_dim(cls, config: ProblemConfig) -> int:
        cfg = coerce_config(config, ImageModelConfig, "problem")
        return build_model(cfg).buf_dim if cfg.batchnorm == "running" else 0

    @classmethod
    def data_bytes(cls, config: ProblemConfig, num_nodes: int) -> tuple[int, str]:
        cfg = coerce_config(config, ImageModelConfig, "problem")
        train, test = _sizes(cfg)
        max_m = train if cfg.partition.kind == "dirichlet" else math.ceil(train / num_nodes) + 1
        per_slot = cfg.num_features * 4 + 8 + 8 + 3 * NUM_CLASSES * 4
        total = num_nodes * max_m * per_slot + test * cfg.num_features * 4
        return total, f"{num_nodes:,} nodes x {max_m:,} samples x {per_slot} B + test set"

    @staticmethod
    def summary(config: ProblemConfig) -> dict[str, object]:
        cfg = coerce_config(config, ImageModelConfig, "problem")
        train, test = _sizes(cfg)
        return {
            "dim": build_model(cfg).dim,
            "dataset": cfg.dataset,
            "features": cfg.num_features,
            "classes": NUM_CLASSES,
            "train_samples": train,
            "test_samples": test,
            "partition": cfg.partition.kind,
            "model": cfg.model.name,
        }

"""Built-in architectures, registered in :data:`MODELS`.

==================  ============================================================
``digits_mlp``      ``64 -> hidden -> 10`` ReLU MLP on 8x8 digits, the digits
                    problems' flat layout (``Dense`` layers, ``W [in, out]`` then ``b``)
``digits_cnn_bn``   small CNN with BatchNorm for 8x8 digits (inputs ``[b, 64]``)
``synthetic_mlp``   DIMAT spec section 3.12: ``20 -> h -> h -> 10`` ReLU MLP, no BN
``resnet20``        ResNet-20 with BatchNorm and conv shortcuts (default: width 1 on
                    8x8 digits), 12 unit groups (:mod:`fedopt.models.resnet`)
==================  ============================================================

Every built-in declares its permutable unit axes (one per hidden layer or conv stage),
each with a capture point at the input of the layer that consumes the units.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from torch import nn

from fedopt.errors import ConfigError
from fedopt.models.batched import BatchedModel
from fedopt.models.layers import Dense
from fedopt.models.layout import unit_group
from fedopt.models.resnet import resnet20_module
from fedopt.registry import Registry

MODELS: Registry[Any] = Registry("model", field="model.name")
"""Registered model builders by name: ``MODELS.get(name)(**params) -> BatchedModel``."""


def _widths(field: str, hidden: int | Sequence[int]) -> list[int]:
    widths = [hidden] if isinstance(hidden, int) else list(hidden)
    for w in widths:
        if not isinstance(w, int) or isinstance(w, bool) or w < 1:
            raise ConfigError(f"model.{field}: layer widths must be integers >= 1, got {hidden!r}.")
    return widths


def _mlp(
    name: str,
    sizes: list[int],
    layer: type[nn.Module],
    strategy: str,
) -> BatchedModel:
    """ReLU MLP with layers ``fc1..fcL``, activations ``act1..act{L-1}``, one group each."""
    mods: OrderedDict[str, nn.Module] = OrderedDict()
    depth = len(sizes) - 1
    for i in range(depth):
        mods[f"fc{i + 1}"] = layer(sizes[i], sizes[i + 1])
        if i < depth - 1:
            mods[f"act{i + 1}"] = nn.ReLU()
    module = nn.Sequential(mods)
    groups = [
        unit_group(
            module,
            f"hidden{i + 1}",
            produce=[f"fc{i + 1}"],
            consume=[f"fc{i + 2}"],
            point=f"act{i + 1}",
        )
        for i in range(depth - 1)
    ]
    return BatchedModel(module, groups, name=name, strategy=strategy)  # type: ignore[arg-type]


@MODELS.register("digits_mlp")
def digits_mlp(hidden: int | Sequence[int] = 32, *, strategy: str = "auto") -> BatchedModel:
    """MLP ``64 -> hidden -> 10`` with ReLU and biases for scikit-learn's 8x8 digits.

    The flat row is layer by layer, ``W [in, out]`` row major, then ``b``: this is the
    model of the ``digits_mlp`` problem. ``hidden`` may list several widths (``()`` is
    softmax regression, the ``digits_softmax`` problem's model). Groups ``hidden1..``,
    capture points ``act1..``.
    """
    return _mlp("digits_mlp", [64, *_widths("hidden", hidden), 10], Dense, strategy)


@MODELS.register("synthetic_mlp")
def synthetic_mlp(
    hidden: int = 64, *, in_features: int = 20, classes: int = 10, strategy: str = "auto"
) -> BatchedModel:
    """The DIMAT spec's sanity-test MLP (section 3.12): ``20 -> h -> h -> 10``, ReLU, no BN.

    ``hidden`` is 64 or 128 in the spec. ``torch.nn.Linear`` layers (weights ``[out, in]``).
    Groups ``hidden1``, ``hidden2`` with capture points ``act1``, ``act2``.
    """
    (h,) = _widths("hidden", hidden)
    sizes = [*_widths("in_features", in_features), h, h, *_widths("classes", classes)]
    return _mlp("synthetic_mlp", sizes, nn.Linear, strategy)


@MODELS.register("digits_cnn_bn")
def digits_cnn_bn(
    channels: Sequence[int] = (8, 16), *, momentum: float = 0.1, strategy: str = "auto"
) -> BatchedModel:
    """Small CNN with BatchNorm for 8x8 digits; inputs are the flat ``[b, 64]`` pixels.

    ``[1, 8, 8] -> conv3x3(c1) -> BN -> ReLU -> maxpool2 -> [c1, 4, 4] -> conv3x3(c2) -> BN
    -> ReLU -> maxpool2 -> [c2, 2, 2] -> flatten -> linear(4*c2 -> 10)``. The convolutions
    have no bias (BatchNorm's shift replaces it). Groups ``conv1`` (units c1: conv1 output
    channels, bn1, conv2 input channels) and ``conv2`` (units c2: conv2 output channels,
    bn2, and the linear layer's inputs in blocks of 4 spatial positions), captured at the
    pooled activations ``pool1`` and ``pool2`` (samples = batch x positions).
    """
    widths = [channels] if isinstance(channels, int) else list(channels)
    if len(widths) != 2:
        raise ConfigError(f"model.channels: give two widths (c1, c2), got {channels!r}.")
    c1, c2 = _widths("channels", widths)
    module = nn.Sequential(
        OrderedDict(
            [
                ("image", nn.Unflatten(1, (1, 8, 8))),
                ("conv1", nn.Conv2d(1, c1, 3, padding=1, bias=False)),
                ("bn1", nn.BatchNorm2d(c1, momentum=momentum)),
                ("act1", nn.ReLU()),
                ("pool1", nn.MaxPool2d(2)),
                ("conv2", nn.Conv2d(c1, c2, 3, padding=1, bias=False)),
                ("bn2", nn.BatchNorm2d(c2, momentum=momentum)),
                ("act2", nn.ReLU()),
                ("pool2", nn.MaxPool2d(2)),
                ("flatten", nn.Flatten()),
                ("fc", nn.Linear(4 * c2, 10)),
            ]
        )
    )
    groups = [
        unit_group(module, "conv1", produce=["conv1", "bn1"], consume=["conv2"], point="pool1"),
        unit_group(module, "conv2", produce=["conv2", "bn2"], consume=[("fc", 4)], point="pool2"),
    ]
    return BatchedModel(module, groups, name="digits_cnn_bn", strategy=strategy)  # type: ignore[arg-type]


@MODELS.register("resnet20")
def resnet20(
    width: int = 1,
    *,
    in_channels: int = 1,
    image_size: int = 8,
    classes: int = 10,
    momentum: float = 0.1,
    strategy: str = "auto",
) -> BatchedModel:
    """ResNet-20 with BatchNorm and 3x3 conv shortcuts on flat inputs
    ``[b, in_channels * image_size**2]`` (default 8x8 digits): channels ``16w, 32w, 64w``.

    Width 1 with 10 classes has 292,666 parameters and 1,568 BatchNorm buffer floats on 1
    input channel. Unit groups ``stage1..3`` (one shared permutation per residual stage)
    and ``stageS.blockB`` (inside each block): see :mod:`fedopt.models.resnet`.
    """
    (w,) = _widths("width", width)
    (c,) = _widths("in_channels", in_channels)
    (size,) = _widths("image_size", image_size)
    (k,) = _widths("classes", classes)
    if size < 4:
        raise ConfigError(
            f"model.image_size: ResNet-20 halves the resolution twice; give >= 4, got {size}."
        )
    module, groups = resnet20_module(c, size, w, k, momentum)
    return BatchedModel(module, groups, name="resnet20", strategy=strategy)  # type: ignore[arg-type]

"""The model registry and the built-ins' sizes."""

from __future__ import annotations

import pytest

from fedopt.errors import ConfigError
from fedopt.models import MODELS


def test_registry_lists_the_builtins_and_suggests_names() -> None:
    assert list(MODELS) == ["byte_lm", "digits_cnn_bn", "digits_mlp", "synthetic_mlp"]
    with pytest.raises(ConfigError, match=r"model.name: unknown model 'digits_cnn'.*digits_cnn_bn"):
        MODELS.get("digits_cnn")


def test_builtin_sizes() -> None:
    mlp = MODELS.get("digits_mlp")()
    assert mlp.dim == 64 * 32 + 32 + 32 * 10 + 10 and mlp.buf_dim == 0
    assert MODELS.get("digits_mlp")(()).dim == 650  # the digits_softmax layout
    syn = MODELS.get("synthetic_mlp")()
    assert [e.shape for e in syn.layout.params] == [
        (64, 20),
        (64,),
        (64, 64),
        (64,),
        (10, 64),
        (10,),
    ]
    assert {g.name: g.units for g in syn.layout.groups.values()} == {"hidden1": 64, "hidden2": 64}
    assert MODELS.get("synthetic_mlp")(128).layout.groups["hidden2"].units == 128
    cnn = MODELS.get("digits_cnn_bn")()
    assert cnn.bn_layers == ["bn1", "bn2"] and cnn.buf_dim == 2 * (8 + 16)
    assert cnn.dim == 8 * 9 + 16 + 16 * 8 * 9 + 32 + 10 * 64 + 10
    conv2 = cnn.layout.groups["conv2"]
    assert conv2.producers == ("conv2", "bn2") and conv2.consumers == ("fc",)
    assert ("fc.weight", 1, 4) in [(a.tensor, a.axis, a.block) for a in conv2.axes]


def test_bad_widths_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"model.hidden: .*>= 1, got 0"):
        MODELS.get("digits_mlp")(0)
    with pytest.raises(ConfigError, match=r"model.channels: give two widths"):
        MODELS.get("digits_cnn_bn")((8,))

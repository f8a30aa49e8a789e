"""Helpers of the model tests: small inputs per built-in and a per-node reference module."""

from __future__ import annotations

import copy

import torch
from torch import nn

from fedopt.models import MODELS, BatchedModel

BUILTINS = {
    "digits_mlp": {"hidden": 6},
    "digits_cnn_bn": {"channels": (3, 4)},
    "synthetic_mlp": {"hidden": 5},
}


def build(name: str, **extra: object) -> BatchedModel:
    return MODELS.get(name)(**(BUILTINS[name] | extra))


def inputs_for(model: BatchedModel, k: int, b: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random float64 inputs ``[k, b, features]`` and labels ``[k, b]``."""
    g = torch.Generator().manual_seed(seed)
    features = model.layout.params[0].shape
    n_in = 20 if model.name == "synthetic_mlp" else 64
    assert features  # the first layer exists
    x = torch.rand(k, b, n_in, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (k, b), generator=g)
    return x, y


def random_state(
    model: BatchedModel, k: int, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Float64 rows with distinct nodes, and buffers with non-trivial running statistics."""
    g = torch.Generator().manual_seed(seed)
    X = model.init_params(seed, range(k), torch.float64)
    X = X + 0.3 * torch.randn(X.shape, generator=g, dtype=torch.float64)
    if not model.buf_dim:
        return X, None
    B = model.init_buffers(k, torch.float64)
    for e in model.layout.buffers:
        sl = B[:, e.offset : e.end]
        if e.name.endswith("running_var"):
            sl.copy_(0.5 + torch.rand(sl.shape, generator=g, dtype=torch.float64))
        else:
            sl.copy_(0.2 * torch.randn(sl.shape, generator=g, dtype=torch.float64))
    return X, B


def node_module(model: BatchedModel, X: torch.Tensor, B: torch.Tensor | None, i: int) -> nn.Module:
    """A float64 copy of the architecture holding node ``i``'s tensors."""
    m = copy.deepcopy(model.module).double()
    m.load_state_dict(model.layout.state_dict(X, B, i))
    return m

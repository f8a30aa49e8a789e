"""Layers whose parameter layout the hand-written problems already use.

:class:`Dense` is a linear layer that stores its weight as ``[in, out]`` (``y = x W + b``)
instead of ``torch.nn.Linear``'s ``[out, in]``. The digits problems
(:mod:`fedopt.problems.digits`) keep every layer's ``W`` row major as ``in x out`` and then
``b``, so a digits MLP built from :class:`Dense` layers reads a flat parameter row exactly as
the hand-written oracle does.
"""

from __future__ import annotations

import torch
from torch import nn


class Dense(nn.Module):
    """``y = x @ weight + bias`` with ``weight [in_features, out_features]``.

    Parameters
    ----------
    in_features, out_features
        Sizes of the input and output.
    bias
        Whether the layer has a bias ``[out_features]``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.weight = nn.Parameter(torch.empty(self.in_features, self.out_features))
        self.bias = nn.Parameter(torch.empty(self.out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Fan-in uniform ``U(-1/sqrt(in), 1/sqrt(in))`` for the weight and the bias."""
        bound = self.in_features**-0.5
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.matmul(x, self.weight)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"

"""Hand-written fast paths for architectures where they beat ``torch.func``.

:class:`DenseReluKernel` is the explicit batched backpropagation that the digits problems
(:class:`fedopt.problems.digits.DigitsOracle`) were first written with, on a
:class:`~fedopt.models.layout.ParamLayout`: for a ``torch.nn.Sequential`` that alternates
:class:`~fedopt.models.layers.Dense` layers (with bias) and ``ReLU``, with cross-entropy,
the forward pass is ``bmm`` over nodes plus in-place bias and ReLU, and the gradient is

    d = (softmax(z) - onehot(y)) * w,   grad W_l = h_l^T d,   grad b_l = sum_s d,
    d <- (d W_l^T) * [h_l > 0]

layer by layer from the top, written straight into the ``[k, dim]`` rows. The operations
and their order are those of the original ``DigitsOracle``, so the gradients are bitwise
equal to it (tested against a frozen copy, ``tests/digits_reference.py``); the digits
problems now compute their gradients through this kernel. Measured on the digits MLP at
N = 100, minibatch 32, one thread (``python -m fedopt.bench.models_digits``), the
``torch.func`` path takes 1.4-1.6 times as long (vmapped ``functional_call`` forward plus
one reverse pass: 1.53x wall, 1.59x CPU; ``vmap(grad)``: 1.76x, 1.82x), at or beyond
the 1.5x bar, so this path is kept and :meth:`BatchedModel.grad` picks it by default
(``method="auto"``).
"""

from __future__ import annotations

import torch
from torch import nn

from fedopt.models.layers import Dense
from fedopt.models.layout import ParamLayout
from fedopt.numerics import bmm


class DenseReluKernel:
    """Explicit node-batched forward and backward of a ``Dense -> ReLU -> ... -> Dense`` chain.

    Build it with :meth:`match`, which returns None for any other architecture.
    """

    def __init__(self, layout: ParamLayout, layers: list[str]) -> None:
        self.layout = layout
        self.layers = layers
        self._w = [layout.entry(f"{n}.weight") for n in layers]
        self._b = [layout.entry(f"{n}.bias") for n in layers]

    @classmethod
    def match(cls, module: nn.Module, layout: ParamLayout) -> DenseReluKernel | None:
        """The kernel of ``module`` if it is a Dense/ReLU chain with biases, else None."""
        if not isinstance(module, nn.Sequential) or len(module) == 0:
            return None
        names, children = zip(*module.named_children(), strict=True)
        for i, child in enumerate(children):
            want_dense = i % 2 == 0
            if want_dense and not (isinstance(child, Dense) and child.bias is not None):
                return None
            if not want_dense and type(child) is not nn.ReLU:
                return None
        if len(children) % 2 == 0 or list(module.buffers()):
            return None
        return cls(layout, list(names[::2]))

    def _views(self, X: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        k = X.shape[0]
        return [
            (X[:, w.offset : w.end].view(k, *w.shape), X[:, b.offset : b.end])
            for w, b in zip(self._w, self._b, strict=True)
        ]

    def forward(self, X: torch.Tensor, inputs: torch.Tensor) -> tuple[torch.Tensor, list]:
        """Logits ``[k, b, C]`` and the input of every layer, for ``inputs [k, b, in]``."""
        layers = self._views(X)
        seen = []
        h = inputs
        for i, (W, b) in enumerate(layers):
            seen.append(h)
            h = bmm(h, W).add_(b.unsqueeze(1))
            if i < len(layers) - 1:
                h = h.relu_()
        return h, seen

    def grad(
        self,
        X: torch.Tensor,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        weights: torch.Tensor,
        with_loss: bool = False,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(loss [k] or None, gradient [k, dim])`` of ``sum_s weights[i, s] * CE_s``."""
        k = X.shape[0]
        logits, seen = self.forward(X, inputs)
        loss = None
        if with_loss:
            logp = torch.log_softmax(logits, dim=2)
            loss = -(logp.gather(2, targets.unsqueeze(2)).squeeze(2) * weights).sum(dim=1)
        d = torch.softmax(logits, dim=2)
        d.scatter_add_(2, targets.unsqueeze(2), torch.full_like(d[:, :, :1], -1.0))
        d.mul_(weights.unsqueeze(2))
        out = torch.empty(k, self.layout.dim, dtype=X.dtype, device=X.device)
        layers = self._views(X)
        for i in range(len(layers) - 1, -1, -1):
            W, _ = layers[i]
            w, b = self._w[i], self._b[i]
            out[:, w.offset : w.end] = bmm(seen[i].transpose(1, 2), d).reshape(k, -1)
            out[:, b.offset : b.end] = d.sum(dim=1)
            if i > 0:
                d = bmm(d, W.transpose(1, 2)).mul_(seen[i] > 0)
        return loss, out

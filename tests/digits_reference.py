"""Frozen reference: the digits problems' hand-written model before it moved to fedopt.models.

Until issue 9, :mod:`fedopt.problems.digits` carried its own flat layout (``Layout``) and
explicit batched backpropagation (``_forward``/``_grad_batch``). The problems now run on
:class:`fedopt.models.BatchedModel` (its :class:`~fedopt.models.kernels.DenseReluKernel`);
this copy of the old code, kept only for the tests, pins that nothing changed bit for bit:
the offsets, the initial rows and the gradients.
"""

from __future__ import annotations

import torch

from fedopt import rng
from fedopt.numerics import bmm


def layer_sizes(hidden: int | tuple[int, ...] | None) -> list[tuple[int, int]]:
    """``(in, out)`` of each linear layer: ``digits_softmax`` for None, else the MLP."""
    widths = [] if hidden is None else [hidden] if isinstance(hidden, int) else list(hidden)
    return list(zip([64, *widths], [*widths, 10], strict=True))


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


def init_params(layout: Layout, seed: int, ranks: torch.Tensor) -> torch.Tensor:
    """The old ``DigitsOracle.init_params`` (float32)."""
    u = rng.uniform(rng.node_keys(seed, "init", ranks, 0), layout.dim, torch.float64)
    return ((2.0 * u - 1.0) * layout.init_bounds().to(u.device)).to(torch.float32)


def forward(
    layout: Layout, W: torch.Tensor, Xb: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits ``[n, S, 10]`` and the input of every layer, for ``Xb [n, S, 64]``."""
    inputs = []
    h = Xb
    layers = layout.unpack(W)
    for i, (Wl, bl) in enumerate(layers):
        inputs.append(h)
        h = bmm(h, Wl).add_(bl.unsqueeze(1))
        if i < len(layers) - 1:
            h = h.relu_()
    return h, inputs


def grad_batch(
    layout: Layout, W: torch.Tensor, Xb: torch.Tensor, lab: torch.Tensor, wts: torch.Tensor
) -> torch.Tensor:
    """Gradient ``[n, dim]`` of ``sum_s wts[n, s] * CE(sample s)`` by backpropagation."""
    n = W.shape[0]
    logits, inputs = forward(layout, W, Xb)
    d = torch.softmax(logits, dim=2)
    d.scatter_add_(2, lab.unsqueeze(2), torch.full_like(d[:, :, :1], -1.0))
    d.mul_(wts.unsqueeze(2))
    out = torch.empty(n, layout.dim, dtype=W.dtype, device=W.device)
    layers = layout.unpack(W)
    for i in range(len(layers) - 1, -1, -1):
        Wl, _ = layers[i]
        w_off, b_off = layout.offsets[i]
        gW = bmm(inputs[i].transpose(1, 2), d)  # [n, in, out]
        out[:, w_off:b_off] = gW.reshape(n, -1)
        out[:, b_off : b_off + Wl.shape[2]] = d.sum(dim=1)
        if i > 0:
            d = bmm(d, Wl.transpose(1, 2)).mul_(inputs[i] > 0)
    return out

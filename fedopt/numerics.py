"""Batched tensor kernels whose per-entry results do not depend on the batch size.

Shared by :mod:`fedopt.problems` and :mod:`fedopt.models` (which the problems build on), so
it sits below both. A node's result must not depend on which other nodes share its batch
(sharding invariance); ``torch.bmm`` with a batch of one is dispatched on CPU to the
matrix-product kernel, whose rounding differs from the batched kernel's, so :func:`bmm`
pads such a batch to two.
"""

from __future__ import annotations

import torch


def _twice(t: torch.Tensor) -> torch.Tensor:
    """``t`` stacked twice along the batch axis, keeping a transposed view transposed.

    The memory layout picks the kernel (a transposed operand is passed to BLAS as a
    transpose flag), so the padded batch must have the layout of the original.
    """
    if t.stride(-2) == 1 and t.stride(-1) != 1:
        u = t.transpose(-1, -2)
        return torch.cat([u, u]).transpose(-1, -2)
    return torch.cat([t, t])


def bmm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.bmm`` whose result for each batch entry does not depend on the batch size.

    A batch of one is padded to two, because CPU torch computes a single product with a
    different kernel (and rounding) from the batched one.
    """
    if a.shape[0] != 1:
        return torch.bmm(a, b, out=out)
    res = torch.bmm(_twice(a), _twice(b))[:1]
    if out is None:
        return res
    return out.copy_(res)

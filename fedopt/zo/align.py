"""Padding that makes a client's surrogate bits independent of its batch-mates.

MKL's BLAS and LAPACK kernels (behind ``torch.bmm``, ``cholesky``, ``cholesky_solve``,
...) take different code paths when a matrix does not start on a 64-byte boundary, so
in a batch of ``[c, n, n]`` matrices with odd ``n`` the result of client ``i`` depends
on its position ``i``, that is on which clients share its worker (on this machine a
151 x 151 Cholesky factor differs in the last bits between positions). Batched products
here therefore use matrices whose element counts are multiples of :data:`ALIGN`
float64 numbers (64 bytes): set sizes are padded with masked entries, coordinates and
features with zeros, which changes no value the surrogates compute. Torch's own
elementwise ops and reductions are alignment-independent and need no padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ALIGN = 8
"""float64 elements per 64 bytes."""


def up(n: int) -> int:
    """``n`` rounded up to a multiple of :data:`ALIGN` (at least ``ALIGN``)."""
    return max(ALIGN, -(-int(n) // ALIGN) * ALIGN)


def pad(x: torch.Tensor, dim: int, size: int, value: float | bool = 0) -> torch.Tensor:
    """``x`` padded with ``value`` at the end of dimension ``dim`` to length ``size``."""
    extra = size - x.shape[dim]
    if extra == 0:
        return x.contiguous()
    if x.dtype == torch.bool:
        shape = list(x.shape)
        shape[dim] = extra
        return torch.cat([x, torch.full(shape, bool(value), device=x.device)], dim)
    widths = [0, 0] * (x.ndim - (dim % x.ndim) - 1) + [0, extra]
    return F.pad(x, widths, value=float(value))


def bmm(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``torch.bmm(A, B)`` whose matrix ``i`` does not depend on the batch size.

    A batch of one takes torch's single-matrix path (a matrix-vector product there
    rounds differently from the batched one), so it is computed as a batch of two
    views of the same matrices. Operands should be padded (module doc).
    """
    if A.shape[0] == 1:
        return torch.bmm(A.expand(2, *A.shape[1:]), B.expand(2, *B.shape[1:]))[:1]
    return torch.bmm(A, B)


def gram(F: torch.Tensor) -> torch.Tensor:
    """``F F^T`` per client, ``[c, n, k] -> [c, n, n]``, using its symmetry on the CPU.

    On the CPU each client's Gram matrix is one BLAS ``dsyrk`` (half the products of a
    general ``F @ F^T``; SciPy's BLAS, float64), so a client's bits depend only on its
    own ``F``; elsewhere (CUDA) a batched product.
    """
    if F.device.type != "cpu" or F.dtype != torch.float64:
        return bmm(F, F.transpose(-1, -2))
    from scipy.linalg.blas import dsyrk

    out = torch.empty((F.shape[0], F.shape[1], F.shape[1]), dtype=F.dtype)
    Fc = F.contiguous()
    for i in range(F.shape[0]):  # one BLAS-3 call per client (n x n, k = features)
        upper = torch.from_numpy(dsyrk(1.0, Fc[i].numpy().T, trans=1))
        out[i] = upper.triu() + upper.triu(1).T
    return out

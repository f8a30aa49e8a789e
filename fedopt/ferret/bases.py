"""Ferret's shared random bases: truncated normals from the counter-based RNG.

Basis ``k`` of block ``l`` (Shu et al., "Ferret: Federated Full-Parameter Tuning at
Scale for Large Language Models", ICML 2025, section 4.1) is a vector ``v in R^{d_l}``
with i.i.d. entries from ``N(0, 1)`` truncated to ``[-a, a]``, ``a = 1/sqrt(d_l)`` (so
``||v|| <= 1``), whose per-entry variance is

.. math::

    \\rho(d) = 1 - \\frac{2}{\\sqrt d} \\frac{\\varphi(1/\\sqrt d)}{2\\Phi(1/\\sqrt d) - 1}
    \\approx \\frac{1}{3d}.

Platform independence (spec pitfall F1). Entry ``j`` of basis ``k`` is a pure function of
the integers ``(seed, purpose, ids..., k, j)``: the 64-bit word
``mix(key_k + j * golden)`` of :mod:`fedopt.rng` (exact integer arithmetic on every
device), its top 52 bits give ``r in (-1, 1)`` exactly, and the inverse CDF of the
truncated normal,

.. math::

    x = \\Phi^{-1}\\big(\\tfrac12 + \\tfrac{p}{2} r\\big) = \\sqrt2 \\operatorname{erfinv}(p r),
    \\qquad p = \\operatorname{erf}(a / \\sqrt2),

is evaluated as the Maclaurin series of ``erfinv`` (an odd polynomial in ``r`` with
coefficients fixed per ``d``, enough terms for double precision since ``|p r| < p``),
by Horner's rule in separate multiplies and adds: only correctly rounded IEEE
operations, so a client, the server, a Ray actor or a GPU produce the same bits.

Nothing of size ``d x K`` is kept: :func:`chunks` yields the bases in cache-sized
pieces ``[rows, cols]`` and every operation (projection ``V Delta``, reconstruction
``V^T gamma``, the Gram matrix ``V V^T`` of the exact projection, the norms) is
accumulated over them in float64.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction
from functools import lru_cache

import torch

from fedopt import rng

CHUNK_ELEMENTS = 1 << 16
"""Basis entries generated at once (512 KiB of float64): the cache-sized piece."""


def rho(d: int) -> float:
    """Per-entry variance of ``N(0, 1)`` truncated to ``[-1/sqrt(d), 1/sqrt(d)]``.

    ``rho(10) = 3.289102e-2``, ``rho(1000) = 3.332889e-4``; ``1/rho(d) -> 3d``.
    """
    if d < 1:
        raise ValueError(f"d: a block has at least one entry, got {d}")
    a = 1.0 / math.sqrt(d)
    pdf = math.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
    mass = math.erf(a / math.sqrt(2.0))  # 2 Phi(a) - 1
    return 1.0 - 2.0 * a * pdf / mass


@lru_cache(maxsize=64)
def _erfinv_series(terms: int) -> tuple[float, ...]:
    """``e_k`` with ``erfinv(z) = sum_k e_k y^(2k+1)``, ``y = sqrt(pi) z / 2``."""
    c = [Fraction(1)]
    for k in range(1, terms):
        c.append(sum(c[m] * c[k - 1 - m] / ((m + 1) * (2 * m + 1)) for m in range(k)))
    return tuple(float(ck / (2 * k + 1)) for k, ck in enumerate(c))


@lru_cache(maxsize=4096)
def coefficients(d: int) -> tuple[float, ...]:
    """Coefficients ``b_k`` of ``x(r) = r sum_k b_k r^(2k)`` for a block of ``d`` entries."""
    if d < 1:
        raise ValueError(f"d: a block has at least one entry, got {d}")
    p = math.erf(1.0 / math.sqrt(2.0 * d))
    s = math.sqrt(math.pi) * p / 2.0  # y = s r
    e = _erfinv_series(80)
    out = []
    for k, ek in enumerate(e):
        b = math.sqrt(2.0) * ek * s ** (2 * k + 1)
        out.append(b)
        if k > 2 and abs(b) < 1e-18 * out[0]:
            break
    return tuple(out)


def entries(words: torch.Tensor, d: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Truncated-normal entries from random int64 ``words`` (any shape), block size ``d``."""
    m = rng._srl(words, 12).sub_(1 << 51)  # 52 random bits, centred: [-2^51, 2^51)
    r = m.to(torch.float64).add_(0.5).mul_(2.0**-51)  # exact, in (-1, 1), symmetric
    b = coefficients(d)
    r2 = r * r
    acc = torch.full_like(r, b[-1])
    for bk in reversed(b[:-1]):
        acc.mul_(r2).add_(bk)
    return acc.mul_(r).to(dtype)


def keys(seed: int, purpose: str, ids: tuple[int, ...], count: int) -> torch.Tensor:
    """``[count]`` int64 keys of bases ``k = 0..count-1`` of the stream ``(seed, purpose, ids)``."""
    base = rng.derived_key(seed, purpose, *ids)
    k = torch.arange(count, dtype=torch.int64)
    return rng.mix_(k.bitwise_xor_(base))


def chunks(
    basis_keys: torch.Tensor, d: int, budget: int = CHUNK_ELEMENTS
) -> Iterator[tuple[slice, slice, torch.Tensor]]:
    """The bases ``V [K, d]`` of ``basis_keys`` piece by piece: ``(rows, cols, V[rows, cols])``.

    Pieces hold at most ``max(budget, d-columns of one row)`` entries, row blocks outer,
    column blocks inner; the entries are those of the whole matrix bit for bit.
    """
    K = len(basis_keys)
    rows = max(1, min(K, budget))
    for r0 in range(0, K, rows):
        r1 = min(K, r0 + rows)
        cols = max(1, budget // (r1 - r0))
        for c0 in range(0, d, cols):
            c1 = min(d, c0 + cols)
            V = entries(rng.words(basis_keys[r0:r1], c0, c1 - c0), d)
            yield slice(r0, r1), slice(c0, c1), V


def dense(basis_keys: torch.Tensor, d: int) -> torch.Tensor:
    """The whole ``[K, d]`` float64 matrix (tests and small problems only)."""
    return entries(rng.words(basis_keys, 0, d), d)


def project(basis_keys: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``V delta``: ``[K]`` float64 inner products of every basis with ``delta [d]``.

    Runs on ``delta``'s device (the entries are the same bits on every device).
    """
    x = delta.to(torch.float64)
    out = torch.zeros(len(basis_keys), dtype=torch.float64, device=x.device)
    for rs, cs, V in chunks(basis_keys.to(x.device), x.numel()):
        out[rs] += V @ x[cs]
    return out


def reconstruct(basis_keys: torch.Tensor, d: int, coeffs: torch.Tensor) -> torch.Tensor:
    """``V^T coeffs = sum_k coeffs_k v_k``: ``[d]`` float64, on ``coeffs``' device."""
    g = coeffs.to(torch.float64)
    out = torch.zeros(d, dtype=torch.float64, device=g.device)
    for rs, cs, V in chunks(basis_keys.to(g.device), d):
        out[cs] += g[rs] @ V
    return out


def gram(basis_keys: torch.Tensor, d: int) -> torch.Tensor:
    """``V V^T`` (``[K, K]`` float64), for the exact least-squares projection (eq. 5)."""
    K = len(basis_keys)
    G = torch.zeros(K, K, dtype=torch.float64)
    cols = max(1, CHUNK_ELEMENTS // max(K, 1))
    for c0 in range(0, d, cols):
        V = entries(rng.words(basis_keys, c0, min(d, c0 + cols) - c0), d)
        G += V @ V.T
    return G


def norms(basis_keys: torch.Tensor, d: int) -> torch.Tensor:
    """``||v_k||`` of every basis: ``[K]`` float64 (per-seed clipping)."""
    sq = torch.zeros(len(basis_keys), dtype=torch.float64)
    for rs, _, V in chunks(basis_keys, d):
        sq[rs] += V.square().sum(dim=1)
    return sq.sqrt_()


def exact_coefficients(basis_keys: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Least-squares coefficients ``(V V^T)^{-1} V delta`` (eq. 5; needs ``K <= d``)."""
    G = gram(basis_keys, delta.numel())
    return torch.linalg.solve(G, project(basis_keys, delta))

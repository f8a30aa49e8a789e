"""Pearson correlation between the units of two models' features.

Given features ``A [S, C]`` of model a and ``F [S, C]`` of model b on the same ``S``
samples (samples x spatial positions, post-activation), the cross-correlation block is

.. math::

    R_{uv} = \\frac{\\mathrm{cov}(A_{:u}, F_{:v})}{\\max(\\sigma_u(A)\\, \\sigma_v(F), \\epsilon)},
    \\qquad \\mathrm{cov} = \\overline{a f} - \\bar a \\bar f,

computed in float64 with the covariance accumulated as ``mean(x y) - mean(x) mean(y)``
and ``std * std`` clamped at ``eps = 1e-7`` (a dead unit correlates 0 with everything),
as ZipIt's and DIMAT's matching code does (spec section 3.11, pitfall 7).
"""

from __future__ import annotations

import torch

EPS = 1e-7


def correlation(A: torch.Tensor, F: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Correlation ``R [.., C_a, C_b]`` of the units of ``A [.., S, C_a]``, ``F [.., S, C_b]``.

    Parameters
    ----------
    A, F
        Features on the same samples; leading dimensions are batch dimensions (pairs).
    eps
        Floor of ``std_u * std_v``.

    Returns
    -------
    torch.Tensor
        float64 ``R`` with ``R[.., u, v] = corr(A[.., :, u], F[.., :, v])``.
    """
    if A.shape[:-1] != F.shape[:-1]:
        raise ValueError(
            f"correlation: features must share samples, got {list(A.shape)} and {list(F.shape)}"
        )
    a, f = A.to(torch.float64), F.to(torch.float64)
    s = a.shape[-2]
    if s == 0:
        raise ValueError("correlation: no samples")
    ma, mf = a.mean(dim=-2), f.mean(dim=-2)
    cov = a.transpose(-1, -2) @ f / s - ma.unsqueeze(-1) * mf.unsqueeze(-2)
    va = (a.square().mean(dim=-2) - ma.square()).clamp_min(0.0)
    vf = (f.square().mean(dim=-2) - mf.square()).clamp_min(0.0)
    denom = (va.sqrt().unsqueeze(-1) * vf.sqrt().unsqueeze(-2)).clamp_min(eps)
    return cov / denom

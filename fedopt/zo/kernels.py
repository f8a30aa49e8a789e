"""Isotropic stationary kernels and the derivatives the derived GP needs.

With ``r = ||x - x'||`` and lengthscale ``l > 0``:

* squared exponential (``"se"``)::

      k(x, x') = exp(-r^2 / (2 l^2))
      d/dx k(x, x') = -(x - x') k(x, x') / l^2

* Matern-5/2 (``"matern52"``, what the FZooS reference code fits), with ``a = sqrt(5)/l``::

      k(x, x') = (1 + a r + a^2 r^2 / 3) exp(-a r)
      d/dx k(x, x') = -(a^2 / 3) (1 + a r) exp(-a r) (x - x')

Both gradients have the form ``d/dx k(x, x') = -g(r) (x - x')`` with a scalar factor
``g`` (:func:`grad_factor`), which lets :mod:`fedopt.zo.gp` evaluate gradient
covariances without forming ``n x d`` Jacobians. The prior covariance of the gradient
of ``f ~ GP(0, k)`` at one point is ``d/dx d/dx' k(x, x')|_{x'=x} = c I`` with
``c = 1/l^2`` (SE) or ``c = a^2/3 = 5/(3 l^2)`` (Matern-5/2): :func:`gradient_prior`.

Reference: Shu et al., FZooS (the derived GP of section 3.1: gradient surrogate and its
covariance); Rasmussen & Williams, *Gaussian Processes for Machine Learning* (2006),
sections 4.2 (Matern class) and 9.4 (derivative observations).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from fedopt.errors import ConfigError
from fedopt.zo.align import bmm

KernelName = Literal["se", "matern52"]
KERNELS: tuple[str, ...] = ("se", "matern52")


def check_kernel(name: str, lengthscale: float, field: str = "lengthscale") -> None:
    """Refuse an unknown kernel or a lengthscale that is not a finite number ``> 0``.

    Raises
    ------
    ConfigError
        Naming ``field``, the value and the fix.
    """
    if name not in KERNELS:
        raise ConfigError(f"kernel: {name!r} is not a kernel; use one of {', '.join(KERNELS)}")
    ok = isinstance(lengthscale, (int, float)) and not isinstance(lengthscale, bool)
    if not ok or not math.isfinite(lengthscale) or lengthscale <= 0:
        raise ConfigError(
            f"{field}: the kernel lengthscale must be a finite number > 0, got "
            f"{lengthscale!r}; use e.g. 1.0"
        )


def sqdist(X1: torch.Tensor, X2: torch.Tensor) -> torch.Tensor:
    """Squared distances ``||x_i - x'_j||^2``: ``[..., n, d] x [..., m, d] -> [..., n, m]``.

    Formed as ``|x|^2 + |x'|^2 - 2 x.x'`` and clamped at 0; callers centre the points
    first (near one of them), which keeps the cancellation error at the rounding of the
    small centred norms.
    """
    n1 = X1.square().sum(-1)
    n2 = X2.square().sum(-1)
    if X1.ndim == 3:  # per-client products, batch independent (fedopt.zo.align)
        cross = bmm(X1, X2.transpose(-1, -2))
    else:
        cross = X1 @ X2.transpose(-1, -2)
    return (n1.unsqueeze(-1) + n2.unsqueeze(-2) - 2.0 * cross).clamp_min_(0.0)


def _root(r2: torch.Tensor) -> torch.Tensor:
    """``r = sqrt(r2)`` with a finite derivative at ``r2 = 0`` (``r`` changes by < 1e-150)."""
    return r2.clamp_min(1e-300).sqrt()


def from_sqdist(r2: torch.Tensor, name: str, lengthscale: float) -> torch.Tensor:
    """Kernel values ``k`` from squared distances ``r2`` (any shape)."""
    if name == "se":
        return torch.exp(-0.5 * r2 / lengthscale**2)
    a_r = math.sqrt(5.0) / lengthscale * _root(r2)
    return (1.0 + a_r + a_r.square() / 3.0) * torch.exp(-a_r)


def grad_factor(r2: torch.Tensor, name: str, lengthscale: float) -> torch.Tensor:
    """``g(r)`` with ``d/dx k(x, x') = -g(r) (x - x')`` (module doc), from ``r2 = r^2``."""
    if name == "se":
        return torch.exp(-0.5 * r2 / lengthscale**2) / lengthscale**2
    a = math.sqrt(5.0) / lengthscale
    a_r = a * _root(r2)
    return (a * a / 3.0) * (1.0 + a_r) * torch.exp(-a_r)


def gradient_prior(name: str, lengthscale: float) -> float:
    """``c`` with ``Cov(grad f(x)) = c I`` under the prior ``f ~ GP(0, k)``."""
    if name == "se":
        return 1.0 / lengthscale**2
    return 5.0 / (3.0 * lengthscale**2)


def kernel(X1: torch.Tensor, X2: torch.Tensor, name: str, lengthscale: float) -> torch.Tensor:
    """Kernel matrix ``k(x_i, x'_j)``: ``[..., n, d] x [..., m, d] -> [..., n, m]``."""
    return from_sqdist(sqdist(X1, X2), name, lengthscale)


def grad_first(x: torch.Tensor, X: torch.Tensor, name: str, lengthscale: float) -> torch.Tensor:
    """Jacobian rows ``d/dx k(x_j, x'_t)``: ``[..., m, d] x [..., n, d] -> [..., m, n, d]``.

    Explicit (``m n d`` numbers): for tests and small problems; the batched FZooS path
    never forms it.
    """
    diff = x.unsqueeze(-2) - X.unsqueeze(-3)  # [..., m, n, d]
    g = grad_factor(diff.square().sum(-1), name, lengthscale)
    return -g.unsqueeze(-1) * diff

"""Kernels of the FZooS surrogates: values, first derivatives and the gradient prior."""

from __future__ import annotations

import math

import pytest
import torch

from fedopt.errors import ConfigError
from fedopt.zo import kernels

KERNELS = ("se", "matern52")


def _points(seed: int, *shape: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("name", KERNELS)
def test_kernel_values_match_the_textbook_forms(name: str) -> None:
    x, X = _points(0, 4, 3), _points(1, 6, 3)
    r = torch.cdist(x, X)
    ell = 0.7
    if name == "se":
        ref = torch.exp(-(r**2) / (2 * ell**2))
    else:
        a = math.sqrt(5) / ell
        ref = (1 + a * r + a**2 * r**2 / 3) * torch.exp(-a * r)
    assert torch.allclose(kernels.kernel(x, X, name, ell), ref, rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", KERNELS)
def test_grad_first_is_the_autograd_derivative(name: str) -> None:
    x, X = _points(2, 5, 4), _points(3, 7, 4)
    xg = x.clone().requires_grad_(True)
    k = kernels.kernel(xg, X, name, 0.9)
    rows = [torch.autograd.grad(k[:, j].sum(), xg, retain_graph=True)[0] for j in range(7)]
    auto = torch.stack(rows, 1)  # [m, n, d]
    assert torch.allclose(kernels.grad_first(x, X, name, 0.9), auto, rtol=0, atol=1e-13)


@pytest.mark.parametrize("name", KERNELS)
def test_gradient_prior_is_the_mixed_second_derivative_at_zero(name: str) -> None:
    # d/dx d/dx' k(x, x') at x' = x: c I (checked by autograd at a point off zero, as
    # the Matern root is not twice differentiable at r = 0 in floating point)
    ell, d = 0.8, 3
    x = torch.full((d,), 0.3, dtype=torch.float64)

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return kernels.kernel(a.unsqueeze(0), b.unsqueeze(0), name, ell)[0, 0]

    eps = 1e-5 * torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64)
    H = torch.autograd.functional.jacobian(
        lambda a: torch.autograd.functional.jacobian(lambda b: k(a, b), x + eps, create_graph=True),
        x,
    )
    c = kernels.gradient_prior(name, ell)
    assert torch.allclose(H, c * torch.eye(d, dtype=torch.float64), rtol=0, atol=1e-6 * c)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf, True])
def test_a_lengthscale_that_is_not_positive_is_refused(bad: float) -> None:
    with pytest.raises(ConfigError, match="lengthscale: the kernel lengthscale must be"):
        kernels.check_kernel("se", bad)


def test_an_unknown_kernel_is_refused() -> None:
    with pytest.raises(ConfigError, match="'rbf' is not a kernel; use one of se, matern52"):
        kernels.check_kernel("rbf", 1.0)

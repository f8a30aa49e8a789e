"""Quadratic and least squares: closed-form optima and finite-difference gradients."""

from __future__ import annotations

import pytest
import torch
from prob_helpers import build, random_params

import fedopt.problems as P

CASES = [
    {"name": "quadratic", "dim": 6, "mu": 0.5, "L": 20.0, "dtype": "float64"},
    {
        "name": "least_squares",
        "dim": 6,
        "samples_per_node": 8,
        "heterogeneity": 1.0,
        "dtype": "float64",
    },
    {"name": "least_squares", "dim": 6, "samples_per_node": 3, "l2": 0.1, "dtype": "float64"},
]


@pytest.mark.parametrize("spec", CASES)
def test_optimum_has_zero_global_gradient(spec: dict[str, object]) -> None:
    n = 5
    whole = build(spec, list(range(n)), n)
    stats = whole.optimum_stats()
    assert stats is not None
    x_star = stats.solve()
    rows = torch.arange(n)
    g = whole.full_grad(x_star.expand(n, -1), rows)
    global_grad = (whole.weights.unsqueeze(1) * g).sum(dim=0)
    assert float(global_grad.abs().max()) < 1e-8
    # the partial statistics of two workers add up to the whole
    parts = build(spec, [0, 2, 4], n).optimum_stats() + build(spec, [1, 3], n).optimum_stats()
    assert torch.equal(parts.solve(), x_star)  # canonical order: same bits on any split
    # x* minimises F: a perturbation increases it
    F = lambda x: float((whole.weights * whole.value(x.expand(n, -1), rows)).sum())  # noqa: E731
    assert F(x_star) < F(x_star + 1e-3 * torch.ones_like(x_star))


@pytest.mark.parametrize("spec", CASES)
def test_gradient_matches_finite_differences(spec: dict[str, object]) -> None:
    oracle = build(spec, [0, 1], 2)
    rows = torch.arange(2)
    X = random_params(oracle, 2)
    g = oracle.full_grad(X, rows)
    eps = 1e-6
    for j in range(oracle.dim):
        E = torch.zeros_like(X)
        E[:, j] = eps
        fd = (oracle.value(X + E, rows) - oracle.value(X - E, rows)) / (2 * eps)
        torch.testing.assert_close(g[:, j], fd, rtol=1e-6, atol=1e-7)


def test_quadratic_curvature_spans_mu_to_l() -> None:
    oracle = build({"name": "quadratic", "dim": 5, "mu": 2.0, "L": 8.0}, [0, 1, 2], 3)
    A = oracle.A
    assert float(A.min()) == 2.0 and float(A.max()) == 8.0
    assert bool((A[:, 0] == 2.0).all()) and bool((A[:, -1] == 8.0).all())
    stats = oracle.optimum_stats()
    assert stats.H.shape == (3, 5)  # diagonal curvature: one [dim] row per node
    eig, _ = stats.totals()  # the eigenvalues of a diagonal matrix are its entries
    assert abs(float(eig.max() / eig.min()) - 4.0) < 1e-12


def test_quadratic_noise_is_unbiased_and_scaled() -> None:
    spec = {"name": "quadratic", "dim": 4, "noise_std": 2.0, "dtype": "float64"}
    oracle = build(spec, list(range(50)), 50)
    rows = torch.arange(50)
    X = random_params(oracle, 50)
    noise = torch.stack([oracle.grad(X, rows, s) - oracle.full_grad(X, rows) for s in range(40)])
    assert abs(float(noise.mean())) < 0.05
    assert abs(float(noise.std()) - 2.0) < 0.05


def test_least_squares_minibatch_gradient_is_unbiased() -> None:
    spec = {
        "name": "least_squares",
        "dim": 3,
        "samples_per_node": 10,
        "batch_size": 2,
        "dtype": "float64",
    }
    oracle = build(spec, [0], 1)
    rows = torch.arange(1)
    X = random_params(oracle, 1)
    idx = oracle.batch_indices(rows, 4)
    A, b = oracle.A[0, idx[0]], oracle.b[0, idx[0]]
    torch.testing.assert_close(oracle.grad(X, rows, 4)[0], A.T @ (A @ X[0] - b) / 2)
    mean = torch.stack([oracle.grad(X, rows, s) for s in range(4000)]).mean(0)
    torch.testing.assert_close(mean, oracle.full_grad(X, rows), rtol=0.05, atol=0.05)


def test_least_squares_batch_at_least_m_is_full_batch() -> None:
    spec = {"name": "least_squares", "samples_per_node": 10, "batch_size": 10}
    oracle = build(spec, [0, 1], 2)
    X = random_params(oracle, 2)
    rows = torch.arange(2)
    assert torch.equal(oracle.grad(X, rows, 3), oracle.full_grad(X, rows))


def test_float32_default_and_float64_option() -> None:
    for name in ("quadratic", "least_squares"):
        o32 = build({"name": name}, [0], 1)
        o64 = build({"name": name, "dtype": "float64"}, [0], 1)
        assert o32.init_params(torch.arange(1)).dtype == torch.float32
        assert o64.init_params(torch.arange(1)).dtype == torch.float64
        assert isinstance(o32.optimum_stats(), P.OptimumStats)

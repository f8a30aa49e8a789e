"""Random Fourier features of the global surrogate (spec fzoos.md 2.10, tests 2 and 3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.kernel_approximation import RBFSampler
from sklearn.linear_model import Ridge

from fedopt.errors import ConfigError
from fedopt.zo import rff

F64 = torch.float64


def _rand(seed: int, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def test_feature_products_approximate_the_se_kernel_within_the_lemma_3_bound() -> None:
    # 1000 pairs at distances spread over [0, 3 l]: |phi^T phi' - k| <= sqrt(8 ln(2/d)/M)
    d, M, ell = 50, 10_000, 1.0
    feats = rff.features(7, d, M, ell)
    x = _rand(0, 1000, d)
    step = torch.randn(1000, d, generator=torch.Generator().manual_seed(1), dtype=F64)
    x2 = x + step / step.norm(dim=1, keepdim=True) * 3.0 * _rand(2, 1000, 1)
    approx = (rff.phi(x, feats) * rff.phi(x2, feats)).sum(-1)
    exact = torch.exp(-(x - x2).square().sum(-1) / (2 * ell**2))
    bound = rff.approximation_bound(M, 0.01)
    assert bound == pytest.approx(0.0651, abs=1e-4)  # the spec's 0.065
    assert float((approx - exact).abs().max()) <= bound
    assert float(exact.min()) < 0.05 and float(exact.max()) > 0.95  # the pairs span k


def test_gradient_of_the_surrogate_equals_autograd() -> None:
    feats = rff.features(3, 6, 500, 0.8)
    theta = torch.randn(4, 500, generator=torch.Generator().manual_seed(0), dtype=F64)
    x = _rand(1, 4, 6).requires_grad_(True)
    (auto,) = torch.autograd.grad(rff.value(theta, x, feats).sum(), x)
    assert torch.allclose(rff.grad(theta, x.detach(), feats), auto, rtol=1e-12, atol=1e-14)


def test_the_aggregate_gradient_is_the_weighted_sum_of_the_client_gradients() -> None:
    feats = rff.features(4, 6, 800, 1.0)
    thetas = torch.randn(5, 800, generator=torch.Generator().manual_seed(1), dtype=F64)
    p = torch.tensor([0.1, 0.3, 0.2, 0.25, 0.15], dtype=F64)
    x = _rand(2, 3, 6)
    bar = rff.grad((p.unsqueeze(1) * thetas).sum(0), x, feats)
    each = torch.stack([rff.grad(thetas[i], x, feats) for i in range(5)])
    assert torch.allclose(bar, (p.view(5, 1, 1) * each).sum(0), rtol=1e-12, atol=1e-14)


def test_features_are_bit_identical_for_every_caller_and_differ_by_seed() -> None:
    f1, f2 = rff.features(11, 30, 2003, 1.0), rff.features(11, 30, 2003, 1.0)
    W1, b1 = f1.W, f1.b
    assert torch.equal(f1.W8, f2.W8) and torch.equal(f1.b8, f2.b8)
    assert W1.shape == (30, 2003) and f1.W8.shape == (32, 2008)  # padded to multiples of 8
    assert not bool(f1.W8[30:].any()) and not bool(f1.W8[:, 2003:].any())
    assert not torch.equal(rff.features(12, 30, 2003, 1.0).W, W1)
    # fewer coordinates: the same rows (keyed by coordinate), so W does not depend on d's tail
    f4 = rff.features(11, 10, 2003, 1.0)
    assert torch.equal(f4.W, W1[:10]) and torch.equal(f4.b, b1)
    assert float(b1.min()) >= 0 and float(b1.max()) < 2 * math.pi
    assert abs(float(W1.std()) - 1.0) < 0.02  # N(0, l^-2)


def test_dual_fit_equals_scikit_learn_ridge_on_the_same_features() -> None:
    # RBFSampler given our W, b and Ridge (dual Cholesky) compute the same weights
    d, M, n = 8, 3000, 120
    feats = rff.features(5, d, M, 1.0)
    X = _rand(3, 2, n, d)
    y = torch.sin(X.sum(-1))
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, 100:] = False
    theta, lo, span = rff.fit(X, y, mask, feats, 1e-6)
    for i in range(2):
        Xv, yv = X[i][mask[i]].numpy(), y[i][mask[i]].numpy()
        sampler = RBFSampler(gamma=0.5, n_components=M).fit(Xv)
        sampler.random_weights_, sampler.random_offset_ = feats.W.numpy(), feats.b.numpy()
        scaled = (yv - yv.min()) / (yv.max() - yv.min() + 1e-20)
        ridge = Ridge(alpha=1e-6, fit_intercept=False, solver="cholesky")
        ref = ridge.fit(sampler.transform(Xv), scaled).coef_
        assert np.allclose(theta[i].numpy(), ref, rtol=0, atol=1e-8 * np.abs(ref).max())
        assert float(lo[i]) == yv.min() and float(span[i]) == yv.max() - yv.min()


def test_the_fit_interpolates_its_neighbourhood() -> None:
    d, M = 5, 4000
    feats = rff.features(6, d, M, 1.0)
    X = _rand(4, 1, 80, d)
    y = X.square().sum(-1)
    theta, lo, span = rff.fit(X, y, torch.ones(1, 80, dtype=torch.bool), feats, 1e-6)
    pred = lo + span * (rff.phi(X[0], feats) @ theta[0])
    assert float((pred - y[0]).abs().max()) < 1e-3 * float(y.abs().max())


def test_a_client_gets_the_same_weights_alone_or_in_a_batch() -> None:
    feats = rff.features(8, 21, 1501, 1.0)
    X = _rand(5, 3, 91, 21)
    y = X.sum(-1).sin()
    mask = torch.ones(3, 91, dtype=torch.bool)
    theta, _, _ = rff.fit(X, y, mask, feats, 1e-6)
    x = X[:, 0] + 0.1
    g = rff.grad(theta, x, feats)
    for i in range(3):
        sl = slice(i, i + 1)
        one, _, _ = rff.fit(X[sl], y[sl], mask[sl], feats, 1e-6)
        assert torch.equal(one, theta[sl])
        assert torch.equal(rff.grad(theta[sl], x[sl], feats), g[sl])


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_a_feature_count_below_one_is_refused(bad) -> None:
    with pytest.raises(ConfigError, match="features: the number of random features M must be"):
        rff.features(0, 3, bad, 1.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf])
def test_a_feature_lengthscale_that_is_not_positive_is_refused(bad: float) -> None:
    with pytest.raises(ConfigError, match="rff_lengthscale: must be a finite number > 0"):
        rff.features(0, 3, 10, bad)

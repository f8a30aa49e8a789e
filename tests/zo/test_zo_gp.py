"""The batched derived-GP surrogate (spec fzoos.md 2.10, sanity test 1, and pitfall P4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, Matern

from fedopt.errors import ConfigError
from fedopt.zo import gp, kernels

KERNELS = ("se", "matern52")
F64 = torch.float64


def _rand(seed: int, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _batch(c: int = 3, n: int = 40, d: int = 8, seed: int = 0):
    """Histories of ``c`` clients with ragged lengths (masked tails) and smooth targets."""
    X = _rand(seed, c, n, d)
    y = torch.sin(3 * X).sum(-1) + X.square().sum(-1)
    mask = torch.ones(c, n, dtype=torch.bool)
    mask[1, n - 7 :] = False
    if c > 2:
        mask[2, n // 2 :] = False
    return X, y, mask


def _explicit_mean(X, y, mask, x, name, ell, noise):
    """Posterior mean of one client written out independently (exact differences, solve)."""
    Xv, yv = X[mask], y[mask]
    lo, span = yv.min(), yv.max() - yv.min()
    ys = (yv - lo) / (span + 1e-20)
    r2 = (Xv.unsqueeze(1) - Xv.unsqueeze(0)).square().sum(-1)
    K = kernels.from_sqdist(r2, name, ell) + noise * torch.eye(len(Xv), dtype=F64)
    alpha = torch.linalg.solve(K, ys)
    k = kernels.from_sqdist((x - Xv).square().sum(-1), name, ell)
    return lo + span * (k @ alpha)


@pytest.mark.parametrize("name", KERNELS)
def test_closed_form_gradient_equals_autograd_of_the_posterior_mean(name: str) -> None:
    X, y, mask = _batch()
    x = _rand(9, 3, 8)
    post = gp.fit(X, y, mask, x, name, 0.8, 1e-6)
    closed = gp.mean_grad(post, x)
    for i in range(3):
        xi = x[i].clone().requires_grad_(True)
        (auto,) = torch.autograd.grad(_explicit_mean(X[i], y[i], mask[i], xi, name, 0.8, 1e-6), xi)
        rel = float((closed[i] - auto).norm() / auto.norm())
        assert rel < 1e-9  # spec: < 1e-6; float64 gives ~1e-13


@pytest.mark.parametrize("name", KERNELS)
def test_posterior_mean_equals_scikit_learn(name: str) -> None:
    X, y, mask = _batch(d=5)
    x = _rand(4, 3, 6, 5)
    post = gp.fit(X, y, mask, x[:, 0], name, 0.6, 1e-6)
    ours = gp.mean(post, x)
    kern = RBF(0.6) if name == "se" else Matern(0.6, nu=2.5)
    for i in range(3):
        Xv, yv = X[i][mask[i]].numpy(), y[i][mask[i]].numpy()
        lo, span = yv.min(), yv.max() - yv.min()
        ref = GaussianProcessRegressor(kern, alpha=1e-6, optimizer=None).fit(
            Xv, (yv - lo) / (span + 1e-20)
        )
        want = lo + span * ref.predict(x[i].numpy())
        assert np.allclose(ours[i].numpy(), want, rtol=1e-9, atol=0)


@pytest.mark.parametrize("dims", [1, 2])
def test_dense_history_recovers_the_true_gradient(dims: int) -> None:
    # SE toy with a dense noiseless history: |grad mu - grad f| < 1e-2 (spec 2.10.1)
    if dims == 1:
        X = torch.linspace(0, 2, 200, dtype=F64).reshape(1, 200, 1)
        x = torch.linspace(0.3, 1.7, 15, dtype=F64).reshape(15, 1)
    else:
        g = torch.linspace(0, 1.5, 30, dtype=F64)
        X = torch.cartesian_prod(g, g).reshape(1, 900, 2)
        x = 0.3 + 0.9 * _rand(5, 15, 2)

    def f(z: torch.Tensor) -> torch.Tensor:
        return torch.sin(3 * z[..., 0]) + (torch.cos(2 * z[..., 1]) if dims == 2 else 0)

    def df(z: torch.Tensor) -> torch.Tensor:
        out = [3 * torch.cos(3 * z[..., 0])]
        if dims == 2:
            out.append(-2 * torch.sin(2 * z[..., 1]))
        return torch.stack(out, -1)

    mask = torch.ones(X.shape[:2], dtype=torch.bool)
    post = gp.fit(X, f(X), mask, x[:1], "se", 0.3, 1e-8)
    err = (gp.mean_grad(post, x.unsqueeze(0))[0] - df(x)).abs().max()
    assert float(err) < 1e-2


def _explicit_cov(S, mask, cand, name, ell, noise):
    """``Sigma_grad`` [m, d, d] of one client from explicit Jacobians."""
    Sv = S[mask]
    r2 = (Sv.unsqueeze(1) - Sv.unsqueeze(0)).square().sum(-1)
    K = kernels.from_sqdist(r2, name, ell) + noise * torch.eye(len(Sv), dtype=F64)
    J = kernels.grad_first(cand, Sv, name, ell)  # [m, n, d]
    c0 = kernels.gradient_prior(name, ell)
    d = S.shape[-1]
    return c0 * torch.eye(d, dtype=F64) - J.transpose(1, 2) @ torch.linalg.solve(K, J)


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("score", ["trace", "frobenius", "spectral"])
@pytest.mark.parametrize("d", [3, 8])
def test_uncertainty_scores_equal_the_explicit_gradient_covariance(
    name: str, score: str, d: int
) -> None:
    S, _, mask = _batch(n=12, d=d, seed=3)
    centre = S[:, 0]
    cand = centre.unsqueeze(1) + 0.3 * (_rand(7, 3, 9, d) - 0.5)
    got = gp.grad_cov_scores(S, mask, centre, cand, name, 0.7, 1e-4, score)
    for i in range(3):
        cov = _explicit_cov(S[i], mask[i], cand[i], name, 0.7, 1e-4)
        if score == "trace":
            want = cov.diagonal(dim1=1, dim2=2).sum(-1)
        elif score == "frobenius":
            want = torch.linalg.matrix_norm(cov)
        else:
            want = torch.linalg.matrix_norm(cov, 2)
        assert torch.allclose(got[i], want, rtol=1e-8, atol=1e-10), (i, got[i], want)


def test_spectral_norm_cannot_rank_with_fewer_points_than_dimensions() -> None:
    # n < d: J^T A J has a null space, so ||Sigma_grad||_2 = c for every candidate
    S, _, mask = _batch(n=12, d=20, seed=4)
    cand = S[:, :5] + 0.01
    got = gp.grad_cov_scores(S, mask, S[:, 0], cand, "se", 0.5, 1e-6, "spectral")
    assert torch.equal(got, torch.full_like(got, 1 / 0.5**2))


def test_uncertainty_is_the_prior_far_away_and_small_at_a_conditioning_point() -> None:
    S, _, mask = _batch(n=30, d=4, seed=5)
    d, ell = 4, 0.3
    far = S[:, :1] + 100.0
    at = S[:, 3:4]  # a point of the conditioning set
    got = gp.grad_cov_scores(S, mask, S[:, 0], torch.cat([far, at], 1), "se", ell, 1e-6)
    assert torch.allclose(got[:, 0], torch.full((3,), d / ell**2, dtype=F64), rtol=1e-12)
    assert bool((got[:, 1] < got[:, 0]).all())


def test_conditioning_on_the_candidate_itself_lowers_its_score() -> None:
    # pitfall P4: the set is history plus x (appended, not added to every point)
    S, _, mask = _batch(n=20, d=5, seed=6)
    x = S[:, 0] + 0.05
    cand = x.unsqueeze(1) + 0.02 * _rand(1, 3, 6, 5)
    without = gp.grad_cov_scores(S, mask, x, cand, "se", 1.0, 1e-6)
    with_x = torch.cat([S, x.unsqueeze(1)], 1)
    mask_x = torch.cat([mask, torch.ones(3, 1, dtype=torch.bool)], 1)
    assert bool((gp.grad_cov_scores(with_x, mask_x, x, cand, "se", 1.0, 1e-6) < without).all())


def test_nearest_matches_a_brute_force_sort_and_masks_short_histories() -> None:
    X = _rand(8, 2, 30, 4)
    count = torch.tensor([30, 6])
    x = _rand(9, 2, 4)
    idx, mask = gp.nearest(X, count, x, 10)
    brute = torch.argsort((X[0] - x[0]).norm(dim=1))[:10]
    assert torch.equal(idx[0], brute) and bool(mask[0].all())
    # a history shorter than the neighbourhood: all of it, the rest masked
    assert mask[1].tolist() == [True] * 6 + [False] * 4
    assert sorted(idx[1, :6].tolist()) == list(range(6))


def test_nearest_breaks_ties_by_history_order() -> None:
    X = torch.zeros(1, 5, 2, dtype=F64)  # five copies of one point
    idx, _ = gp.nearest(X, torch.tensor([5]), torch.ones(1, 2, dtype=F64), 3)
    assert idx.tolist() == [[0, 1, 2]]


@pytest.mark.parametrize(
    ("n", "d", "score"), [(151, 30, "trace"), (23, 7, "frobenius"), (23, 5, "spectral")]
)
def test_a_client_gets_the_same_bits_alone_or_in_a_batch(n: int, d: int, score: str) -> None:
    # placement independence: what a client computes cannot depend on its batch-mates
    # (odd sizes: without the padding of fedopt.zo.align, MKL rounds by position)
    X, y, mask = _batch(c=3, n=n, d=d, seed=11)
    x = X[:, 5] + 0.01
    cand = x.unsqueeze(1) + 0.01 * _rand(2, 3, 9, d)
    g = gp.mean_grad(gp.fit(X, y, mask, x, "se", 1.0, 1e-6), x)
    s = gp.grad_cov_scores(X, mask, x, cand, "se", 1.0, 1e-6, score)
    for i in range(3):
        sl = slice(i, i + 1)
        one = gp.mean_grad(gp.fit(X[sl], y[sl], mask[sl], x[sl], "se", 1.0, 1e-6), x[sl])
        assert torch.equal(one, g[sl])
        got = gp.grad_cov_scores(X[sl], mask[sl], x[sl], cand[sl], "se", 1.0, 1e-6, score)
        assert torch.equal(got, s[sl])
        pair = [i, (i + 1) % 3]
        got = gp.grad_cov_scores(X[pair], mask[pair], x[pair], cand[pair], "se", 1.0, 1e-6, score)
        assert torch.equal(got[0], s[i])


def test_constant_targets_give_a_zero_gradient() -> None:
    X = _rand(1, 1, 10, 3)
    post = gp.fit(
        X,
        torch.full((1, 10), 2.5, dtype=F64),
        torch.ones(1, 10, dtype=torch.bool),
        X[:, 0],
        "se",
        1.0,
        1e-6,
    )
    assert torch.equal(gp.mean_grad(post, X[:, 1]), torch.zeros(1, 3, dtype=F64))


@pytest.mark.parametrize("noise", [0.0, -1e-6, math.nan])
def test_a_noise_variance_that_is_not_positive_is_refused(noise: float) -> None:
    X, y, mask = _batch()
    with pytest.raises(ConfigError, match="noise: the noise variance"):
        gp.fit(X, y, mask, X[:, 0], "se", 1.0, noise)


def test_a_lengthscale_that_is_not_positive_is_refused() -> None:
    X, y, mask = _batch()
    with pytest.raises(ConfigError, match=r"lengthscale: .* finite number > 0, got -1\.0"):
        gp.fit(X, y, mask, X[:, 0], "se", -1.0, 1e-6)


@pytest.mark.parametrize("score", ["trace", "frobenius", "spectral"])
@pytest.mark.parametrize("n", [21, 24])  # a free padding slot, or a new block for x
def test_scores_after_a_fit_equal_scores_on_the_set_plus_the_new_iterate(
    score: str, n: int
) -> None:
    X, y, mask = _batch(n=n, d=5, seed=12)
    x_old = X[:, 2] + 0.03
    post = gp.fit(X, y, mask, x_old, "matern52", 0.6, 1e-5)
    x = x_old + 0.05 * (_rand(3, 3, 5) - 0.5)
    cand = x.unsqueeze(1) + 0.05 * (_rand(4, 3, 11, 5) - 0.5)
    S = torch.cat([X, x.unsqueeze(1)], 1)
    Smask = torch.cat([mask, torch.ones(3, 1, dtype=torch.bool)], 1)
    want = gp.grad_cov_scores(S, Smask, x, cand, "matern52", 0.6, 1e-5, score)
    got = gp.grad_cov_scores_after(post, x, cand, score)
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)
    one = gp.grad_cov_scores_after(
        gp.fit(X[1:2], y[1:2], mask[1:2], x_old[1:2], "matern52", 0.6, 1e-5),
        x[1:2],
        cand[1:2],
        score,
    )
    assert torch.equal(one, got[1:2])  # batch independent


@pytest.mark.parametrize("name", KERNELS)
def test_log_marginal_likelihood_equals_scikit_learn(name: str) -> None:
    X, y, mask = _batch(n=30, d=4, seed=13)
    # (at l = 2.5, K + 1e-4 I has condition ~2e5: the two kernel matrices' rounding
    # shows at about 1e-8 relative)
    grid = torch.tensor([0.2, 0.7, 2.5], dtype=F64)
    got = gp.log_marginal(X, y, mask, X[:, 0], name, grid, 1e-4)
    for i in range(3):
        Xv, yv = X[i][mask[i]].numpy(), y[i][mask[i]].numpy()
        ys = (yv - yv.min()) / (yv.max() - yv.min() + 1e-20)
        for g, ell in enumerate(grid.tolist()):
            kern = RBF(ell) if name == "se" else Matern(ell, nu=2.5)
            ref = GaussianProcessRegressor(kern, alpha=1e-4, optimizer=None).fit(Xv, ys)
            assert float(got[i, g]) == pytest.approx(ref.log_marginal_likelihood_value_, rel=1e-7)


def test_grid_ml2_lands_next_to_scikit_learns_optimum() -> None:
    X, y, mask = _batch(c=2, n=40, d=3, seed=14)
    grid = torch.logspace(-2, 2, 41, dtype=F64)  # ratio 10^0.1 between neighbours
    picked = gp.select_lengthscale(X, y, mask, X[:, 0], "matern52", grid, 1e-6)
    for i in range(2):
        Xv, yv = X[i][mask[i]].numpy(), y[i][mask[i]].numpy()
        ys = (yv - yv.min()) / (yv.max() - yv.min())
        kern = Matern(1.0, length_scale_bounds=(1e-2, 1e2), nu=2.5)
        ref = GaussianProcessRegressor(kern, alpha=1e-6, n_restarts_optimizer=5, random_state=0)
        best = ref.fit(Xv, ys).kernel_.length_scale
        assert abs(math.log10(float(picked[i]) / best)) <= 0.05 + 1e-9  # within half a step


def test_per_client_lengthscales_are_the_per_client_gps() -> None:
    X, y, mask = _batch(n=25, d=6, seed=15)
    ell = torch.tensor([0.4, 1.3, 3.0], dtype=F64)
    x = X[:, 1] + 0.02
    nxt = x + 0.01
    cand = nxt.unsqueeze(1) + 0.05 * (_rand(6, 3, 7, 6) - 0.5)
    post = gp.fit(X, y, mask, x, "se", ell, 1e-6)
    grads = gp.mean_grad(post, x)
    after = gp.grad_cov_scores_after(post, nxt, cand)
    plain = gp.grad_cov_scores(X, mask, x, cand, "se", ell, 1e-6, "frobenius")
    for i in range(3):
        sl = slice(i, i + 1)
        one = gp.fit(X[sl], y[sl], mask[sl], x[sl], "se", float(ell[i]), 1e-6)
        assert torch.allclose(grads[sl], gp.mean_grad(one, x[sl]), rtol=1e-9, atol=1e-12)
        want = gp.grad_cov_scores_after(one, nxt[sl], cand[sl])
        assert torch.allclose(after[sl], want, rtol=1e-9, atol=1e-12)
        want = gp.grad_cov_scores(
            X[sl], mask[sl], x[sl], cand[sl], "se", float(ell[i]), 1e-6, "frobenius"
        )
        assert torch.allclose(plain[sl], want, rtol=1e-9, atol=1e-12)


def test_a_bad_per_client_lengthscale_is_refused() -> None:
    X, y, mask = _batch()
    with pytest.raises(ConfigError, match="per-client lengthscales must be 3 finite numbers > 0"):
        gp.fit(X, y, mask, X[:, 0], "se", torch.tensor([1.0, 0.0, 2.0]), 1e-6)
    with pytest.raises(ConfigError, match="the ML-II grid must hold finite numbers > 0"):
        gp.select_lengthscale(X, y, mask, X[:, 0], "se", torch.tensor([1.0, -1.0]), 1e-6)

"""DIMAT's merge: the sanity tests T1 and T2 of the spec (section 3.12) and the pieces.

T1: a model and a copy with permuted hidden units compute the same function; the
activation-matching merge of the two recovers the model exactly, weight averaging does
not. T2: two MLPs trained from independent inits on the same synthetic 10-class data;
AM(A, B) keeps their accuracy (>= min(A, B) - 0.03) and beats WA(A, B) by >= 0.2.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from fedopt import rng
from fedopt.merge import (
    activation_perms,
    assign,
    correlation,
    permute_groups,
    weight_matching_perms,
)
from fedopt.models import digits_cnn_bn, reset_bn, resnet20, synthetic_mlp
from fedopt.optim import Adam
from fedopt.problems.digits import load


def _random_perms(model, seed: int) -> dict[str, torch.Tensor]:
    out = {}
    for i, (name, g) in enumerate(model.layout.groups.items()):
        u = rng.uniform(rng.node_keys(seed, "perm", torch.tensor([i]), 0), g.units)
        out[name] = torch.argsort(u, dim=1)
    return out


def _am_merge(model, A, BA, B, BB, inputs):
    """½/½ activation-matching merge of (A, BA) and (B, BB) on ``inputs [1, n, ...]``."""
    fa = model.capture(A, inputs, BA)
    fb = model.capture(B, inputs, BB)
    Bp, BBp = permute_groups(model.layout, B, BB, activation_perms(fa, fb))
    merged_b = None if BA is None else 0.5 * BA + 0.5 * BBp
    return 0.5 * A + 0.5 * Bp, merged_b


# ---------------------------------------------------------------- the pieces


def test_correlation_matches_numpy_corrcoef() -> None:
    a = rng.normal(rng.node_keys(0, "a", torch.tensor([0]), 0), 200 * 5, torch.float64)
    b = rng.normal(rng.node_keys(0, "b", torch.tensor([0]), 0), 200 * 4, torch.float64)
    A, F = a.view(200, 5), b.view(200, 4)
    R = correlation(A, F)
    ref = np.corrcoef(A.numpy().T, F.numpy().T)[:5, 5:]
    assert R.shape == (5, 4)
    assert np.allclose(R.numpy(), ref, atol=1e-12)
    dead = correlation(torch.zeros(10, 3), F[:10, :3])  # a dead unit correlates 0
    assert torch.equal(dead, torch.zeros(3, 3, dtype=torch.float64))


def test_assign_is_the_maximising_permutation() -> None:
    R = rng.uniform(rng.node_keys(1, "R", torch.tensor([0, 1]), 0), 36, torch.float64)
    R = R.view(2, 6, 6)
    perm = assign(R)
    for p in range(2):
        _, cols = linear_sum_assignment(R[p].numpy(), maximize=True)
        assert perm[p].tolist() == cols.tolist()
    shuffled = torch.tensor([3, 0, 5, 1, 4, 2])
    match = torch.zeros(6, 6, dtype=torch.float64)
    match[torch.arange(6), shuffled] = 1.0  # unit u matches unit shuffled[u]
    assert assign(match).tolist() == shuffled.tolist()


# ---------------------------------------------------------------- T1: exact symmetry


@pytest.mark.parametrize("hidden", [64, 128])
def test_t1_am_merge_of_a_permuted_copy_is_the_model(hidden: int) -> None:
    model = synthetic_mlp(hidden)
    A = model.init_params(0, [0])
    B, _ = permute_groups(model.layout, A, None, _random_perms(model, 7))
    x = rng.normal(rng.node_keys(0, "x", torch.tensor([0]), 0), 500 * 20).view(1, 500, 20)
    assert (model.forward(A, x) - model.forward(B, x)).abs().max() < 1e-5  # same function
    merged, _ = _am_merge(model, A, None, B, None, x)
    assert torch.equal(merged, A)  # spec: max |delta logit| = 0.0
    assert (model.forward(merged, x) - model.forward(A, x)).abs().max().item() == 0.0
    wa = 0.5 * A + 0.5 * B
    assert (model.forward(wa, x) - model.forward(A, x)).abs().max().item() > 0.05
    perms, _ = weight_matching_perms(model.layout, A, B)  # weight matching recovers it too
    assert torch.equal(permute_groups(model.layout, B, None, perms)[0], A)


@pytest.mark.parametrize("build", [digits_cnn_bn, resnet20], ids=["cnn_bn", "resnet20"])
def test_t1_with_batchnorm_statistics(build) -> None:
    model = build()
    A = model.init_params(3, [0])
    x = torch.from_numpy(load()[0][:400].copy()).unsqueeze(0)
    BA = reset_bn(model, A, x, batch_size=100)
    B, BB = permute_groups(model.layout, A, BA, _random_perms(model, 11))
    assert not torch.equal(BB, BA)  # the running statistics were permuted too
    yA = model.forward(A, x, BA)
    assert (model.forward(B, x, BB) - yA).abs().max() < 1e-5
    merged, mb = _am_merge(model, A, BA, B, BB, x)
    assert torch.equal(merged, A) and torch.equal(mb, BA)
    perms, solved = weight_matching_perms(model.layout, A, B)  # WM: from the weights alone
    assert solved % len(model.layout.groups) == 0  # whole sweeps over the groups
    assert all(
        torch.equal(t, r)
        for t, r in zip(permute_groups(model.layout, B, BB, perms), (A, BA), strict=True)
    )
    wa = model.forward(0.5 * A + 0.5 * B, x, 0.5 * BA + 0.5 * BB)
    assert (wa - yA).abs().max() > 0.05


# ---------------------------------------------------------------- T2: independent inits


def _synthetic(n: int, purpose: str) -> tuple[torch.Tensor, torch.Tensor]:
    """10 classes in 20-D, each a mixture of 8 Gaussian clusters (centres N(0, I), one
    draw; noise std 0.3): not linearly separable, so the hidden units matter."""
    centres = rng.normal(rng.node_keys(0, "centres", torch.tensor([0]), 0), 80 * 20)
    keys = rng.node_keys(0, purpose, torch.tensor([0]), 0)
    c = rng.randint(keys, n, 80)[0]
    noise = rng.normal(rng.node_keys(0, purpose + "/noise", torch.tensor([0]), 0), n * 20)
    return centres.view(80, 20)[c] + 0.3 * noise.view(n, 20), c % 10


def _accuracy(model, W, x, y) -> float:
    return float((model.forward(W, x.unsqueeze(0)).argmax(-1)[0] == y).double().mean())


def test_t2_two_independent_inits() -> None:
    model = synthetic_mlp(64)
    x, y = _synthetic(5000, "train")
    xt, yt = _synthetic(2000, "test")
    W = model.init_params(0, [100, 101])  # init seeds 100 + k, as the spec's toy
    opt = Adam()
    state = opt.init(2, model.dim, W.dtype, W.device)
    for epoch in range(20):  # 20 Adam epochs, lr 1e-3, batch 64, each on its own order
        order = rng.node_keys(0, "order", torch.tensor([0, 1]), epoch)
        perm = torch.argsort(rng.uniform(order, 5000), dim=1)
        for a in range(0, 5000, 64):
            idx = perm[:, a : a + 64]
            W -= opt.update(state, model.grad(W, x[idx], y[idx]), 1e-3)
    A, B = W[:1], W[1:]
    acc_a, acc_b = _accuracy(model, A, xt, yt), _accuracy(model, B, xt, yt)
    wa = _accuracy(model, 0.5 * A + 0.5 * B, xt, yt)
    am = _accuracy(model, _am_merge(model, A, None, B, None, x.unsqueeze(0))[0], xt, yt)
    assert min(acc_a, acc_b) > 0.9  # measured: A 1.000, B 1.000, WA 0.5625, AM 0.977
    assert am >= min(acc_a, acc_b) - 0.03
    assert am - wa >= 0.2

"""fc10_regression: split and node sizes, gradients against torch.func and finite
differences, DIFF2's sensitivity property, placement invariance, config and budget."""

from __future__ import annotations

import pytest
import torch
from prob_helpers import build, random_params
from torch.func import functional_call, grad, vmap

import fedopt.problems as P
from fedopt.errors import ConfigError
from fedopt.problems._fc10_net import fc10_module
from fedopt.problems.fc10 import Fc10Config, make_dataset, node_sizes

DEFAULT = {"name": "fc10_regression"}
SMALL = {"name": "fc10_regression", "samples": 600, "batch_size": 6}  # 480 train: 160 x 3


def _module_loss(oracle: P.Oracle):
    """Per-sample loss ``(w, a, y) -> (module(a) - y)^2`` through ``torch.nn`` layers."""
    module = fc10_module(oracle.config.features, oracle.config.hidden).double()

    def loss(w: torch.Tensor, a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        params = {n: t[0] for n, t in oracle.layout.unflatten(w.unsqueeze(0)).items()}
        return (functional_call(module, params, (a.unsqueeze(0),))[0, 0] - y) ** 2

    return loss


def _func_per_sample(oracle: P.Oracle, X: torch.Tensor, A: torch.Tensor, y: torch.Tensor):
    """``vmap(vmap(grad))``: ``[k, b, dim]`` for rows ``X [k, dim]``, samples ``A [k, b, F]``."""
    per = vmap(vmap(grad(_module_loss(oracle)), in_dims=(None, 0, 0)), in_dims=(0, 0, 0))
    return per(X.double(), A.double(), y.double())


# ----------------------------------------------------------------------------- data


def test_defaults_split_sizes_and_round_robin_nodes() -> None:
    oracle = build(DEFAULT, list(range(10)), 10, seed=0)
    assert oracle.dim == 101 and oracle.dtype == torch.float64
    assert oracle.info["train_samples"] == 16512 and oracle.info["test_samples"] == 4128
    assert oracle.counts.tolist() == [1652, 1652] + [1651] * 8
    assert oracle.max_samples == 1652 and oracle.n_pad == 1652 and oracle.chunk == 413
    torch.testing.assert_close(oracle.weights, oracle.num_samples / 16512, rtol=0, atol=0)
    assert abs(float(oracle.weights.sum()) - 1.0) < 1e-15
    assert oracle.x_test.shape == (4128, 8) and oracle.A.shape == (10, 1652, 8)
    assert torch.equal(oracle.valid.sum(dim=1), oracle.num_samples)
    assert bool((oracle.A[2:, 1651] == 0).all()) and bool((oracle.y[2:, 1651] == 0).all())
    assert [(e.name, e.shape, e.offset) for e in oracle.layout.params] == [
        ("fc1.weight", (10, 8), 0),
        ("fc1.bias", (10,), 80),
        ("fc2.weight", (1, 10), 90),
        ("fc2.bias", (1,), 100),
    ]
    # training row i is sample i // 10 of data rank i % 10
    data = make_dataset(Fc10Config(), 0)
    for rank in (0, 1, 7):
        n = int(oracle.counts[rank])
        assert torch.equal(oracle.A[rank, :n], data.x_train[rank::10])
        assert torch.equal(oracle.y[rank, :n], data.y_train[rank::10])
    # standardised on the training rows, targets scaled to max |y_train| = 1
    torch.testing.assert_close(data.x_train.mean(dim=0), torch.zeros(8, dtype=torch.float64))
    torch.testing.assert_close(
        data.x_train.std(dim=0, unbiased=False), torch.ones(8, dtype=torch.float64)
    )
    assert float(data.y_train.abs().max()) == 1.0
    assert float(data.x_test.mean(dim=0).abs().max()) < 0.1  # same distribution, not refitted
    # three hosted ranks of 1,651 samples: the mask width is theirs
    part = build(DEFAULT, [3, 7], 10, seed=0)
    assert part.max_samples == 1651 and part.n_pad == 1652
    assert node_sizes(16512, 10).tolist() == [1652, 1652] + [1651] * 8


def test_targets_come_from_the_teacher_plus_the_stated_noise() -> None:
    cfg = {**DEFAULT, "data_seed": 0}
    quiet = build({**cfg, "noise": 0.0}, list(range(10)), 10, seed=4)
    teacher = make_dataset(quiet.config, 4).teacher
    assert quiet.evaluate(teacher)["loss"] < 1e-30
    assert quiet.evaluate_test(teacher)["test_loss"] < 1e-30
    noisy = build(cfg, list(range(10)), 10, seed=4)
    data = make_dataset(noisy.config, 4)
    # the teacher's MSE is the noise variance (16,512 draws: 1.1% relative std)
    train = noisy.evaluate(data.teacher)["loss"]
    assert abs(train / noisy.info["noise_mse"] - 1.0) < 0.05
    assert abs(noisy.info["noise_mse"] - 3.8176e-4) < 1e-7  # the documented difficulty
    assert abs(noisy.info["target_var"] - 0.038747) < 1e-6
    # a random init is far from it; data_seed fixes the data whatever the experiment seed
    x0 = noisy.init_params(torch.arange(1))[0]
    assert 0.1 < noisy.evaluate(x0)["loss"] < 0.5
    other = build(cfg, [0], 10, seed=9)
    assert torch.equal(other.A[0], noisy.A[0]) and torch.equal(other.y[0], noisy.y[0])
    assert not torch.equal(other.init_params(torch.arange(1)), noisy.init_params(torch.arange(1)))
    assert not torch.equal(build(DEFAULT, [0], 10, seed=9).A[0], other.A[0])  # data_seed null


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("batch_size", [0, 6])
def test_gradients_match_torch_func(batch_size: int) -> None:
    oracle = build({**SMALL, "batch_size": batch_size, "samples": 601}, [0, 1, 2], 3)
    assert oracle.counts.tolist() == [160, 160, 160]
    rows, step = torch.tensor([2, 0]), 5
    X = random_params(oracle, 2, seed=3, scale=0.6)
    got = oracle.per_sample_grad(X, rows, step)
    if batch_size:
        idx = oracle.batch_indices(rows, step)
        take = torch.arange(2).unsqueeze(1)
        A, y = oracle.A[rows][take, idx], oracle.y[rows][take, idx]
    else:
        A, y = oracle.A[rows, :160], oracle.y[rows, :160]
    want = _func_per_sample(oracle, X, A, y)
    assert got.shape == want.shape == (2, batch_size or 160, 101)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(oracle.grad(X, rows, step), want.mean(dim=1), rtol=1e-12, atol=1e-13)
    full = _func_per_sample(oracle, X, oracle.A[rows, :160], oracle.y[rows, :160]).mean(dim=1)
    torch.testing.assert_close(oracle.full_grad(X, rows), full, rtol=1e-12, atol=1e-13)
    # clipped mean: (1/b) sum_s g_s min(1, clip / ||g_s||)
    clip = float(want.norm(dim=2).median())
    f = (clip / want.norm(dim=2)).clamp(max=1.0)
    torch.testing.assert_close(
        oracle.clipped_mean_grad(X, rows, step, clip),
        (want * f.unsqueeze(2)).mean(dim=1),
        rtol=1e-12,
        atol=1e-13,
    )


def test_full_batch_per_sample_rows_beyond_a_node_are_zero() -> None:
    oracle = build({**SMALL, "batch_size": 0}, [0, 1, 2], 3)
    assert oracle.counts.tolist() == [160, 160, 160]
    uneven = build({**SMALL, "batch_size": 0, "samples": 603}, [0, 1, 2], 3)
    assert uneven.counts.tolist() == [161, 160, 161] or uneven.counts.tolist() == [161, 161, 160]
    rows = torch.arange(3)
    X = random_params(uneven, 3, seed=1)
    g = uneven.per_sample_grad(X, rows, 0)
    assert g.shape == (3, 161, 101)
    short = int(torch.argmin(uneven.counts))
    assert torch.equal(g[short, 160], torch.zeros(101, dtype=torch.float64))
    n = uneven.num_samples.unsqueeze(1)
    torch.testing.assert_close(g.sum(dim=1) / n, uneven.full_grad(X, rows), rtol=1e-12, atol=1e-14)
    # the clipped mean of the full batch divides by each node's own count
    clip = float(g.norm(dim=2)[g.norm(dim=2) > 0].median())
    norms = g.norm(dim=2).clamp(min=1e-300)
    want = (g * (clip / norms).clamp(max=1.0).unsqueeze(2)).sum(dim=1) / n
    torch.testing.assert_close(uneven.clipped_mean_grad(X, rows, 0, clip), want, rtol=1e-12, atol=0)


def test_gradient_matches_finite_differences() -> None:
    oracle = build(SMALL, [0, 1, 2], 3)
    rows = torch.arange(3)
    X = random_params(oracle, 3, seed=8, scale=0.8)
    gen = torch.Generator().manual_seed(1)
    V = torch.randn(3, oracle.dim, generator=gen, dtype=torch.float64)
    h = 1e-5
    fd = (oracle.value(X + h * V, rows) - oracle.value(X - h * V, rows)) / (2 * h)
    exact = (oracle.full_grad(X, rows) * V).sum(dim=1)
    torch.testing.assert_close(fd, exact, rtol=1e-7, atol=1e-10)
    # a large pre-activation (> 20) passes through softplus with slope 1
    Y = X.clone()
    Y[:, 80:90] += 30.0
    fd = (oracle.value(Y + h * V, rows) - oracle.value(Y - h * V, rows)) / (2 * h)
    torch.testing.assert_close(fd, (oracle.full_grad(Y, rows) * V).sum(dim=1), rtol=1e-7, atol=1e-8)


def test_float32_is_close_to_float64() -> None:
    wide = build(SMALL, [0, 1], 2)
    narrow = build({**SMALL, "dtype": "float32"}, [0, 1], 2)
    rows = torch.arange(2)
    X = random_params(wide, 2)
    g32 = narrow.full_grad(X.float(), rows)
    assert g32.dtype == torch.float32
    torch.testing.assert_close(g32.double(), wide.full_grad(X, rows), rtol=1e-4, atol=1e-6)
    s32 = narrow.clipped_grad_sum(X.float(), rows, 0.05, X.float() * 0.9)
    s64 = wide.clipped_grad_sum(X, rows, 0.05, X * 0.9)
    torch.testing.assert_close(s32.double(), s64, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- DIFF2 sensitivity


def _replace_sample(oracle: P.Oracle, row: int, j: int, a: torch.Tensor, y: float) -> None:
    oracle.A[row, j] = a
    oracle.y[row, j] = y


@pytest.mark.parametrize("diff", [False, True], ids=["restart", "difference"])
def test_one_replaced_sample_moves_the_message_by_at_most_2c_over_n(diff: bool) -> None:
    """Spec diff2.md 4.11.3: ``h_p = clipped_grad_sum / n_p`` changes by <= 2c / n_p when
    one sample is replaced (c = C1 at a restart, c_r = C2 ||x_r - x_{r-1}|| otherwise)."""
    spec = {**DEFAULT, "samples": 2000}  # 1,600 training rows: 534, 533, 533
    rows = torch.arange(3)
    oracle = build(spec, [0, 1, 2], 3)
    X = random_params(oracle, 3, seed=2, scale=0.6)
    Xp = X + 0.01 * random_params(oracle, 3, seed=3, scale=1.0) if diff else None
    c = 3.0 * float((X - Xp).norm(dim=1).max()) if diff else 0.05  # C2 = 3 / C1 = 0.05
    n = oracle.num_samples.unsqueeze(1)
    before = oracle.clipped_grad_sum(X, rows, c, Xp) / n
    g_old = _func_per_sample(oracle, X, oracle.A[:, 17:18], oracle.y[:, 17:18])[:, 0]
    if diff:
        g_old -= _func_per_sample(oracle, Xp, oracle.A[:, 17:18], oracle.y[:, 17:18])[:, 0]
    worst = 0.0
    gen = torch.Generator().manual_seed(0)
    for trial in range(5):
        a = 6.0 * torch.randn(8, generator=gen, dtype=torch.float64)  # an outlier
        y = 1.0 if trial % 2 else -1.0
        changed = build(spec, [0, 1, 2], 3)
        _replace_sample(changed, 1, 17, a, y)
        after = changed.clipped_grad_sum(X, rows, c, Xp) / n
        step = (after - before).norm(dim=1)
        assert float(step[0]) == 0.0 and float(step[2]) == 0.0  # other nodes untouched
        assert float(step[1]) <= 2 * c / float(n[1]) * (1 + 1e-12)
        # the whole change is that one sample's clipped difference, to rounding
        g_new = _func_per_sample(changed, X, a.view(1, 1, 8).expand(3, 1, 8), torch.full((3, 1), y))
        g_new = g_new[:, 0]
        if diff:
            g_new -= _func_per_sample(
                changed, Xp, a.view(1, 1, 8).expand(3, 1, 8), torch.full((3, 1), y)
            )[:, 0]

        def clipped(g: torch.Tensor) -> torch.Tensor:
            return g * (c / (g.norm() + 1e-10)).clamp(max=1.0)

        want = (clipped(g_new[1]) - clipped(g_old[1])) / float(n[1])
        torch.testing.assert_close(after[1] - before[1], want, rtol=1e-9, atol=1e-14)
        worst = max(worst, float(step[1]) * float(n[1]) / c)
    assert 0.5 < worst <= 2.0  # outliers are clipped: the bound is nearly reached


def test_one_masked_sample_moves_the_sum_by_at_most_c() -> None:
    """Add/remove adjacency (DP-SGD with a Poisson mask): one mask entry moves the sum by
    that sample's clipped vector, of norm <= c."""
    oracle = build({**DEFAULT, "samples": 2000}, [0, 1, 2], 3)
    rows = torch.arange(3)
    X = random_params(oracle, 3, seed=4, scale=0.6)
    mask = torch.ones(3, oracle.max_samples, dtype=torch.float64)
    full = oracle.clipped_grad_sum(X, rows, 0.02, mask=mask)
    mask[0, 100] = 0.0
    less = oracle.clipped_grad_sum(X, rows, 0.02, mask=mask)
    g = _func_per_sample(oracle, X[:1], oracle.A[:1, 100:101], oracle.y[:1, 100:101])[0, 0]
    torch.testing.assert_close(full[0] - less[0], g * min(1.0, 0.02 / (float(g.norm()) + 1e-10)))
    assert float((full[0] - less[0]).norm()) <= 0.02 + 1e-15
    assert torch.equal(full[1:], less[1:])


# ----------------------------------------------------------------------------- placement


@pytest.mark.parametrize("batch_size", [0, 16])
def test_any_split_of_ranks_gives_the_same_bits(batch_size: int) -> None:
    spec = {**DEFAULT, "batch_size": batch_size}
    whole = build(spec, list(range(10)), 10)
    part = build(spec, [3, 7], 10)
    X = random_params(whole, 10, seed=6, scale=0.5)
    Xp = X + 0.01 * random_params(whole, 10, seed=7, scale=1.0)
    radii = torch.linspace(0.01, 0.1, 10, dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    mask = (torch.rand(10, whole.max_samples, generator=gen) < 0.5).double()
    all_rows, sub = torch.arange(10), torch.tensor([3, 7])
    both = torch.arange(2)

    def outputs(oracle: P.Oracle, rows: torch.Tensor, sel: torch.Tensor) -> dict:
        m = mask[sel, : oracle.max_samples]
        return {
            "grad": oracle.grad(X[sel], rows, 4),
            "full": oracle.full_grad(X[sel], rows),
            "value": oracle.value(X[sel], rows),
            "clip_mean": oracle.clipped_mean_grad(X[sel], rows, 4, 0.05),
            "sum": oracle.clipped_grad_sum(X[sel], rows, radii[sel]),
            "diff": oracle.clipped_grad_sum(X[sel], rows, radii[sel], Xp[sel], m),
            "per_sample": oracle.per_sample_grad(X[sel], rows, 4)[:, :1651],
        }

    ref = {k: v[sub] for k, v in outputs(whole, all_rows, all_rows).items()}
    for got in (outputs(part, both, sub), outputs(whole, sub, sub)):
        for key in ref:
            assert torch.equal(got[key], ref[key]), key
    assert whole.evaluate_test(X[0]) == part.evaluate_test(X[0])


# ----------------------------------------------------------------------------- config


def test_config_summary_and_memory() -> None:
    problem = P.PROBLEMS.get("fc10_regression")
    cfg = P.parse_problem_config(DEFAULT)
    assert problem.param_dim(cfg) == 101
    assert problem.summary(cfg) == {
        "dim": 101,
        "features": 8,
        "hidden": 10,
        "train_samples": 16512,
        "test_samples": 4128,
        "stochastic": False,
    }
    wide = P.parse_problem_config({**DEFAULT, "features": 20, "hidden": 32})
    assert problem.param_dim(wide) == 20 * 32 + 2 * 32 + 1
    assert build({**DEFAULT, "features": 20, "hidden": 32, "samples": 500}, [0], 2).dim == 705
    size, how = problem.data_bytes(cfg, 10)
    stored = 10 * 1652 * 10 * 8 + 4128 * 9 * 8  # inputs, target, mask, test rows
    draw = 20640 * (4 * 8 + 8) * 8  # every worker draws the whole dataset
    assert stored + draw < size < stored + draw + 10 * (1 << 20)
    assert "1,652 samples" in how
    # hosted nodes of a larger run hold fewer samples: the bound assumes the most
    assert problem.data_bytes(cfg, 2)[0] > stored // 5 + draw
    with pytest.raises(ConfigError, match=r"problem\.test_fraction"):
        P.parse_problem_config({**DEFAULT, "test_fraction": 1.0})
    with pytest.raises(ConfigError, match=r"problem\.noise"):
        P.parse_problem_config({**DEFAULT, "noise": float("nan")})
    with pytest.raises(ConfigError, match=r"problem\.samples: 20 rows .* leave 16 training rows "):
        build({**DEFAULT, "samples": 20}, [0], 17)

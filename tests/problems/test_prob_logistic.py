"""The logistic problem: benchmark data, fused step, regenerate mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from prob_helpers import build, random_params

import fedopt.problems.logistic as logistic
from fedopt import rng

SMALL = {"name": "logistic", "dim": 10, "samples_per_node": 30, "batch_size": 6}


def bench_data(cid: int, M: int = 500, D: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """The benchmark's client data, written out as in shared/bench/README.md."""
    w_true = np.random.default_rng(0).normal(size=D)
    r = np.random.default_rng(1000 + cid)
    X = r.normal(size=(M, D)).astype(np.float32)
    y = (X @ w_true + 0.5 * r.normal(size=M) > 0).astype(np.float32)
    return X, y


def test_bench_generator_reproduces_the_benchmark_data() -> None:
    oracle = build({"name": "logistic"}, [0, 7], 10)
    assert oracle.X is not None and oracle.y is not None
    assert oracle.X.shape == (2, 500, 100) and oracle.X.dtype == torch.float32
    assert oracle.y.shape == (2, 500) and oracle.y.dtype == torch.float32
    for i, cid in enumerate([0, 7]):
        X, y = bench_data(cid)
        assert np.array_equal(oracle.X[i].numpy(), X)
        assert np.array_equal(oracle.y[i].numpy(), y)


def test_bench_data_do_not_depend_on_the_seed_but_seeded_data_do() -> None:
    a = build(SMALL, [1], 2, seed=1)
    b = build(SMALL, [1], 2, seed=2)
    assert torch.equal(a.X, b.X)
    c = build({**SMALL, "generator": "seeded"}, [1], 2, seed=1)
    d = build({**SMALL, "generator": "seeded"}, [1], 2, seed=2)
    assert not torch.equal(c.X, d.X) and not torch.equal(a.X, c.X)
    r = np.random.default_rng(rng.numpy_seed(1, "data", 1))
    assert np.array_equal(c.X[0].numpy(), r.normal(size=(30, 10)).astype(np.float32))


def test_heterogeneity_shifts_only_the_labels() -> None:
    base = build(SMALL, [0, 1], 2)
    het = build({**SMALL, "heterogeneity": 2.0}, [0, 1], 2)
    assert torch.equal(base.X, het.X)
    assert not torch.equal(base.y, het.y)
    zero = build({**SMALL, "heterogeneity": 0.0}, [0, 1], 2)
    assert torch.equal(base.y, zero.y)


def test_minibatch_gradient_matches_autograd() -> None:
    oracle = build({**SMALL, "l2": 0.1, "bias": True}, [0, 1, 2], 3)
    assert oracle.dim == 11
    rows = torch.arange(3)
    X = random_params(oracle, 3)
    idx = oracle.batch_indices(rows, 4)
    g = oracle.grad(X, rows, 4)
    for i in range(3):
        w = X[i].double().requires_grad_(True)
        A = oracle.X[i, idx[i]].double()
        y = oracle.y[i, idx[i]].double()
        assert bool((A[:, -1] == 1).all())
        loss = torch.nn.functional.binary_cross_entropy_with_logits(A @ w, y)
        loss = loss + 0.05 * w[:-1].square().sum()  # the intercept is not penalised
        (ref,) = torch.autograd.grad(loss, w)
        torch.testing.assert_close(g[i].double(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("extra", [{}, {"l2": 0.05}, {"bias": True, "l2": 0.05}])
def test_fused_step_equals_plain_update(extra: dict[str, object]) -> None:
    oracle = build({"name": "logistic", **extra}, list(range(6)), 6)
    big = random_params(oracle, 20)  # X is rows of a larger matrix, updated in place
    rows = torch.tensor([5, 1, 2, 0])
    chunk = big[3:7]
    expected = chunk - 0.1 * oracle.grad(chunk, rows, 12)
    untouched = big.clone()
    oracle.sgd_step_(chunk, rows, 12, 0.1)
    assert float((big[3:7] - expected).abs().max()) < 1e-6
    assert torch.equal(big[:3], untouched[:3]) and torch.equal(big[7:], untouched[7:])
    # buffers grow to the largest chunk and are reused
    cap = oracle._cap
    oracle.sgd_step_(big[:2], rows[:2], 13, 0.1)
    assert oracle._cap == cap == 4


def test_five_local_steps_from_zero_reduce_the_loss() -> None:
    oracle = build({"name": "logistic"}, list(range(8)), 8)
    rows = torch.arange(8)
    X = oracle.init_params(rows)
    assert not X.any()
    before = oracle.value(X, rows)
    assert torch.allclose(before, torch.full((8,), float(np.log(2.0)), dtype=torch.float64))
    for step in range(5):
        oracle.sgd_step_(X, rows, step, 0.1)
    after = oracle.value(X, rows)
    assert bool((after < before).all())
    ev = oracle.evaluate(X.mean(0))
    assert ev["count"] == 8 * 500 and ev["correct"] > 0.7 * ev["count"]


def _trace(oracle: logistic.LogisticOracle, n: int) -> list[torch.Tensor]:
    rows = torch.arange(n)
    X = random_params(oracle, n)
    out = [oracle.grad(X, rows, 3), oracle.full_grad(X, rows), oracle.value(X, rows)]
    perm = torch.tensor([4, 0, 6, 2])
    out.append(oracle.grad(X[perm], perm, 5))
    for step in range(3):
        oracle.sgd_step_(X, rows, step, 0.2)
        Y = X[perm].clone()
        oracle.sgd_step_(Y, perm, step, 0.2)
        out += [X.clone(), Y]
    ev = oracle.evaluate(X[0])
    out.append(torch.tensor([ev["loss"], ev["correct"], ev["count"]], dtype=torch.float64))
    return out


def test_regenerate_mode_gives_the_same_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = {**SMALL, "heterogeneity": 0.5, "l2": 0.01}
    n = 7
    stored = build({**spec, "data": "materialize"}, list(range(n)), n)
    assert not stored.regenerate and stored.X is not None
    ref = _trace(stored, n)
    # blocks of 3 nodes (so blocks of 3, 3 and 1), no cache
    per_node = logistic.data_bytes(stored.config, 1)
    monkeypatch.setattr(logistic, "REGEN_BLOCK_BYTES", 3 * per_node)
    for extra in ({"data": "regenerate"}, {"data": "auto", "memory_budget_gb": 1e-6}):
        regen = build({**spec, **extra}, list(range(n)), n)
        assert regen.regenerate and regen.X is None and regen.y is None
        for a, b in zip(ref, _trace(regen, n), strict=True):
            assert torch.equal(a, b)


def test_regenerate_cache_is_bounded() -> None:
    spec = {**SMALL, "data": "regenerate", "memory_budget_gb": 1e-4}  # cache ~ 52 kB
    oracle = build(spec, list(range(30)), 30)
    rows = torch.arange(30)
    X = random_params(oracle, 30)
    for step in range(2):
        oracle.sgd_step_(X, rows, step, 0.1)
    assert 0 < oracle._cached <= oracle._cache_bytes


def test_auto_materializes_within_budget() -> None:
    oracle = build({**SMALL, "data": "auto"}, [0, 1], 2)
    assert not oracle.regenerate


def test_passes_over_stored_data_do_not_change_the_numbers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    n = 7
    spec = {**SMALL, "l2": 0.01}
    ref = _trace(build(spec, list(range(n)), n), n)
    monkeypatch.setattr(logistic, "MAX_ROWS_PER_PASS", 2)
    for a, b in zip(ref, _trace(build(spec, list(range(n)), n), n), strict=True):
        assert torch.equal(a, b)

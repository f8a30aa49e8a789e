"""Properties every problem must have: gradients, sharding invariance, determinism."""

from __future__ import annotations

import torch
from prob_helpers import SMALL, build, random_params

import fedopt.problems as P
from fedopt.problems.capabilities import Capability


def test_every_problem_is_registered() -> None:
    assert set(SMALL) <= set(P.PROBLEMS)
    for name, problem in P.PROBLEMS.items():
        assert issubclass(problem, P.Problem)
        assert issubclass(problem.Config, P.ProblemConfig)
        assert problem.Config().name == name
        assert isinstance(problem.summary(problem.Config()), dict)


def test_full_grad_matches_autograd_of_value(spec: dict[str, object]) -> None:
    oracle = build(spec, [0, 1, 2], 5)
    rows = torch.arange(3)
    X = random_params(oracle, 3).requires_grad_(True)
    oracle.value(X, rows).sum().backward()
    g = oracle.full_grad(X.detach(), rows)
    assert X.grad is not None
    torch.testing.assert_close(g, X.grad.to(g.dtype), rtol=1e-4, atol=1e-6)


def test_full_batch_is_step_independent(spec: dict[str, object]) -> None:
    exact = {**spec, "noise_std": 0.0} if spec["name"] == "quadratic" else {**spec, "batch_size": 0}
    oracle = build(exact, [0, 1], 4)
    rows = torch.arange(2)
    X = random_params(oracle, 2)
    assert torch.equal(oracle.grad(X, rows, 0), oracle.grad(X, rows, 9))
    assert torch.equal(oracle.grad(X, rows, 9), oracle.full_grad(X, rows))


def test_weights_are_globally_normalised(spec: dict[str, object]) -> None:
    n = 6
    whole = build(spec, list(range(n)), n)
    assert abs(float(whole.weights.sum()) - 1.0) < 1e-12
    assert whole.weights.dtype == torch.float64
    assert whole.num_samples.shape == (n,)
    part = build(spec, [4, 1], n)
    assert torch.equal(part.weights, whole.weights[[4, 1]])
    assert torch.equal(part.num_samples, whole.num_samples[[4, 1]])
    assert torch.equal(part.data_ranks, torch.tensor([4, 1]))


def _outputs(oracle: P.Oracle, rows: torch.Tensor, X: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {
        "init": oracle.init_params(rows),
        "grad": oracle.grad(X, rows, 7),
        "grad0": oracle.grad(X, rows, 0),
        "full": oracle.full_grad(X, rows),
        "value": oracle.value(X, rows),
    }
    if hasattr(oracle, "batch_indices") and getattr(oracle, "batch_size", 1):
        out["batch"] = oracle.batch_indices(rows, 7)
    Y = X.clone()
    oracle.sgd_step_(Y, rows, 7, 0.05)
    out["sgd"] = Y
    return out


def test_sharding_invariance_is_bitwise(spec: dict[str, object]) -> None:
    """Ranks [2, 3] alone, within [0..5] (rows 2, 3, all rows), and one at a time agree."""
    n = 6
    small = build(spec, [2, 3], n)
    whole = build(spec, list(range(n)), n)
    X = random_params(whole, n)
    ref = _outputs(small, torch.arange(2), X[2:4].clone())
    views = [
        _outputs(whole, torch.tensor([2, 3]), X[2:4].clone()),
        {k: v[2:4] for k, v in _outputs(whole, torch.arange(n), X.clone()).items()},
    ]
    singles = [_outputs(small, torch.tensor([i]), X[2 + i : 3 + i].clone()) for i in range(2)]
    views.append({k: torch.cat([s[k] for s in singles]) for k in ref})
    for other in views:
        assert ref.keys() == other.keys()
        for key in ref:
            assert torch.equal(ref[key], other[key]), key


def test_row_order_does_not_matter(spec: dict[str, object]) -> None:
    whole = build(spec, list(range(5)), 5)
    X = random_params(whole, 5)
    perm = torch.tensor([3, 0, 4, 1, 2])
    a = whole.grad(X, torch.arange(5), 2)
    b = whole.grad(X[perm], perm, 2)
    assert torch.equal(a[perm], b)


def test_determinism_and_seed_dependence(spec: dict[str, object]) -> None:
    a = build(spec, [0, 1, 2], 3, seed=11)
    b = build(spec, [0, 1, 2], 3, seed=11)
    rows = torch.arange(3)
    X = random_params(a, 3)
    for x, y in zip(_outputs(a, rows, X).values(), _outputs(b, rows, X).values(), strict=True):
        assert torch.equal(x, y)
    c = build(spec, [0, 1, 2], 3, seed=12)
    assert not torch.equal(a.grad(X, rows, 1), c.grad(X, rows, 1))
    assert not torch.equal(a.grad(X, rows, 1), a.grad(X, rows, 2))


def test_sgd_step_matches_plain_update(spec: dict[str, object]) -> None:
    oracle = build(spec, [0, 1, 2, 3], 4)
    rows = torch.arange(4)
    X = random_params(oracle, 4)
    expected = X - 0.1 * oracle.grad(X, rows, 5)
    oracle.sgd_step_(X, rows, 5, 0.1)
    torch.testing.assert_close(X, expected, rtol=1e-5, atol=1e-6)


def test_evaluate_adds_up_across_workers(spec: dict[str, object]) -> None:
    n = 5
    whole = build(spec, list(range(n)), n)
    parts = [build(spec, [0, 3], n), build(spec, [1, 2, 4], n)]
    x = random_params(whole, 1)[0]
    total = whole.evaluate(x)
    summed: dict[str, float] = {}
    for p in parts:
        for key, val in p.evaluate(x).items():
            summed[key] = summed.get(key, 0.0) + val
    assert total.keys() == summed.keys()
    for key in total:
        assert abs(total[key] - summed[key]) <= 1e-9 * max(1.0, abs(total[key]))
    rows = torch.arange(n)
    vals = whole.value(x.expand(n, -1), rows)
    assert abs(total["loss"] - float((vals * whole.weights).sum())) < 1e-12
    assert ("correct" in total) == whole.provides(Capability.LABELS)

"""The digits problems: data, split, training, nodes without samples."""

from __future__ import annotations

import numpy as np
import torch
from prob_helpers import build, random_params

import fedopt.problems.digits as digits


def test_data_split_and_layout() -> None:
    X, y = digits.load()
    assert X.shape == (1797, 64) and X.dtype == np.float32
    assert float(X.min()) == 0.0 and float(X.max()) == 1.0
    train, test = digits.split(y, 0.2, 5)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 1797
    assert abs(len(test) - 0.2 * 1797) < 10
    for c in range(10):  # stratified
        assert abs(np.mean(y[test] == c) - np.mean(y == c)) < 0.01
    again = digits.split(y, 0.2, 5)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)
    assert not np.array_equal(digits.split(y, 0.2, 6)[1], test)
    soft = build({"name": "digits_softmax"}, [0], 1)
    mlp = build({"name": "digits_mlp", "hidden": 32}, [0], 1)
    assert soft.dim == 650 and mlp.dim == 64 * 32 + 32 + 32 * 10 + 10


def test_nodes_hold_the_training_set_exactly_once() -> None:
    n = 7
    oracle = build({"name": "digits_mlp", "partition": {"kind": "shards"}}, list(range(n)), n)
    counts = oracle.counts
    assert int(counts.sum()) == oracle.info["train_samples"]
    torch.testing.assert_close(oracle.weights, counts.double() / counts.sum())
    rows = [oracle.X[i, : int(counts[i])] for i in range(n)]
    assert not oracle.X[0, int(counts[0]) :].any()  # zero padding
    pixels = torch.cat(rows)
    assert len(pixels) == oracle.info["train_samples"]


def test_minibatch_gradient_matches_autograd_reference() -> None:
    oracle = build({"name": "digits_mlp", "hidden": 5, "batch_size": 8, "l2": 0.01}, [0, 1], 2)
    rows = torch.arange(2)
    X = random_params(oracle, 2)
    idx = oracle.batch_indices(rows, 3)
    assert bool((idx < oracle.counts.unsqueeze(1)).all())
    g = oracle.grad(X, rows, 3)
    for i in range(2):
        x = X[i].double().requires_grad_(True)
        W1 = x[: 64 * 5].view(64, 5)
        b1 = x[320:325]
        W2 = x[325:375].view(5, 10)
        b2 = x[375:]
        a = oracle.X[i, idx[i]].double()
        logits = torch.relu(a @ W1 + b1) @ W2 + b2
        loss = torch.nn.functional.cross_entropy(logits, oracle.labels[i, idx[i]])
        loss = loss + 0.005 * x.square().sum()
        (ref,) = torch.autograd.grad(loss, x)
        torch.testing.assert_close(g[i].double(), ref, rtol=1e-4, atol=1e-6)


def test_softmax_full_gradient_descent_reaches_90_percent() -> None:
    oracle = build({"name": "digits_softmax", "batch_size": 0}, [0], 1, seed=0)
    rows = torch.arange(1)
    X = oracle.init_params(rows)
    start = oracle.evaluate_test(X[0])
    for step in range(200):
        oracle.sgd_step_(X, rows, step, 1.0)
    end = oracle.evaluate_test(X[0])
    assert end["test_accuracy"] > 0.9
    assert end["test_loss"] < start["test_loss"]
    train = oracle.evaluate(X[0])
    assert train["correct"] / train["count"] > 0.9


def test_nodes_without_samples() -> None:
    spec = {
        "name": "digits_softmax",
        "partition": {"kind": "dirichlet", "alpha": 0.01, "min_samples": 0},
    }
    n = 40
    oracle = build(spec, list(range(n)), n)
    empty = oracle.info["empty_nodes"]
    assert isinstance(empty, list) and len(empty) > 0
    assert oracle.info["min_node_samples"] == 0
    e = torch.tensor(empty)
    assert bool((oracle.weights[e] == 0).all()) and bool((oracle.counts[e] == 0).all())
    assert abs(float(oracle.weights.sum()) - 1.0) < 1e-12
    rows = torch.arange(n)
    X = random_params(oracle, n)
    for g in (oracle.grad(X, rows, 1), oracle.full_grad(X, rows)):
        assert not g[e].any()
        assert g[~torch.isin(rows, e)].abs().sum(1).gt(0).all()
    assert not oracle.value(X, rows)[e].any()
    assert torch.isfinite(torch.tensor(list(oracle.evaluate(X[0]).values()))).all()
    # a worker hosting only empty nodes still works and reports the same facts
    alone = build(spec, empty[:2], n)
    assert alone.info == oracle.info
    assert not alone.grad(X[e[:2]], torch.arange(2), 1).any()


def test_same_init_default_and_per_node_init() -> None:
    oracle = build({"name": "digits_mlp"}, [0, 1, 2], 3)
    X = oracle.init_params(torch.arange(3))
    assert torch.equal(X[0], X[1]) and torch.equal(X[1], X[2])
    bound = 1 / 8  # fan-in 64
    assert float(X[0, : 64 * 32].abs().max()) <= bound
    assert float(X[0, : 64 * 32].abs().max()) > 0.9 * bound
    other = build({"name": "digits_mlp", "same_init": False}, [0, 1, 2], 3)
    Y = other.init_params(torch.arange(3))
    assert torch.equal(Y[0], X[0]) and not torch.equal(Y[1], Y[0])

"""Capability ``model`` of the digits problems: running BatchNorm statistics as per-node
buffer rows (train mode updates them as torch does, eval mode reads them), the BN reset
against torch's ``momentum=None``, per-node evaluation and activations."""

from __future__ import annotations

import copy

import pytest
import torch
from prob_helpers import build, random_params
from torch import nn

from fedopt.problems.capabilities import Capability, implemented

N = 40
SPEC = {
    "name": "digits_model",
    "model": {"name": "digits_cnn_bn", "channels": [3, 4]},
    "batch_size": 8,
    "partition": {"kind": "dirichlet", "alpha": 0.01, "min_samples": 0},  # empty nodes
    "batchnorm": "running",
}


def torch_node(oracle, X: torch.Tensor, B: torch.Tensor, i: int) -> nn.Module:
    """Node ``i``'s model as an ordinary ``torch.nn.Module`` (float32)."""
    m = copy.deepcopy(oracle.model.module)
    m.load_state_dict(oracle.layout.state_dict(X, B, i))
    return m


def flat_buffers(oracle, m: nn.Module) -> torch.Tensor:
    return oracle.layout.flatten_buffers({n: b[None] for n, b in m.named_buffers()})[0]


@pytest.fixture(scope="module")
def oracle():
    probe = build(SPEC, list(range(N)), N)
    empty = probe.info["empty_nodes"]
    full = [r for r in range(N) if int(probe.counts[r]) > 8]  # several batches of 8
    o = build(SPEC, [full[0], empty[0], full[1], full[2]], N)  # row 1 has no samples
    assert o.counts[1] == 0 and bool((o.counts[[0, 2, 3]] > 8).all())
    return o


def test_the_digits_problems_implement_capability_model(oracle) -> None:
    assert oracle.provides(Capability.MODEL) and Capability.MODEL in implemented(oracle)
    assert oracle.running and oracle.buf_dim == oracle.model.buf_dim == 14
    rows = torch.tensor([2, 0])
    names = [e.name for e in oracle.layout.buffers]
    assert names == ["bn1.running_mean", "bn1.running_var", "bn2.running_mean", "bn2.running_var"]
    B = oracle.get_buffers(rows)
    assert B.shape == (2, 14) and torch.equal(B, oracle.layout.init_buffers(2))
    named = oracle.buffers(rows)
    assert list(named) == names and named["bn2.running_var"].shape == (2, 4)
    with pytest.raises(ValueError, match=r"set_buffers: expected \[2, 14\]"):
        oracle.set_buffers(rows, torch.zeros(2, 13))
    # no running statistics: empty rows everywhere
    for spec in (
        {"name": "digits_mlp", "hidden": 5},
        {"name": "digits_softmax"},
        {**SPEC, "batchnorm": "batch_stats"},
    ):
        o = build(spec, [0, 1], 2)
        r = torch.arange(2)
        assert o.provides(Capability.MODEL) and o.buf_dim == 0 and o.buffers(r) == {}
        assert o.get_buffers(r).shape == (2, 0)
        o.set_buffers(r, torch.zeros(2, 0))
        assert o.reset_buffers(o.init_params(r), r)[0].shape == (2, 0)


def test_training_calls_update_the_statistics_as_torch_does(oracle) -> None:
    rows = torch.arange(4)
    X = random_params(oracle, 4, scale=0.5)
    start = oracle.layout.init_buffers(4)
    start[:, 3:6] = 2.0  # bn1.running_var: not the initial values
    oracle.set_buffers(rows, start)
    G = oracle.grad(X, rows, 5)
    after = oracle.get_buffers(rows)
    idx = oracle.batch_indices(rows, 5)
    for i in (0, 2, 3):  # torch in train mode on the same minibatch (momentum 0.1)
        m = torch_node(oracle, X, start, i).train()
        m(oracle.X[i, idx[i]])
        torch.testing.assert_close(after[i], flat_buffers(oracle, m), rtol=0, atol=1e-6)
    assert torch.equal(after[1], start[1])  # no samples: the row is kept
    # gradients do not read the running statistics: batch_stats' gradients bit for bit
    plain = build({**SPEC, "batchnorm": "batch_stats"}, oracle.data_ranks.tolist(), N)
    assert torch.equal(G, plain.grad(X, rows, 5))
    # sgd_step_ is a training call too; full_grad, flipped_grad, value do not move them
    Y = X.clone()
    oracle.sgd_step_(Y, rows, 6, 0.1)
    moved = oracle.get_buffers(rows)
    assert not torch.equal(moved[0], after[0])
    oracle.full_grad(X, rows)
    oracle.flipped_grad(X, rows, 7)
    oracle.value(X, rows)
    assert torch.equal(oracle.get_buffers(rows), moved)


def test_evaluation_runs_in_eval_mode_on_the_running_statistics(oracle) -> None:
    rows = torch.tensor([0, 2])
    X = random_params(oracle, 2, seed=3, scale=0.5)
    B = oracle.layout.init_buffers(2)
    B[:, :3] = 0.3  # bn1.running_mean
    B[:, 7:] = torch.linspace(0.5, 2.0, 7)
    oracle.set_buffers(rows, B)
    value = oracle.value(X, rows)
    for j, r in enumerate(rows.tolist()):
        m = torch_node(oracle, X, B, j).eval()
        n = int(oracle.counts[r])
        with torch.no_grad():
            nll = nn.functional.cross_entropy(m(oracle.X[r, :n]).double(), oracle.labels[r, :n])
        torch.testing.assert_close(value[j], nll, rtol=1e-6, atol=0)
    # explicit buffers equal stored ones; other statistics give other values
    assert torch.equal(oracle.value(X, rows, buffers=B), value)
    other = oracle.value(X, rows, buffers=oracle.layout.init_buffers(1)[0])
    assert bool(((other - value).abs() > 1e-3).all())
    test = oracle.evaluate_test(X[0], buffers=B[0])
    m = torch_node(oracle, X, B, 0).eval()
    with torch.no_grad():
        acc = (m(oracle.X_test).argmax(1) == oracle.y_test).double().mean()
    assert test["test_accuracy"] == float(acc)
    assert oracle.evaluate_test(X[0], buffers=2 * B[0]) != test
    with pytest.raises(ValueError, match=r"evaluate_test: .* pass the model's buffer row"):
        oracle.evaluate_test(X[0])


def test_bn_reset_equals_torch_cumulative_average_on_the_node_s_samples(oracle) -> None:
    rows = torch.tensor([3, 1, 0])
    X = random_params(oracle, 3, seed=5, scale=0.5)
    B, passes = oracle.reset_buffers(X, rows)
    counts = oracle.counts[rows]
    assert torch.equal(passes, (counts + 7) // 8) and passes[1] == 0
    assert torch.equal(oracle.get_buffers(rows), B)  # kept
    for j, r in enumerate(rows.tolist()):
        n = int(counts[j])
        if n == 0:  # no samples: the initial statistics
            assert torch.equal(B[j], oracle.layout.init_buffers(1)[0])
            continue
        m = torch_node(oracle, X, B, j)
        for sub in m.modules():  # torch's cumulative average: momentum=None
            if isinstance(sub, nn.BatchNorm2d):
                sub.momentum = None
                sub.reset_running_stats()
        m.train()
        with torch.no_grad():
            for a in range(0, n, 8):
                m(oracle.X[r, a : min(a + 8, n)])
        torch.testing.assert_close(B[j], flat_buffers(oracle, m), rtol=0, atol=1e-6)
    # the cumulative average is not one batch's statistics
    one = torch_node(oracle, X, B, 0).train()
    for sub in one.modules():
        if isinstance(sub, nn.BatchNorm2d):
            sub.momentum = 1.0
    with torch.no_grad():
        one(oracle.X[3, :8])
    assert not torch.allclose(B[0], flat_buffers(oracle, one), atol=1e-4)


def test_evaluate_nodes_gives_every_row_s_own_figures(oracle) -> None:
    rows = torch.tensor([2, 0, 1])
    X = random_params(oracle, 3, seed=7, scale=0.5)
    B = oracle.layout.init_buffers(3)
    B[:, 7:11] = 0.2
    figs = oracle.evaluate_nodes(X, rows, buffers=B)
    assert set(figs) == {
        "loss",
        "correct",
        "count",
        "test_loss",
        "test_accuracy",
        "own_classes_test_accuracy",
    }
    assert torch.equal(figs["loss"], oracle.value(X, rows, buffers=B))
    assert torch.equal(figs["count"], oracle.counts[rows].double())
    assert figs["correct"][2] == 0 and figs["loss"][2] == 0  # the empty node
    for j in range(3):
        test = oracle.evaluate_test(X[j], buffers=B[j])
        assert float(figs["test_accuracy"][j]) == test["test_accuracy"]
        assert float(figs["test_loss"][j]) == pytest.approx(test["test_loss"], rel=1e-12)
    # batch statistics: the test set normalised with its own statistics, per row
    plain = build({**SPEC, "batchnorm": "batch_stats"}, oracle.data_ranks.tolist(), N)
    p = plain.evaluate_nodes(X, rows)
    assert float(p["test_accuracy"][1]) == plain.evaluate_test(X[1])["test_accuracy"]


def test_activations_at_the_layout_s_capture_points(oracle) -> None:
    rows = torch.tensor([0, 3])
    X = random_params(oracle, 2, seed=2, scale=0.5)
    B = oracle.get_buffers(rows)
    fewest = int(oracle.counts[rows].min())
    acts = oracle.activations(X, rows)
    assert list(acts) == ["conv1", "conv2"]
    assert acts["conv1"].shape == (2, fewest * 16, 3)  # pool1: 4 x 4 positions
    assert acts["conv2"].shape == (2, fewest * 4, 4)  # pool2: 2 x 2 positions
    want = oracle.model.capture(X, oracle.X[rows, :fewest], B, ["conv2"], train=False)
    assert torch.equal(oracle.activations(X, rows, ["conv2"])["conv2"], want["conv2"])
    test = oracle.activations(X, rows, ["conv1"], data="test", samples=5)
    m = torch_node(oracle, X, B, 1).eval()
    feats: dict[str, torch.Tensor] = {}
    m.pool1.register_forward_hook(lambda mod, i, o: feats.setdefault("p", o))
    with torch.no_grad():
        m(oracle.X_test[:5])
    ref = feats["p"].movedim(1, -1).reshape(-1, 3)
    torch.testing.assert_close(test["conv1"][1], ref, rtol=0, atol=1e-6)
    given = oracle.activations(X, rows, data=oracle.X_test[:4].expand(2, -1, -1))
    assert given["conv2"].shape == (2, 16, 4)
    with pytest.raises(ValueError, match="samples between 1 and"):
        oracle.activations(X, rows, samples=fewest + 1)
    with pytest.raises(ValueError, match="rows without samples"):
        oracle.activations(X, torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="use 'train', 'test'"):
        oracle.activations(X, rows, data="val")

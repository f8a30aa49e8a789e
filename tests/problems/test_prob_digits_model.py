"""The digits problems on fedopt.models: unchanged bits, and any registered model."""

from __future__ import annotations

import digits_reference as ref
import pytest
import torch
from prob_helpers import build, random_params

import fedopt.problems as P
from fedopt.errors import ConfigError
from fedopt.models import digits_cnn_bn

N = 6
RANKS = [1, 4, 0]  # hosted out of N, not in order


@pytest.mark.parametrize(
    ("spec", "hidden"),
    [
        ({"name": "digits_softmax", "batch_size": 16, "l2": 0.01}, None),
        ({"name": "digits_mlp", "hidden": 7, "batch_size": 0}, 7),
        ({"name": "digits_mlp", "partition": {"kind": "dirichlet", "alpha": 0.3}}, 32),
    ],
)
def test_digits_oracle_equals_the_old_hand_written_code_bitwise(
    spec: dict[str, object], hidden: int | None
) -> None:
    oracle = build({**spec, "same_init": False}, RANKS, N)
    layout = ref.Layout(ref.layer_sizes(hidden))
    assert oracle.dim == layout.dim
    rows = torch.arange(len(RANKS))
    assert torch.equal(oracle.init_params(rows), ref.init_params(layout, 3, torch.tensor(RANKS)))
    X = random_params(oracle, len(RANKS))
    l2 = float(spec.get("l2", 0.0))
    full_w = oracle.mask / oracle.counts.clamp(min=1).unsqueeze(1).float()
    full = ref.grad_batch(layout, X, oracle.X, oracle.labels, full_w)
    if l2:  # the old oracle's ridge term, as it added it
        full.add_(X, alpha=l2)
    assert torch.equal(oracle.full_grad(X, rows), full)
    B = int(spec.get("batch_size", 32))
    for flip in (False, True):
        got = (oracle.flipped_grad if flip else oracle.grad)(X, rows, 5)
        if B == 0:
            want = torch.cat(
                [
                    ref.grad_batch(
                        layout,
                        X[i : i + 1],
                        oracle.X[i : i + 1],
                        (9 - oracle.labels[i : i + 1]) if flip else oracle.labels[i : i + 1],
                        full_w[i : i + 1],
                    )
                    for i in rows.tolist()
                ]
            )
        else:
            idx = oracle.batch_indices(rows, 5)
            xb = torch.stack([oracle.X[i, idx[i]] for i in rows.tolist()])
            yb = torch.stack([oracle.labels[i, idx[i]] for i in rows.tolist()])
            want = ref.grad_batch(layout, X, xb, 9 - yb if flip else yb, torch.full((3, B), 1 / B))
        assert torch.equal(got, want.add_(X, alpha=l2) if l2 else want), flip
    logits, _ = ref.forward(layout, X, oracle.X)
    nll = -torch.log_softmax(logits.double(), 2).gather(2, oracle.labels.unsqueeze(2))[..., 0]
    value = (nll * oracle.mask.double()).sum(1) / oracle.counts.double()
    if l2:
        value.add_(X.double().square().sum(1).mul_(l2 / 2))
    assert torch.equal(oracle.value(X, rows), value)
    test_logits, _ = ref.forward(layout, X[:1], oracle.X_test.unsqueeze(0))
    acc = (test_logits[0].argmax(1) == oracle.y_test).double().mean()
    assert oracle.evaluate_test(X[0])["test_accuracy"] == float(acc)


def test_digits_model_with_the_mlp_is_the_digits_mlp_problem() -> None:
    a = build({"name": "digits_mlp", "hidden": 9}, RANKS, N)
    b = build({"name": "digits_model", "model": {"name": "digits_mlp", "hidden": 9}}, RANKS, N)
    assert b.model.kernel is not None and a.dim == b.dim
    rows = torch.arange(3)
    X = random_params(a, 3)
    assert torch.equal(a.init_params(rows), b.init_params(rows))
    assert torch.equal(a.grad(X, rows, 2), b.grad(X, rows, 2))
    assert torch.equal(a.value(X, rows), b.value(X, rows))


def test_cnn_batch_statistics_see_each_node_s_own_samples_only() -> None:
    spec = {
        "name": "digits_model",
        "model": {"name": "digits_cnn_bn", "channels": [3, 4]},
        "partition": {"kind": "dirichlet", "alpha": 0.3},
        "batch_size": 0,
    }
    oracle = build(spec, RANKS, N)
    counts = oracle.counts.tolist()
    assert len(set(counts)) == 3 and oracle.max_m > min(counts)  # padding matters
    assert oracle.model.has_bn and oracle.model.strategy == "loop"
    rows = torch.arange(3)
    X = random_params(oracle, 3, scale=0.5)
    model = digits_cnn_bn((3, 4), strategy="loop")
    value, grad = oracle.value(X, rows), oracle.full_grad(X, rows)
    for i, m in enumerate(counts):  # node i alone, on its m real samples, in train mode
        x, y = oracle.X[i : i + 1, :m], oracle.labels[i : i + 1, :m]
        loss, g = model.value_and_grad(X[i : i + 1], x, y, model.init_buffers(1), train=True)
        torch.testing.assert_close(value[i], loss[0].double(), rtol=1e-6, atol=0)
        assert torch.equal(grad[i], g[0])
    j = counts.index(min(counts))  # with its padding the batch statistics would differ
    padded = oracle.X[j : j + 1], oracle.labels[j : j + 1]
    w = oracle.mask[j : j + 1] / counts[j]  # the padding weighs 0: only the statistics differ
    loss_pad = model.loss(X[j : j + 1], *padded, model.init_buffers(1), weights=w, train=True)
    assert abs(float(loss_pad[0]) - float(value[j])) > 1e-3
    # label flipping works on any model (9 - y)
    flipped = oracle.flipped_grad(X, rows, 0)
    x, y = oracle.X[1:2, : counts[1]], oracle.labels[1:2, : counts[1]]
    g = model.grad(X[1:2], x, 9 - y, model.init_buffers(1), train=True)
    assert torch.equal(flipped[1], g[0])
    # the test metrics normalise with the whole test set's statistics
    acc = oracle.evaluate_test(X[0])["test_accuracy"]
    out = model.forward(X[:1], oracle.X_test.unsqueeze(0), model.init_buffers(1), train=True)
    assert acc == float((out[0].argmax(1) == oracle.y_test).double().mean())


def test_value_is_differentiable_through_the_model() -> None:
    oracle = build({"name": "digits_model", "model": {"channels": [2, 3]}}, [0, 1], 2)
    X = random_params(oracle, 2).requires_grad_(True)
    oracle.value(X, torch.arange(2)).sum().backward()
    assert X.grad is not None and X.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ({"model": {"name": "digits_cnn"}}, "problem.model.name"),
        ({"model": {"name": "digits_cnn_bn", "width": 3}}, "problem.model: model 'digits_cnn_bn'"),
        ({"model": {"name": "digits_cnn_bn", "channels": [0, 4]}}, "problem.model.channels"),
        ({"model": {"name": "synthetic_mlp"}}, "cannot run on digits inputs [batch, 64]"),
        ({"model": {"name": "synthetic_mlp", "in_features": 64, "classes": 3}}, "[batch, 10]"),
        ({"batchnorm": "moving"}, "problem.batchnorm: 'moving' is not a BatchNorm mode"),
        (
            {"batchnorm": "running", "model": {"name": "digits_mlp"}},
            "problem.batchnorm: 'running' keeps BatchNorm running statistics, but model "
            "'digits_mlp' has no BatchNorm layer",
        ),
    ],
)
def test_digits_model_config_errors(spec: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError) as err:
        P.parse_problem_config({"name": "digits_model", **spec})
    assert where in str(err.value)


def test_digits_model_accepts_other_models_and_strategies() -> None:
    cfg = P.parse_problem_config(
        {"name": "digits_model", "model": {"name": "synthetic_mlp", "in_features": 64}}
    )
    assert P.PROBLEMS.get("digits_model").summary(cfg)["dim"] == 64 * 64 + 64 + 64 * 64 + 64 + 650
    oracle = build({"name": "digits_model", "model": {"strategy": "vmap"}}, [0], 1)
    assert oracle.model.strategy == "vmap" and oracle.dim == digits_cnn_bn().dim


def test_experiment_level_messages_name_the_field_once() -> None:
    from pathlib import Path

    from fedopt.config import load_experiment

    path = Path(__file__).resolve().parents[2] / "experiments" / "fedavg_digits_cnn.yaml"
    for override, start in [
        ("problem.batchnorm=moving", "problem.batchnorm: 'moving' is not a BatchNorm mode"),
        (
            "problem.model={name: digits_mlp}",
            "problem.batchnorm: 'running' keeps BatchNorm running statistics",
        ),
        ("problem.model.name=foo", "problem.model.name: unknown model 'foo'"),
    ]:
        with pytest.raises(ConfigError) as err:
            load_experiment(path, ["problem.batchnorm=running", override])
        lines = [ln.strip() for ln in str(err.value).splitlines()]
        assert any(ln.startswith(start) for ln in lines), lines
        assert "problem.batchnorm: problem." not in str(err.value)
        assert "problem: problem." not in str(err.value)

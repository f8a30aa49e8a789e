"""BatchedModel: forward, loss, gradient and per-sample gradient against per-node references."""

from __future__ import annotations

import digits_reference as ref
import pytest
import torch
from model_helpers import BUILTINS, build, inputs_for, node_module, random_state
from torch import nn

import fedopt.problems as P
from fedopt.errors import ConfigError
from fedopt.models import BatchedModel, digits_mlp, unit_group


def _reference(model: BatchedModel, X, B, x, y, train: bool):
    """Per node: loss, flat gradient and running statistics after the step, by autograd."""
    losses, grads, bufs = [], [], []
    for i in range(X.shape[0]):
        m = node_module(model, X, B, i).train(train)
        loss = nn.functional.cross_entropy(m(x[i]), y[i])
        loss.backward()
        losses.append(loss.detach())
        grads.append(model.layout.flatten({n: p.grad[None] for n, p in m.named_parameters()}))
        if B is not None:
            bufs.append(model.layout.flatten_buffers({n: b[None] for n, b in m.named_buffers()}))
    return (
        torch.stack(losses),
        torch.cat(grads),
        torch.cat(bufs) if bufs else None,
    )


@pytest.mark.parametrize("name", sorted(BUILTINS))
@pytest.mark.parametrize("train", [False, True])
def test_grad_equals_per_node_autograd_in_float64(name: str, train: bool) -> None:
    model = build(name)
    X, B = random_state(model, 3)
    x, y = inputs_for(model, 3, 7)
    ref_loss, ref_grad, ref_buf = _reference(model, X, B, x, y, train)
    methods = ["autograd", "func"] + (["kernel"] if model.kernel is not None else [])
    assert (model.kernel is not None) == (name == "digits_mlp")
    for method in methods:
        B_run = None if B is None else B.clone()
        loss, G = model.value_and_grad(X, x, y, B_run, train=train, method=method)
        assert G.shape == (3, model.dim) and G.dtype == torch.float64
        torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-12)
        torch.testing.assert_close(G, ref_grad, rtol=0, atol=1e-10)
        if B is not None:  # train mode moves the running statistics like torch does
            torch.testing.assert_close(B_run, ref_buf if train else B, rtol=0, atol=1e-12)
    torch.testing.assert_close(model.loss(X, x, y, B, train=train), ref_loss, rtol=0, atol=1e-12)
    assert not model.fallbacks and not model.slow_ops  # every op of the built-ins batches


def test_grad_matches_central_finite_differences() -> None:
    model = build("synthetic_mlp")
    X, _ = random_state(model, 2)
    x, y = inputs_for(model, 2, 9)
    G = model.grad(X, x, y)
    g = torch.Generator().manual_seed(3)
    h = 1e-6
    for _ in range(3):
        D = torch.randn(X.shape, generator=g, dtype=torch.float64)
        fd = (model.loss(X + h * D, x, y) - model.loss(X - h * D, x, y)) / (2 * h)
        torch.testing.assert_close(fd, (G * D).sum(dim=1), rtol=1e-7, atol=1e-8)


def test_weighted_loss_and_grad() -> None:
    model = build("digits_mlp")
    X, _ = random_state(model, 2)
    x, y = inputs_for(model, 2, 5)
    w = torch.rand(2, 5, dtype=torch.float64)
    per = nn.functional.cross_entropy(
        model.forward(X, x).reshape(-1, 10), y.reshape(-1), reduction="none"
    ).view(2, 5)
    loss, G = model.value_and_grad(X, x, y, weights=w)
    torch.testing.assert_close(loss, (per * w).sum(1), rtol=0, atol=1e-12)
    _, G_func = model.value_and_grad(X, x, y, weights=w, method="func")
    torch.testing.assert_close(G, G_func, rtol=0, atol=1e-12)


def _digits_oracle(batch_size: int, hidden: int = 8):
    config = P.parse_problem_config(
        {"name": "digits_mlp", "hidden": hidden, "batch_size": batch_size}
    )
    return P.PROBLEMS.get("digits_mlp").build(
        config, seed=2, data_ranks=torch.arange(4), num_data_nodes=4, device=torch.device("cpu")
    )


def _oracle_batch(oracle, rows: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = oracle.batch_indices(rows, step)
    xb = torch.stack([oracle.X[int(r), idx[i]] for i, r in enumerate(rows)])
    yb = torch.stack([oracle.labels[int(r), idx[i]] for i, r in enumerate(rows)])
    return xb, yb


def test_equals_the_hand_written_digits_gradient_in_float64() -> None:
    oracle = _digits_oracle(batch_size=16)
    model = digits_mlp(8)
    ref_layout = ref.Layout(ref.layer_sizes(8))
    rows = torch.arange(4)
    X = oracle.init_params(rows).double() + 0.2 * torch.randn(4, oracle.dim, dtype=torch.float64)
    xb, yb = _oracle_batch(oracle, rows, 5)
    # the pre-models hand-written backpropagation in float64: data and params upcast
    w16 = torch.full((4, 16), 1.0 / 16, dtype=torch.float64)
    hand = ref.grad_batch(ref_layout, X, xb.double(), yb, w16)
    assert hand.dtype == torch.float64
    assert torch.equal(model.grad(X, xb, yb), hand)  # the kernel: the same operations
    for method in ("autograd", "func"):
        torch.testing.assert_close(model.grad(X, xb, yb, method=method), hand, rtol=0, atol=1e-12)
    # full batch: the oracle's padded per-node weights are the model's sample weights
    w = oracle.mask.double() / oracle.counts.double().unsqueeze(1)
    full = ref.grad_batch(ref_layout, X, oracle.X.double(), oracle.labels, w)
    for method in ("auto", "autograd"):
        G = model.grad(X, oracle.X, oracle.labels, weights=w, method=method)
        torch.testing.assert_close(G, full, rtol=0, atol=1e-12)
    oracle.dtype = torch.float64  # the oracle's value in float64 (its data upcast)
    oracle.X = oracle.X.double()
    val = oracle.value(X, rows)
    loss = model.loss(X, oracle.X, oracle.labels, weights=w)
    torch.testing.assert_close(loss, val, rtol=0, atol=1e-12)


def test_equals_the_hand_written_digits_gradient_in_float32() -> None:
    oracle = _digits_oracle(batch_size=32, hidden=32)
    rows = torch.arange(4)
    X = oracle.init_params(rows) + 0.05 * torch.randn(4, oracle.dim)
    xb, yb = _oracle_batch(oracle, rows, 1)
    model = digits_mlp(32)
    G = model.grad(X, xb, yb)
    assert G.dtype == torch.float32
    hand = ref.grad_batch(ref.Layout(ref.layer_sizes(32)), X, xb, yb, torch.full((4, 32), 1 / 32))
    assert torch.equal(G, hand)  # bitwise: the kernel is the old hand-written code
    assert torch.equal(G, oracle.grad(X, rows, 1))  # and the oracle's path
    for method in ("autograd", "func"):
        G = model.grad(X, xb, yb, method=method)
        torch.testing.assert_close(G, hand, rtol=1e-5, atol=1e-6)
    loss, _ = model.value_and_grad(X, xb, yb)
    torch.testing.assert_close(loss, model.loss(X, xb, yb, method="autograd"))


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_per_sample_grad_equals_a_loop_over_samples(name: str) -> None:
    model = build(name)
    X, B = random_state(model, 2)
    x, y = inputs_for(model, 2, 3)
    PS = model.per_sample_grad(X, x, y, B)
    assert PS.shape == (2, 3, model.dim)
    for i in range(2):
        m = node_module(model, X, B, i).eval()
        for j in range(3):
            m.zero_grad()
            nn.functional.cross_entropy(m(x[i, j : j + 1]), y[i, j : j + 1]).backward()
            ref = model.layout.flatten({n: p.grad[None] for n, p in m.named_parameters()})
            torch.testing.assert_close(PS[i, j], ref[0], rtol=0, atol=1e-10)
    # in eval mode the batch gradient is the mean of the per-sample ones
    torch.testing.assert_close(model.grad(X, x, y, B), PS.mean(1), rtol=0, atol=1e-12)


def test_per_sample_grad_refuses_batchnorm_in_train_mode() -> None:
    model = build("digits_cnn_bn")
    X, B = random_state(model, 2)
    x, y = inputs_for(model, 2, 3)
    with pytest.raises(ConfigError, match=r"BatchNorm \(bn1, bn2\).*train=False"):
        model.per_sample_grad(X, x, y, B, train=True)


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_loop_strategy_gives_the_vmap_numbers(name: str) -> None:
    vm, lp = build(name), build(name, strategy="loop")
    X, B = random_state(vm, 3)
    x, y = inputs_for(vm, 3, 4)
    for train in (False, True):
        Bv, Bl = (None, None) if B is None else (B.clone(), B.clone())
        torch.testing.assert_close(
            lp.grad(X, x, y, Bl, train=train, method="autograd"),
            vm.grad(X, x, y, Bv, train=train, method="autograd"),
            rtol=0,
            atol=1e-12,
        )
        if B is not None:
            torch.testing.assert_close(Bl, Bv, rtol=0, atol=1e-14)
    torch.testing.assert_close(
        lp.per_sample_grad(X, x, y, B), vm.per_sample_grad(X, x, y, B), rtol=0, atol=1e-12
    )
    a, b = lp.capture(X, x, B), vm.capture(X, x, B)
    for point in a:
        torch.testing.assert_close(a[point], b[point], rtol=0, atol=1e-12)


class _NormalizedByMax(nn.Module):
    """A layer with a data-dependent Python scalar: ``.item()`` has no vmap support."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = float(x.abs().max().item())
        return self.fc2(self.act(self.fc1(x / scale)))


class _WithHistogram(nn.Module):
    """A layer using ``torch.histc``, which vmap runs through its slow per-sample loop."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + 0.0 * torch.histc(x, bins=4).sum()


def test_auto_falls_back_to_a_node_loop_and_records_why() -> None:
    module = _NormalizedByMax()
    group = unit_group(module, "h", produce=["fc1"], consume=["fc2"], point="act")
    auto = BatchedModel(module, [group])
    strict = BatchedModel(module, [group], strategy="vmap")
    X = auto.init_params(0, range(3), torch.float64)
    x = torch.randn(3, 5, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (3, 5))
    with pytest.raises(RuntimeError, match=r"item"):
        strict.grad(X, x, y)
    G = auto.grad(X, x, y)
    assert "item()" in auto.fallbacks["forward(train=False)"]
    for i in range(3):
        m = node_module(auto, X, None, i)
        nn.functional.cross_entropy(m(x[i]), y[i]).backward()
        ref = auto.layout.flatten({n: p.grad[None] for n, p in m.named_parameters()})
        torch.testing.assert_close(G[i], ref[0], rtol=0, atol=1e-12)
    assert auto.capture(X, x)["h"].shape == (3, 5, 4)
    assert auto.per_sample_grad(X, x, y).shape == (3, 5, auto.dim)
    assert "item()" in auto.fallbacks["per_sample_grad"]
    assert "item()" in auto.fallbacks["per_sample_grad(samples)"]  # a loop over samples too
    hist = BatchedModel(_WithHistogram())
    hist.forward(hist.init_params(0, range(2)), torch.randn(2, 4, 3))
    assert hist.slow_ops == {"forward(train=False)": ["aten::histc"]}
    assert not hist.fallbacks


def test_bad_inputs_are_reported() -> None:
    model = build("digits_cnn_bn")
    X, B = random_state(model, 2)
    x, y = inputs_for(model, 2, 3)
    with pytest.raises(ValueError, match=r"BatchNorm running statistics \(bn1, bn2\)"):
        model.forward(X, x)
    with pytest.raises(ValueError, match=r"parameter rows"):
        model.forward(X[:, :5], x, B)
    with pytest.raises(ValueError, match=r"inputs hold 1 nodes"):
        model.forward(X, x[:1], B)
    with pytest.raises(ConfigError, match=r"unknown method"):
        model.grad(X, x, y, B, method="jax")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"no hand-written kernel"):
        model.grad(X, x, y, B, method="kernel")
    with pytest.raises(ConfigError, match=r"unknown strategy"):
        build("digits_mlp", strategy="fast")
    cumulative = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=None))
    with pytest.raises(ConfigError, match=r"'1' has momentum=None.*reset_bn"):
        BatchedModel(cumulative)

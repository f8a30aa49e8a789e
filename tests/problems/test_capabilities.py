"""Declared oracle capabilities: declaration == implementation, per-row steps, counted
noisy queries and per-sample gradients."""

from __future__ import annotations

import pytest
import torch
from prob_helpers import SMALL, build, random_params

import fedopt.problems as P
from fedopt import rng
from fedopt.problems.capabilities import (
    Capability,
    implemented,
    members,
    providers,
)
from fedopt.problems.quadratic import QuadraticOracle

BUILTIN = {
    "quadratic",
    "least_squares",
    "logistic",
    "digits_softmax",
    "digits_mlp",
    "digits_model",
    "fc10_regression",
    "canary",
    "zo_quadratic",
    "ackley",
    "levy",
    "digits_attack",
    "digits_metric",
    "tiny_lm",
}
EXPECTED = {
    "canary": {"per_sample_gradients"},
    "quadratic": {"conjugate_gradients", "noisy_queries"},
    "least_squares": {"conjugate_gradients", "noisy_queries", "per_sample_gradients"},
    "logistic": {"labels", "noisy_queries", "per_sample_gradients"},
    "digits_softmax": {"labels", "batch_values", "model"},
    "digits_mlp": {"labels", "batch_values", "model"},
    "digits_model": {"labels", "batch_values", "model"},
    "image_model": {"labels", "batch_values", "model"},
    "fc10_regression": {"per_sample_gradients"},
    "zo_quadratic": {"noisy_queries"},
    "ackley": {"noisy_queries"},
    "levy": {"noisy_queries"},
    "digits_attack": {"noisy_queries"},
    "digits_metric": {"noisy_queries"},
    "tiny_lm": {"model", "batch_values", "noisy_queries"},
}


# ----------------------------------------------------------------------------- declarations


def test_every_registered_problem_declares_exactly_what_its_class_implements() -> None:
    assert BUILTIN <= set(P.PROBLEMS)
    for name in P.PROBLEMS:
        cls = P.PROBLEMS.get(name).oracle_class
        assert implemented(cls) == cls.capabilities, name


def test_builtin_capabilities() -> None:
    for name, caps in EXPECTED.items():
        assert {c.value for c in P.PROBLEMS.get(name).capabilities()} == caps
    assert providers(Capability.CONJUGATE_GRADIENTS) == ["least_squares", "quadratic"]
    assert providers(Capability.LABELS) == [
        "digits_mlp",
        "digits_model",
        "digits_softmax",
        "image_model",
        "logistic",
    ]
    assert providers(Capability.PER_SAMPLE_GRADIENTS) == [
        "canary",
        "fc10_regression",
        "least_squares",
        "logistic",
    ]
    assert members(Capability.PER_SAMPLE_GRADIENTS) == (
        "clipped_grad_sum",
        "clipped_mean_grad",
        "max_samples",
        "per_sample_grad",
    )
    assert providers(Capability.MODEL) == [
        "digits_mlp",
        "digits_model",
        "digits_softmax",
        "image_model",
        "tiny_lm",
    ]
    assert providers(Capability.BATCH_VALUES) == [
        "digits_mlp",
        "digits_model",
        "digits_softmax",
        "image_model",
        "tiny_lm",
    ]
    assert members(Capability.BATCH_VALUES) == ("backwards", "batch_value", "forwards")
    assert members(Capability.MODEL) == (
        "activations",
        "buf_dim",
        "buffers",
        "evaluate_nodes",
        "get_buffers",
        "layout",
        "reset_buffers",
        "set_buffers",
    )


def test_built_oracles_implement_what_they_declare(spec: dict) -> None:
    oracle = build(spec, [0, 1, 2], 3)
    assert implemented(oracle) == oracle.capabilities
    # labels also means evaluate reports accuracy; without labels it does not
    x = random_params(oracle, 1)[0]
    has_acc = {"correct", "count"} <= set(oracle.evaluate(x))
    assert has_acc == oracle.provides(Capability.LABELS)
    if oracle.provides(Capability.LABELS):
        assert oracle.num_classes >= 2


def test_a_declaration_without_its_methods_is_refused() -> None:
    with pytest.raises(TypeError, match="declares capability 'labels' but does not define"):

        class Liar(QuadraticOracle):
            capabilities = frozenset({Capability.LABELS})

    with pytest.raises(TypeError, match="'labels' is not a Capability"):

        class Stringly(QuadraticOracle):
            capabilities = frozenset({"labels"})  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- per-row steps


def test_rng_per_row_steps_equal_separate_calls() -> None:
    nodes = torch.tensor([0, 5, 7, 2**40])
    steps = torch.tensor([0, 3, -1, 2**50])
    keys = rng.node_keys(11, "batch", nodes, steps)
    one = [rng.node_keys(11, "batch", nodes[j : j + 1], int(steps[j]))[0] for j in range(4)]
    assert torch.equal(keys, torch.stack(one))
    assert torch.equal(
        rng.node_keys(11, "batch", nodes, torch.tensor(3)), rng.node_keys(11, "batch", nodes, 3)
    )
    with pytest.raises(ValueError, match=r"per-row step must be a 0-d or \[4\] tensor"):
        rng.node_keys(11, "batch", nodes, torch.tensor([1, 2]))


def _per_row_calls(oracle: P.Oracle):
    """Every step-taking method, as ``f(X, rows, step) -> tensor``."""
    calls = {"grad": oracle.grad}
    if oracle.provides(Capability.LABELS):
        calls["flipped_grad"] = oracle.flipped_grad
    if oracle.provides(Capability.PER_SAMPLE_GRADIENTS):
        calls["per_sample_grad"] = oracle.per_sample_grad
        calls["clipped_mean_grad"] = lambda X, r, s: oracle.clipped_mean_grad(X, r, s, 0.5)
    if oracle.provides(Capability.NOISY_QUERIES):
        calls["query"] = lambda X, r, s: oracle.query(X, r, s, 0.1)

    def sgd(X, r, s):
        Y = X.clone()
        oracle.sgd_step_(Y, r, s, 0.1)
        return Y

    calls["sgd_step_"] = sgd
    return calls


def test_per_row_steps_equal_separate_calls(spec: dict) -> None:
    oracle = build(spec, [0, 1, 2, 3], 4)
    rows = torch.tensor([3, 0, 2])
    steps = torch.tensor([7, 2, 40], dtype=torch.int64)
    X = random_params(oracle, 3, seed=1)
    for name, f in _per_row_calls(oracle).items():
        together = f(X, rows, steps)
        apart = torch.cat([f(X[j : j + 1], rows[j : j + 1], int(steps[j])) for j in range(3)])
        assert torch.equal(together, apart), name
        # all rows at one step: the tensor form equals the int form
        assert torch.equal(f(X, rows, torch.full((3,), 5)), f(X, rows, 5)), name
    # the steps matter (every SMALL problem is stochastic): row 0 at step 7, not at 2
    g7, g2 = oracle.grad(X, rows, steps), oracle.grad(X, rows, 2)
    assert not torch.equal(g7[0], g2[0])
    assert torch.equal(g7[1], g2[1])


# ----------------------------------------------------------------------------- noisy queries

QUERY_PROBLEMS = ["quadratic", "least_squares", "logistic"]


@pytest.mark.parametrize("name", QUERY_PROBLEMS)
def test_queries_are_counted_exact_plus_keyed_noise(name: str) -> None:
    oracle = build(SMALL[name], [0, 1, 2, 3], 4)
    assert oracle.queries == 0
    rows = torch.tensor([1, 3])
    X = random_params(oracle, 2)
    exact = oracle.value(X, rows)
    assert torch.equal(oracle.query(X, rows, 4, 0.0), exact)
    assert oracle.queries == 2
    noisy = oracle.query(X, rows, 4, 0.5)
    keys = rng.node_keys(3, "query", torch.tensor([1, 3]), 4)
    assert torch.equal(noisy, exact + 0.5 * rng.normal(keys, 1, torch.float64)[:, 0])
    assert not torch.equal(noisy, oracle.query(X, rows, 5, 0.5))
    assert oracle.queries == 6
    # placement: the same data rank hosted alone answers with the same bits
    alone = build(SMALL[name], [3], 4)
    assert torch.equal(alone.query(X[1:], torch.tensor([0]), 4, 0.5), noisy[1:])
    assert alone.queries == 1
    with pytest.raises(ValueError, match="noise_std"):
        oracle.query(X, rows, 0, -1.0)


def test_query_noise_has_the_requested_std() -> None:
    oracle = build(SMALL["quadratic"], [0], 1)
    n = 4000
    X = random_params(oracle, 1).expand(n, -1)
    rows = torch.zeros(n, dtype=torch.int64)
    noise = oracle.query(X, rows, torch.arange(n), 0.3) - oracle.value(X, rows)
    assert oracle.queries == n
    assert abs(float(noise.mean())) < 4 * 0.3 / n**0.5
    assert abs(float(noise.std()) / 0.3 - 1.0) < 0.05


# ----------------------------------------------------------------------------- per-sample grads

PER_SAMPLE = {
    "lsq": {"name": "least_squares", "dim": 5, "samples_per_node": 20, "batch_size": 6},
    "lsq_ridge_full": {
        "name": "least_squares",
        "dim": 4,
        "samples_per_node": 9,
        "l2": 0.3,
        "dtype": "float64",
    },
    "logistic_ridge_bias": {
        "name": "logistic",
        "dim": 6,
        "samples_per_node": 30,
        "batch_size": 7,
        "l2": 0.2,
        "bias": True,
    },
    "logistic_full": {"name": "logistic", "dim": 5, "samples_per_node": 11, "batch_size": 0},
}


def _sample_loss(oracle: P.Oracle, name: str):
    """Per-sample loss ``(w, a, y) -> scalar`` written independently of the oracle."""
    l2 = oracle.config.l2
    if name == "least_squares":
        return lambda w, a, y: 0.5 * (a @ w - y) ** 2 + 0.5 * l2 * w.square().sum()
    cols = oracle.features  # the intercept is not penalised

    def loss(w, a, y):
        z = a @ w
        bce = torch.nn.functional.binary_cross_entropy_with_logits(z, y)
        return bce + 0.5 * l2 * w[:cols].square().sum()

    return loss


def _batch(oracle: P.Oracle, name: str, rows: torch.Tensor, step: int):
    A, y = (oracle.A, oracle.b) if name == "least_squares" else (oracle.X, oracle.y)
    A, y = A.index_select(0, rows).double(), y.index_select(0, rows).double()
    if oracle.batch_size == 0:
        return A, y
    idx = oracle.batch_indices(rows, step)
    take = torch.arange(len(rows)).unsqueeze(1)
    return A[take, idx], y[take, idx]


@pytest.mark.parametrize("key", sorted(PER_SAMPLE))
def test_per_sample_grads_match_torch_func(key: str) -> None:
    spec = PER_SAMPLE[key]
    name = spec["name"]
    oracle = build(spec, [0, 1, 2], 3)
    rows, step = torch.tensor([2, 0]), 9
    X = random_params(oracle, 2, seed=4, scale=0.5)
    got = oracle.per_sample_grad(X, rows, step)
    b = oracle.batch_size or oracle.m
    assert got.shape == (2, b, oracle.dim) and got.dtype == oracle.dtype
    A, y = _batch(oracle, name, rows, step)
    per_sample = torch.func.vmap(torch.func.grad(_sample_loss(oracle, name)), in_dims=(None, 0, 0))
    want = torch.stack([per_sample(X[i].double(), A[i], y[i]) for i in range(2)])
    tol = 1e-12 if oracle.dtype == torch.float64 else 2e-6
    torch.testing.assert_close(got.double(), want, atol=tol, rtol=tol)
    # their mean is the minibatch gradient
    torch.testing.assert_close(got.mean(dim=1), oracle.grad(X, rows, step), atol=tol, rtol=tol)


@pytest.mark.parametrize("key", sorted(PER_SAMPLE))
def test_clipped_mean_equals_clipping_each_sample(key: str) -> None:
    oracle = build(PER_SAMPLE[key], [0, 1, 2], 3)
    rows, step = torch.tensor([1, 2, 0]), 3
    X = random_params(oracle, 3, seed=2, scale=0.5)
    g = oracle.per_sample_grad(X, rows, step).double()
    norms = g.norm(dim=2)
    tol = 1e-12 if oracle.dtype == torch.float64 else 2e-6
    clip = float(norms.median())  # about half of the samples are clipped
    want = (g * (clip / norms.clamp(min=clip)).unsqueeze(2)).mean(dim=1)
    got = oracle.clipped_mean_grad(X, rows, step, clip)
    assert got.shape == (3, oracle.dim) and got.dtype == oracle.dtype
    torch.testing.assert_close(got.double(), want, atol=tol, rtol=tol)
    assert not torch.allclose(got, oracle.grad(X, rows, step), atol=1e-3)
    # a clip above every norm changes nothing
    big = oracle.clipped_mean_grad(X, rows, step, 2 * float(norms.max()))
    torch.testing.assert_close(big, oracle.grad(X, rows, step), atol=tol, rtol=tol)
    with pytest.raises(ValueError, match="clip"):
        oracle.clipped_mean_grad(X, rows, step, 0.0)


# ----------------------------------------------------------------------------- clipped sums

CLIPPED = {
    "lsq_ridge": {
        "name": "least_squares",
        "dim": 4,
        "samples_per_node": 21,
        "batch_size": 3,  # ignored: the sum runs over every sample
        "l2": 0.3,
        "dtype": "float64",
    },
    "logistic_ridge_bias": PER_SAMPLE["logistic_ridge_bias"],
    "fc10_unequal": {  # 1,600 training rows: 534, 533, 533 samples, two chunks each
        "name": "fc10_regression",
        "samples": 2000,
        "batch_size": 5,
    },
}


def _node_data(oracle: P.Oracle, rows: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every sample ``(A_i [n_i, d], y_i [n_i])`` of each row, float64."""
    out = []
    for r in rows.tolist():
        if oracle.config.name == "least_squares":
            A, y = oracle.A[r], oracle.b[r]
        elif oracle.config.name == "logistic":
            A, y = oracle.X[r], oracle.y[r]
        else:
            n = int(oracle.counts[r])
            A, y = oracle.A[r, :n], oracle.y[r, :n]
        out.append((A.double(), y.double()))
    return out


def _fc10_sample_loss(oracle: P.Oracle):
    from fedopt.problems._fc10_net import fc10_module

    module = fc10_module(oracle.config.features, oracle.config.hidden).double()
    layout = oracle.layout

    def loss(w, a, y):
        params = {n: t[0] for n, t in layout.unflatten(w.unsqueeze(0)).items()}
        pred = torch.func.functional_call(module, params, (a.unsqueeze(0),))
        return (pred[0, 0] - y) ** 2

    return loss


def _all_sample_grads(oracle: P.Oracle, X: torch.Tensor, rows: torch.Tensor) -> list[torch.Tensor]:
    """torch.func gradients ``[n_i, dim]`` of every sample of each row (float64)."""
    name = oracle.config.name
    loss = _fc10_sample_loss(oracle) if name == "fc10_regression" else _sample_loss(oracle, name)
    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))
    return [per_sample(X[i].double(), A, y) for i, (A, y) in enumerate(_node_data(oracle, rows))]


def _brute_clipped_sum(G: list[torch.Tensor], radii: torch.Tensor, mask=None) -> torch.Tensor:
    """``sum_s mask_s g_s min(1, c / (||g_s|| + 1e-10))`` row by row, from materialised g_s."""
    out = []
    for i, g in enumerate(G):
        f = (radii[i].double() / (g.norm(dim=1) + 1e-10)).clamp(max=1.0)
        if mask is not None:
            f = f * mask[i, : len(g)].double()
        out.append((g * f.unsqueeze(1)).sum(dim=0))
    return torch.stack(out)


@pytest.mark.parametrize("key", sorted(CLIPPED))
@pytest.mark.parametrize("diff", [False, True], ids=["restart", "difference"])
@pytest.mark.parametrize("small_chunks", [False, True], ids=["chunk", "tiny_chunks"])
def test_clipped_grad_sum_equals_clipping_every_sample(
    key: str, diff: bool, small_chunks: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if small_chunks:  # several sample chunks per node for the linear problems too
        monkeypatch.setattr("fedopt.problems._common.SAMPLE_CHUNK_BYTES", 64)
    oracle = build(CLIPPED[key], [0, 1, 2], 3)
    rows = torch.tensor([2, 0, 1])
    X = random_params(oracle, 3, seed=2, scale=0.5)
    Xp = (X.double() + 0.1 * random_params(oracle, 3, seed=5, scale=1.0).double()).to(X.dtype)
    G = _all_sample_grads(oracle, X, rows)
    if diff:
        G = [g - gp for g, gp in zip(G, _all_sample_grads(oracle, Xp, rows), strict=True)]
    prev = Xp if diff else None
    counts = [len(g) for g in G]
    assert oracle.max_samples == max(counts)
    if key == "fc10_unequal":
        assert counts == [533, 534, 533]
    f64 = oracle.dtype == torch.float64

    def check(got: torch.Tensor, want: torch.Tensor) -> None:
        assert got.shape == (3, oracle.dim) and got.dtype == oracle.dtype
        tol = 1e-12 if f64 else 2e-5
        scale = max(1.0, float(want.abs().max()))
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * scale)

    # no clipping: the plain sum (n_i times the full gradient without X_prev)
    inf = torch.full((3,), float("inf"))
    unclipped = oracle.clipped_grad_sum(X, rows, float("inf"), prev)
    check(unclipped, torch.stack([g.sum(dim=0) for g in G]))
    assert torch.equal(unclipped, oracle.clipped_grad_sum(X, rows, inf, prev))
    if not diff:
        n = torch.tensor(counts, dtype=torch.float64).unsqueeze(1)
        check(unclipped, oracle.full_grad(X, rows).double() * n)
    # a clip at the median norm clips about half of the samples
    norms = torch.cat([g.norm(dim=1) for g in G])
    clip = float(norms.median())
    assert 0.3 < float((norms > clip).double().mean()) < 0.7
    clipped = oracle.clipped_grad_sum(X, rows, clip, prev)
    check(clipped, _brute_clipped_sum(G, torch.full((3,), clip, dtype=torch.float64)))
    assert not torch.allclose(clipped, unclipped, rtol=1e-3)
    # one radius per row: finite, inf, 0
    radii = torch.tensor([clip, float("inf"), 0.0], dtype=torch.float64)
    per_row = oracle.clipped_grad_sum(X, rows, radii, prev)
    check(per_row, _brute_clipped_sum(G, radii))
    assert torch.equal(per_row[1], unclipped[1])
    assert torch.equal(per_row[2], torch.zeros(oracle.dim, dtype=oracle.dtype))
    assert torch.equal(oracle.clipped_grad_sum(X, rows, 0.0, prev), torch.zeros_like(X))
    # a 0/1 mask; entries beyond a node's samples are ignored
    gen = torch.Generator().manual_seed(7)
    mask = (torch.rand(3, oracle.max_samples, generator=gen) < 0.4).to(oracle.dtype)
    for i, c in enumerate(counts):
        mask[i, c:] = 1.0
    masked = oracle.clipped_grad_sum(X, rows, radii, prev, mask)
    check(masked, _brute_clipped_sum(G, radii, mask))
    ones = torch.ones(3, oracle.max_samples, dtype=oracle.dtype)
    assert torch.equal(oracle.clipped_grad_sum(X, rows, radii, prev, ones), per_row)
    # rows are independent: one row alone has the same bits
    alone = oracle.clipped_grad_sum(X[1:2], rows[1:2], clip, None if prev is None else prev[1:2])
    assert torch.equal(alone[0], clipped[1])


@pytest.mark.parametrize("key", sorted(CLIPPED))
def test_clipped_grad_sum_refuses_bad_radii_and_masks(key: str) -> None:
    oracle = build(CLIPPED[key], [0, 1], 2)
    rows = torch.arange(2)
    X = random_params(oracle, 2)
    for bad in (-1.0, float("nan"), torch.tensor([1.0, -0.5]), torch.tensor([1.0, float("nan")])):
        with pytest.raises(ValueError, match=r"clip: .*>= 0"):
            oracle.clipped_grad_sum(X, rows, bad)
    with pytest.raises(ValueError, match=r"clip: expected a float or a \[2\] tensor"):
        oracle.clipped_grad_sum(X, rows, torch.ones(3))
    with pytest.raises(ValueError, match=r"mask: expected shape \[2, "):
        oracle.clipped_grad_sum(X, rows, 1.0, mask=torch.ones(2, oracle.max_samples + 1))


def test_logistic_per_sample_grads_are_the_same_when_regenerated() -> None:
    spec = {**PER_SAMPLE["logistic_ridge_bias"], "data": "materialize"}
    stored = build(spec, [0, 1, 2], 3)
    regen = build({**spec, "data": "regenerate"}, [0, 1, 2], 3)
    rows = torch.tensor([2, 1])
    X = random_params(stored, 2)
    assert torch.equal(stored.per_sample_grad(X, rows, 5), regen.per_sample_grad(X, rows, 5))
    assert torch.equal(
        stored.clipped_mean_grad(X, rows, 5, 0.1), regen.clipped_mean_grad(X, rows, 5, 0.1)
    )


# ----------------------------------------------------------------------------- labels


@pytest.mark.parametrize("batch_size", [0, 8])
def test_logistic_flipped_gradient_flips_binary_labels(batch_size: int) -> None:
    spec = {"name": "logistic", "dim": 6, "samples_per_node": 20, "batch_size": batch_size}
    oracle = build(spec, [0, 1, 2], 3)
    assert oracle.num_classes == 2
    rows = torch.tensor([2, 0])
    X = random_params(oracle, 2)
    flipped = oracle.flipped_grad(X, rows, 4)
    assert not torch.allclose(flipped, oracle.grad(X, rows, 4))
    oracle.y.copy_(1.0 - oracle.y)  # flip the stored labels by hand
    assert torch.equal(oracle.grad(X, rows, 4), flipped)

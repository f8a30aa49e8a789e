"""Black-box problems: closed-form F and F*, clipping inside f, Dirichlet heterogeneity,
keyed query noise, standard test-function values and refused gradients."""

from __future__ import annotations

import math

import pytest
import torch
from prob_helpers import build

from fedopt import rng
from fedopt.problems.blackbox import ZOQuadraticOracle, dirichlet_rows, to_box
from fedopt.problems.capabilities import Capability

N = 5
NAMES = ["zo_quadratic", "ackley", "levy"]


def _quad(dim: int = 12, C: float = 5.0, ranks: list[int] | None = None, n: int = N):
    spec = {"name": "zo_quadratic", "dim": dim, "heterogeneity": C}
    return build(spec, list(range(n)) if ranks is None else ranks, n)


def _global_f(oracle, x: torch.Tensor) -> float:
    rows = torch.arange(len(oracle.data_ranks))
    vals = oracle.value(x.reshape(1, -1).expand(len(rows), -1), rows)
    return float((vals * oracle.weights).sum())


@pytest.mark.parametrize("C", [0.0, 0.5, 5.0, 50.0])
def test_quadratic_global_objective_and_optimum_in_closed_form(C: float) -> None:
    d = 12
    oracle = _quad(d, C)
    gen = torch.Generator().manual_seed(1)
    for x in torch.rand(4, d, generator=gen, dtype=torch.float64):
        u = 20 * x - 10
        want = float(((u * u + u).sum() + 1) / (10 * d))  # the same F for every C
        assert _global_f(oracle, x) == pytest.approx(want, rel=1e-12, abs=1e-14)
        gap = oracle.evaluate_test(x)["loss_gap"]
        assert gap == pytest.approx(want - ZOQuadraticOracle.optimum_value(d), rel=1e-12)
    x_star = torch.full((d,), 0.475, dtype=torch.float64)
    f_star = -0.025 + 1 / (10 * d)
    assert ZOQuadraticOracle.optimum_value(d) == f_star
    assert _global_f(oracle, x_star) == pytest.approx(f_star, abs=1e-14)
    assert oracle.evaluate_test(x_star) == {"loss_gap": 0.0}
    # the optimum statistics solve to x* = 0.475 (local curvatures may be negative)
    torch.testing.assert_close(oracle.optimum_stats().solve(), x_star, rtol=0, atol=1e-12)
    if C > N:
        assert float(oracle.alpha.min()) < 0  # some local functions are non-convex


def test_quadratic_spec_sanity_figures_at_d300() -> None:
    oracle = _quad(300, 5.0)
    x0 = oracle.init_params(torch.arange(1))[0]
    assert 0 <= float(x0.min()) and float(x0.max()) < 1
    assert _global_f(oracle, x0) == pytest.approx(3.33, abs=0.2)  # spec: F(x_0) ~ 3.33
    assert ZOQuadraticOracle.optimum_value(300) == pytest.approx(-0.02467, abs=1e-5)


def test_dirichlet_columns_sum_to_one_and_rows_do_not_depend_on_placement() -> None:
    ranks = torch.arange(7)
    A = dirichlet_rows(11, "p", ranks, 7, 50)
    assert float(A.min()) >= 0
    torch.testing.assert_close(A.sum(0), torch.ones(50, dtype=torch.float64), rtol=0, atol=1e-14)
    assert torch.equal(dirichlet_rows(11, "p", torch.tensor([5, 2]), 7, 50), A[[5, 2]])
    assert not torch.equal(dirichlet_rows(11, "q", ranks, 7, 50), A)
    # E[a_ij] = 1/N and Var = (1/N)(1 - 1/N)/(1 + 1) for Dirichlet(1/N * 1)
    big = dirichlet_rows(0, "p", torch.arange(4), 4, 20000)
    assert float(big.mean()) == pytest.approx(0.25, abs=1e-12)
    assert float(big.var()) == pytest.approx(0.25 * 0.75 / 2, rel=0.05)
    # a small shape 1/N does not underflow: N = 400 clients, every column still sums to 1
    many = dirichlet_rows(0, "p", torch.arange(400), 400, 30)
    assert torch.isfinite(many).all()
    torch.testing.assert_close(many.sum(0), torch.ones(30, dtype=torch.float64))


@pytest.mark.parametrize("name", NAMES)
def test_clipping_happens_inside_the_function(name: str) -> None:
    oracle = build({"name": name, "dim": 6, "heterogeneity": 2.0}, [0, 1, 2], 3)
    rows = torch.arange(3)
    gen = torch.Generator().manual_seed(3)
    X = 3 * torch.rand(3, 6, generator=gen, dtype=torch.float64) - 1  # in [-1, 2]^6
    assert bool(((X < 0) | (X > 1)).any())
    assert torch.equal(oracle.value(X, rows), oracle.value(X.clamp(0, 1), rows))
    # flat outside the box: moving a coordinate further out changes nothing
    Y = X.clone()
    Y[:, 0] = 5.0
    Z = X.clone()
    Z[:, 0] = 1.0
    assert torch.equal(oracle.value(Y, rows), oracle.value(Z, rows))
    assert torch.equal(
        to_box(torch.tensor([[-3.0, 0.0, 0.5, 1.0, 7.0]])),
        torch.tensor([[-10.0, -10.0, 0.0, 10.0, 10.0]], dtype=torch.float64),
    )


@pytest.mark.parametrize("name", NAMES)
def test_black_boxes_have_queries_only(name: str) -> None:
    oracle = build({"name": name, "dim": 4}, [0, 1], 2)
    assert oracle.capabilities == {Capability.NOISY_QUERIES}
    assert not oracle.has_gradients
    X = oracle.init_params(torch.arange(2))
    for call in (
        lambda: oracle.grad(X, torch.arange(2), 0),
        lambda: oracle.full_grad(X, torch.arange(2)),
        lambda: oracle.sgd_step_(X, torch.arange(2), 0, 0.1),
    ):
        with pytest.raises(TypeError, match=f"problem '{name}' is a black box.*fedzo"):
            call()


@pytest.mark.parametrize("name", NAMES)
def test_queries_are_counted_and_their_noise_is_keyed(name: str) -> None:
    spec = {"name": name, "dim": 5, "heterogeneity": 1.0}
    oracle = build(spec, [0, 1, 2, 3], 4)
    rows = torch.tensor([3, 1])
    X = torch.rand(2, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = oracle.value(X, rows)
    noisy = oracle.query(X, rows, 9, 0.2)
    keys = rng.node_keys(3, "query", torch.tensor([3, 1]), 9)
    assert torch.equal(noisy, exact + 0.2 * rng.normal(keys, 1, torch.float64)[:, 0])
    assert oracle.queries == 2
    alone = build(spec, [1], 4)  # data rank 1 hosted alone: the same value and noise
    assert torch.equal(alone.query(X[1:], torch.tensor([0]), 9, 0.2), noisy[1:])
    assert alone.queries == 1


def _ackley(z: list[float], c: float) -> float:
    d = len(z)
    r = math.sqrt(sum(v * v for v in z) / d)
    return -20 * math.exp(-0.2 * r) - math.exp(sum(math.cos(c * v) for v in z) / d) + 20 + math.e


def _levy(z: list[float], first: int) -> float:
    w = [1 + (v - 1) / 4 for v in z]
    s = math.sin(math.pi * w[0]) ** 2
    for v in w[first : len(w) - 1]:
        s += (v - 1) ** 2 * (1 + 10 * math.sin(math.pi * v + 1) ** 2)
    return s + (w[-1] - 1) ** 2 * (1 + math.sin(2 * math.pi * w[-1]) ** 2)


@pytest.mark.parametrize("form", ["standard", "reference"])
def test_ackley_and_levy_match_their_definitions(form: str) -> None:
    d = 4
    ack = build({"name": "ackley", "dim": d, "form": form}, [0], 1)
    levy = build({"name": "levy", "dim": d, "form": form}, [0], 1)
    c = math.pi if form == "reference" else 2 * math.pi
    first = 1 if form == "reference" else 0
    assert float(ack.base(torch.zeros(1, d, dtype=torch.float64))) == pytest.approx(0, abs=1e-14)
    assert float(levy.base(torch.ones(1, d, dtype=torch.float64))) == pytest.approx(0, abs=1e-14)
    if form == "standard":  # Ackley(1, 1) = 20 (1 - e^-0.2), the textbook value
        one = torch.ones(1, 2, dtype=torch.float64)
        assert float(ack.base(one)) == pytest.approx(20 * (1 - math.exp(-0.2)), rel=1e-14)
    for z in ([0.3, -1.2, 2.0, 0.7], [0.0, 0.0, 0.0, 0.0], [-3.0, 5.0, 1.0, -0.5]):
        Z = torch.tensor([z], dtype=torch.float64)
        assert float(ack.base(Z)) == pytest.approx(_ackley(z, c), rel=1e-13)
        assert float(levy.base(Z)) == pytest.approx(_levy(z, first), rel=1e-13)
    # one client without heterogeneity: z = u / 10, so Ackley's minimum is at x = 0.5 and
    # Levy's at x = 1 (z = 1), both with value 0
    rows = torch.tensor([0])
    half = torch.full((1, d), 0.5, dtype=torch.float64)
    one = torch.ones(1, d, dtype=torch.float64)
    flat = {"dim": d, "heterogeneity": 0.0, "form": form}
    assert float(build({"name": "ackley", **flat}, [0], 1).value(half, rows)) == pytest.approx(
        0, abs=1e-14
    )
    assert float(build({"name": "levy", **flat}, [0], 1).value(one, rows)) == pytest.approx(
        0, abs=1e-14
    )


def test_every_client_starts_from_the_same_uniform_point() -> None:
    oracle = _quad(10)
    X = oracle.init_params(torch.arange(N))
    assert torch.equal(X, X[:1].expand(N, -1))
    assert torch.equal(_quad(10, ranks=[3]).init_params(torch.arange(1)), X[:1])

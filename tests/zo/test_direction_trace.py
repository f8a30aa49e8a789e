"""The direction-cosine diagnostic (``trace_cosine``) of the zeroth-order methods."""

from __future__ import annotations

import copy

import pytest
import torch

from fedopt.errors import ConfigError
from fedopt.problems import PROBLEMS
from tests.helpers import experiment, run

METHODS = ["fzoos", "fedzo", "fedprox_zo", "scaffold_zo1", "scaffold_zo2"]


def _raw(name: str, heterogeneity: float = 2.0, **algorithm) -> dict:
    algo = {"name": name, "local_steps": 3, **algorithm}
    if name == "fzoos":
        algo |= {"features": 64, "local_candidates": 8, "agg_candidates": 8, "agg_keep": 4}
    else:
        algo.setdefault("directions", 3)
    return experiment(
        topology={"name": "star", "n": 4},
        algorithm=algo,
        problem={"name": "zo_quadratic", "dim": 6, "heterogeneity": heterogeneity},
        stop={"rounds": 3},
        eval={"every": 1},
    )


def test_true_gradients_are_the_derivatives_of_the_queries() -> None:
    # the closed form against central differences of the exact values, inside the box
    # and on a clipped coordinate (derivative 0 there)
    cfg = PROBLEMS.get("zo_quadratic").Config(dim=5, heterogeneity=5.0)
    oracle = PROBLEMS.get("zo_quadratic").oracle_class(
        cfg, 0, torch.arange(3), 3, torch.device("cpu")
    )
    X = torch.tensor([[0.3, 0.6, 0.45, 1.2, 0.1]] * 3, dtype=torch.float64)
    rows = torch.arange(3)
    grad_F, grad_f = oracle.true_gradients(X, rows)
    h = 1e-6
    for j in range(5):
        e = torch.zeros(5, dtype=torch.float64)
        e[j] = h
        fd = (oracle.value(X + e, rows) - oracle.value(X - e, rows)) / (2 * h)
        torch.testing.assert_close(grad_f[:, j], fd, rtol=0, atol=1e-7)
    assert torch.all(grad_f[:, 3] == 0) and torch.all(grad_F[:, 3] == 0)
    # F is the mean of the three clients' f_i (p_i = 1/N)
    torch.testing.assert_close(grad_F[0], grad_f.mean(0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", METHODS)
def test_the_trace_changes_nothing_and_spends_no_query(name: str) -> None:
    plain = run(_raw(name))[1]
    traced = run(_raw(name, trace_cosine=True))[1]
    assert torch.equal(plain.final_params, traced.final_params)
    assert plain.records[-1]["queries_total"] == traced.records[-1]["queries_total"]
    assert plain.records[-1]["bytes_total"] == traced.records[-1]["bytes_total"]
    last = traced.records[-1]
    for key in ("direction_cosine", "direction_cosine_s01", "direction_cosine_s03"):
        assert -1.0 <= last[key] <= 1.0
    assert "direction_cosine" not in plain.records[-1]
    if name in ("fzoos", "scaffold_zo1", "scaffold_zo2"):  # a correction from round 2 on
        assert -1.0 <= last["correction_cosine"] <= 1.0


def test_exact_finite_differences_point_along_the_gradient() -> None:
    # Q = d orthonormal directions and a tiny step: the FD estimate is grad f_i / d up to
    # O(lambda), so its cosine with grad f_i is 1, and with grad F at C = 0 (f_i = F) too
    raw = _raw("fedzo", heterogeneity=0.0, directions=6, fd_step=1e-7, trace_cosine=True)
    last = run(raw)[1].records[-1]
    assert last["local_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert last["direction_cosine"] == pytest.approx(1.0, abs=1e-6)
    # with heterogeneity the local estimate still points at grad f_i, not at grad F
    het = run(_raw("fedzo", 5.0, directions=6, fd_step=1e-7, trace_cosine=True))[1]
    assert het.records[-1]["local_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert het.records[-1]["direction_cosine"] < 0.95


def test_scaffold_type_one_correction_with_exact_estimates_is_the_drift() -> None:
    # SCAFFOLD-I's c - Delta_i(x_{r-1}) with Q = d exact FD estimates is (grad F - grad f_i)/d
    # at x_{r-1}; at the first local step the iterate is x_{r-1}, so its cosine is ~1 there
    raw = _raw("scaffold_zo1", 5.0, directions=6, fd_step=1e-7, trace_cosine=True)
    raw["algorithm"]["local_steps"] = 1
    last = run(raw)[1].records[-1]
    assert last["correction_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert last["direction_cosine"] == pytest.approx(1.0, abs=1e-5)


def test_the_trace_is_refused_on_a_problem_without_closed_form_gradients() -> None:
    raw = copy.deepcopy(_raw("fedzo", trace_cosine=True))
    raw["problem"] = {"name": "ackley", "dim": 6}
    with pytest.raises(ConfigError, match=r"algorithm.trace_cosine: problem 'ackley'"):
        run(raw)

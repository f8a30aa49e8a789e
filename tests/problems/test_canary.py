"""The ``canary`` wrapper: a gradient canary in any problem with per-sample gradients.

Absent (``present: false``, ``absent: inner``) it is the inner problem bit for bit;
present, sample ``s`` of node ``p`` has the constant gradient ``norm * u``, which
clipping turns into exactly ``C u`` and whose per-sample difference is zero; empty,
the slot adds nothing.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import experiment, run
from prob_helpers import build, random_params

from fedopt.errors import ConfigError
from fedopt.problems import PROBLEMS
from fedopt.problems.canary import CanaryOracle

LOGISTIC = {"name": "logistic", "dim": 3, "samples_per_node": 20, "batch_size": 0}
INNERS = {
    "logistic": LOGISTIC,
    "logistic_minibatch": {**LOGISTIC, "batch_size": 8, "l2": 0.01},
    "least_squares": {"name": "least_squares", "dim": 4, "samples_per_node": 12},
    "fc10_regression": {"name": "fc10_regression", "samples": 303, "batch_size": 8},
}
NODE, SAMPLE = 1, 3


def _canary(inner: dict, **kw: object) -> dict:
    return {"name": "canary", "inner": inner, "node": NODE, "sample": SAMPLE, **kw}


def _pair(inner: dict, **kw: object):
    """(inner oracle, canary oracle) over data ranks 0..2 of 3."""
    return build(inner, [0, 1, 2], 3), build(_canary(inner, **kw), [0, 1, 2], 3)


def _onehot(oracle, rows: int, row: int) -> torch.Tensor:
    mask = torch.ones(rows, oracle.max_samples, dtype=torch.float64)
    mask[row, SAMPLE] = 0.0
    return mask


@pytest.mark.parametrize("name", sorted(INNERS))
def test_absent_is_the_inner_problem_bit_for_bit(name: str) -> None:
    inner, absent = _pair(INNERS[name], present=False)
    rows = torch.arange(3)
    X = random_params(inner, 3)
    Xp = random_params(inner, 3, seed=1)
    mask = (torch.arange(inner.max_samples) % 3 != 0).to(torch.float64).expand(3, -1)
    radii = torch.tensor([0.5, 1.0, math.inf])
    for call in (
        lambda o: o.clipped_grad_sum(X, rows, 1.0),
        lambda o: o.clipped_grad_sum(X, rows, radii, X_prev=Xp, mask=mask),
        lambda o: o.per_sample_grad(X, rows, 5),
        lambda o: o.clipped_mean_grad(X, rows, 5, 0.7),
        lambda o: o.grad(X, rows, 5),
        lambda o: o.full_grad(X, rows),
        lambda o: o.value(X, rows),
        lambda o: o.init_params(rows),
    ):
        assert torch.equal(call(inner), call(absent))
    assert inner.evaluate(X[0]) == absent.evaluate(X[0])


def test_absent_canary_runs_the_inner_experiment_bit_for_bit() -> None:
    def raw(problem: dict) -> dict:
        return experiment(
            topology={"name": "star", "n": 3},
            algorithm={"name": "dp_gd", "lr": 0.5, "epsilon": 2.0, "clip_grad": 1.0},
            problem=problem,
            stop={"rounds": 4},
        )

    _, a, _ = run(raw(LOGISTIC))
    _, b, _ = run(raw({"name": "canary", "inner": LOGISTIC, "present": False}))
    assert torch.equal(a.final_model, b.final_model)
    assert a.records[-1]["loss"] == b.records[-1]["loss"]
    assert a.ledgers == b.ledgers


@pytest.mark.parametrize("name", sorted(INNERS))
def test_present_canary_contributes_exactly_c_along_u(name: str) -> None:
    inner, canary = _pair(INNERS[name], coordinate=1)
    assert isinstance(canary, CanaryOracle)
    rows = torch.arange(3)
    X = random_params(inner, 3)
    masked = inner.clipped_grad_sum(X, rows, 0.8, mask=_onehot(inner, 3, NODE))
    got = canary.clipped_grad_sum(X, rows, 0.8)
    assert torch.equal(got[[0, 2]], inner.clipped_grad_sum(X, rows, 0.8)[[0, 2]])
    extra = (got[NODE] - masked[NODE]).to(torch.float64)
    want = torch.zeros(inner.dim, dtype=torch.float64)
    want[1] = 0.8 * 1e6 / (1e6 + 1e-10)
    tol = 1e-6 if inner.dtype == torch.float32 else 1e-12
    torch.testing.assert_close(extra, want, rtol=0, atol=tol * float(masked.abs().max()))
    # a difference round: the canary's gradient is constant, so its difference is zero
    Xp = random_params(inner, 3, seed=1)
    diff = canary.clipped_grad_sum(X, rows, 0.3, X_prev=Xp)
    assert torch.equal(diff, inner.clipped_grad_sum(X, rows, 0.3, Xp, _onehot(inner, 3, NODE)))
    # an infinite radius passes the canary unclipped, a zero radius gives zeros
    free = canary.clipped_grad_sum(X, rows, math.inf) - inner.clipped_grad_sum(
        X, rows, math.inf, mask=_onehot(inner, 3, NODE)
    )
    assert float(free[NODE, 1]) == pytest.approx(1e6, rel=1e-6)
    assert not canary.clipped_grad_sum(X, rows, 0.0).any()


def test_the_mask_and_per_row_radii_reach_the_canary() -> None:
    inner, canary = _pair(LOGISTIC)
    rows = torch.tensor([1, 0])  # the canary's node first
    X = random_params(inner, 2)
    radii = torch.tensor([2.0, 0.5])
    mask = torch.ones(2, inner.max_samples, dtype=torch.float64)
    got = canary.clipped_grad_sum(X, rows, radii, mask=mask)
    mask_off = mask.clone()
    mask_off[0, SAMPLE] = 0.0
    base = inner.clipped_grad_sum(X, rows, radii, mask=mask_off)
    assert torch.equal(got[1], base[1])
    assert float(got[0, 0] - base[0, 0]) == pytest.approx(2.0, abs=1e-6)
    assert torch.equal(canary.clipped_grad_sum(X, rows, radii, mask=mask_off), base)


def test_empty_slot_adds_nothing_and_keeps_the_count() -> None:
    inner, empty = _pair(LOGISTIC, present=False, absent="empty")
    rows = torch.arange(3)
    X = random_params(inner, 3)
    mask = _onehot(inner, 3, NODE)
    assert torch.equal(
        empty.clipped_grad_sum(X, rows, 1.0), inner.clipped_grad_sum(X, rows, 1.0, mask=mask)
    )
    assert torch.equal(empty.num_samples, inner.num_samples)
    assert not empty.per_sample_grad(X, rows, 0)[NODE, SAMPLE].any()


@pytest.mark.parametrize("name", ["logistic", "logistic_minibatch", "fc10_regression"])
def test_per_sample_gradients_hold_the_canary_and_average_to_grad(name: str) -> None:
    inner, canary = _pair(INNERS[name], coordinate=0, norm=50.0)
    rows = torch.arange(3)
    X = random_params(inner, 3)
    step = 7
    G, G0 = canary.per_sample_grad(X, rows, step), inner.per_sample_grad(X, rows, step)
    batch = INNERS[name].get("batch_size", 0)
    if batch:
        where = inner.batch_indices(rows[NODE : NODE + 1], step)[0] == SAMPLE
    else:
        where = torch.arange(G.shape[1]) == SAMPLE
    g = torch.zeros(inner.dim, dtype=G.dtype)
    g[0] = 50.0
    assert torch.equal(G[NODE, where], g.expand(int(where.sum()), -1))
    assert torch.equal(G[NODE, ~where], G0[NODE, ~where])
    assert torch.equal(G[[0, 2]], G0[[0, 2]])
    if name != "fc10_regression":  # equal counts: the batch mean is grad
        tol = 1e-5 if G.dtype == torch.float32 else 1e-12
        torch.testing.assert_close(G.mean(1), canary.grad(X, rows, step), rtol=tol, atol=tol)
        norms = torch.linalg.vector_norm(G.to(torch.float64), dim=2, keepdim=True)
        clipped = (G * torch.clamp(0.6 / norms, max=1.0)).mean(1)
        torch.testing.assert_close(
            canary.clipped_mean_grad(X, rows, step, 0.6), clipped.to(G.dtype), rtol=tol, atol=tol
        )


def test_full_grad_swaps_the_samples_share() -> None:
    inner, canary = _pair(LOGISTIC, norm=20.0)
    rows = torch.arange(3)
    X = random_params(inner, 3)
    own = inner.per_sample_grad(X, rows, 0)[NODE, SAMPLE]
    want = inner.full_grad(X, rows)
    want[NODE] += (torch.tensor([20.0, 0.0, 0.0]) - own) / 20
    torch.testing.assert_close(canary.full_grad(X, rows), want, rtol=1e-5, atol=1e-6)
    assert torch.equal(canary.value(X, rows), inner.value(X, rows))  # the inner objective
    assert canary.optimum_stats() is None and canary.curvature_bounds() is None


def test_a_canary_on_another_worker_changes_nothing_here() -> None:
    inner = build(LOGISTIC, [0, 2], 3)
    canary = build(_canary(LOGISTIC), [0, 2], 3)  # node 1 is hosted elsewhere
    X = random_params(inner, 2)
    rows = torch.arange(2)
    assert torch.equal(canary.clipped_grad_sum(X, rows, 1.0), inner.clipped_grad_sum(X, rows, 1.0))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"node": 3}, r"problem\.node: data rank 3 does not exist, the run has 3 data nodes"),
        ({"sample": 20}, r"problem\.sample: node 1 has 20 samples, so sample 20 does not exist"),
        ({"coordinate": 3}, r"problem\.coordinate: coordinate 3 does not exist.*dim=3"),
        ({"direction": [1.0, 2.0]}, r"problem\.direction: got 2 numbers.*dim=3"),
    ],
)
def test_a_canary_that_does_not_fit_the_data_is_refused(spec: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build({"name": "canary", "inner": LOGISTIC, "node": 1, **spec}, [0, 1, 2], 3)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (
            {"inner": {"name": "quadratic"}},
            r"problem\.inner: problem 'quadratic' has no per-sample",
        ),
        ({"inner": {"name": "logistic", "dimm": 3}}, r"problem\.inner\.dimm: unknown key 'dimm'"),
        ({"direction": [0.0, 0.0, 0.0]}, r"problem\.direction: the direction must be a non-zero"),
        ({"norm": 0.0}, r"problem\.norm: Input should be greater than 0"),
    ],
)
def test_bad_canary_configs_name_the_field(spec: dict, match: str) -> None:
    from fedopt.problems import parse_problem_config

    with pytest.raises(ConfigError, match=match):
        parse_problem_config({"name": "canary", **spec})


def test_direction_is_normalised_and_the_summary_names_the_canary() -> None:
    _, canary = _pair(LOGISTIC, direction=[3.0, 0.0, -4.0])
    torch.testing.assert_close(canary.u, torch.tensor([0.6, 0.0, -0.8], dtype=torch.float64))
    summary = PROBLEMS.get("canary").summary(_canary(LOGISTIC))
    assert summary["inner"] == "logistic" and summary["canary_node"] == NODE
    assert summary["dim"] == 3

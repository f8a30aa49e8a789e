"""Zeroth-order machinery and the FD baselines: the estimator, exact query counts, keyed
and placement-independent noise, descent on the black-box quadratic, FedZO -> GD, and the
refused pairings of gradients and black boxes."""

from __future__ import annotations

import copy
import sys
from itertools import pairwise
from pathlib import Path

import pytest
import torch
from helpers import experiment, run

from fedopt.algorithms.zo_common import fd_gradient, fd_queries, orthonormal_directions
from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.errors import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "problems"))
from prob_helpers import build

ZO = ("fedzo", "fedprox_zo", "scaffold_zo1", "scaffold_zo2")
QUAD64 = {"name": "quadratic", "dim": 6, "mu": 0.5, "L": 4.0, "dtype": "float64"}


# ----------------------------------------------------------------------------- directions


def test_directions_are_orthonormal_gram_schmidt_of_keyed_normals() -> None:
    from fedopt import rng

    ids = torch.tensor([0, 3, 9])
    U = orthonormal_directions(7, "zo/directions", ids, 11, 30, 20)
    assert U.shape == (3, 20, 30) and U.dtype == torch.float64
    gram = torch.einsum("kqd,kpd->kqp", U, U)
    torch.testing.assert_close(gram, torch.eye(20).expand(3, -1, -1).double(), rtol=0, atol=1e-14)
    # Gram-Schmidt by hand on row 1's keyed normals
    G = rng.normal(rng.node_keys(7, "zo/directions", ids[1:2], 11), 600, torch.float64)
    G = G.reshape(20, 30)
    basis: list[torch.Tensor] = []
    for g in G[:4]:
        for b in basis:
            g = g - (g @ b) * b
        basis.append(g / g.norm())
    torch.testing.assert_close(U[1, :4], torch.stack(basis), rtol=0, atol=1e-14)
    # keyed: a row alone has the same bits; another step or purpose gives others
    assert torch.equal(orthonormal_directions(7, "zo/directions", ids[2:], 11, 30, 20)[0], U[2])
    assert not torch.equal(orthonormal_directions(7, "zo/directions", ids, 12, 30, 20), U)
    assert not torch.equal(orthonormal_directions(7, "other", ids, 11, 30, 20), U)
    for q in (0, 31):
        with pytest.raises(ValueError, match="1 <= Q <= d"):
            orthonormal_directions(7, "zo/directions", ids, 0, 30, q)


# ----------------------------------------------------------------------------- estimator


def test_fd_gradient_with_d_directions_is_the_gradient_over_d() -> None:
    oracle = build(QUAD64, [0, 1, 2], 3)
    rows = torch.tensor([2, 0, 1])
    X = torch.rand(3, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    U = orthonormal_directions(0, "t", rows, 0, 6, 6)
    est = fd_gradient(oracle, X, rows, 0, U, 1e-7, 0.0)
    torch.testing.assert_close(6 * est, oracle.full_grad(X, rows), rtol=0, atol=1e-5)
    assert oracle.queries == 3 * fd_queries(6) == 21
    with pytest.raises(ValueError, match="lam"):
        fd_gradient(oracle, X, rows, 0, U, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"directions: expected shape \[3, Q, 6\]"):
        fd_gradient(oracle, X, rows, 0, U[:2], 0.01, 0.0)


def test_fd_gradient_queries_base_then_directions_at_consecutive_steps() -> None:
    oracle = build(QUAD64, [0, 1, 2, 3], 4)
    rows = torch.tensor([1, 3])
    X = torch.rand(2, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    U = orthonormal_directions(0, "t", rows, 5, 6, 3)
    steps = torch.tensor([40, 7])
    est = fd_gradient(oracle, X, rows, steps, U, 0.01, 0.3)
    want = []
    for i in range(2):  # by hand: base at step s, direction q at s + 1 + q
        r, s = rows[i : i + 1], int(steps[i])
        y0 = oracle.query(X[i : i + 1], r, s, 0.3)
        g = torch.zeros(6, dtype=torch.float64)
        for q in range(3):
            yq = oracle.query(X[i : i + 1] + 0.01 * U[i, q], r, s + 1 + q, 0.3)
            g += (yq - y0) / 0.01 * U[i, q]
        want.append(g / 3)
    torch.testing.assert_close(est, torch.stack(want), rtol=1e-12, atol=1e-12)
    # one row alone, and an int step for all rows, give the same bits as the batch
    assert torch.equal(fd_gradient(oracle, X[1:], rows[1:], 7, U[1:], 0.01, 0.3)[0], est[1])
    same = fd_gradient(oracle, X, rows, torch.tensor([7, 7]), U, 0.01, 0.3)
    assert torch.equal(same, fd_gradient(oracle, X, rows, 7, U, 0.01, 0.3))
    assert oracle.queries == 2 * 4 + 2 * 4 + 4 + 2 * 4 * 2


# ----------------------------------------------------------------------------- the baselines


def _zo_raw(name: str, rounds: int = 3, **algorithm) -> dict:
    return experiment(
        topology={"name": "star", "n": 4},
        algorithm={"name": name, "directions": 3, "local_steps": 2, **algorithm},
        problem={"name": "zo_quadratic", "dim": 6, "heterogeneity": 2.0},
        stop={"rounds": rounds},
        eval={"every": 1},
    )


@pytest.mark.parametrize("name", ZO)
def test_every_query_is_counted_exactly(name: str) -> None:
    # N clients, R rounds, T local steps, Q directions: each FD estimate costs Q + 1
    # queries (the base point included, pitfall P6); SCAFFOLD-I adds one estimate at the
    # new global point per client from round 2 on
    N, R, T, Q = 3, 3, 2, 3
    _, result, worker = run(_zo_raw(name, R, noise_std=0.01))
    per_round = [T + (name == "scaffold_zo1" and r >= 1) for r in range(R)]
    want = [N * sum(per_round[: r + 1]) * (Q + 1) for r in range(R)]
    got = [rec["queries_total"] for rec in result.records[1:]]
    assert got == want
    if name == "scaffold_zo1":
        assert want[-1] == N * (R * T + R - 1) * (Q + 1) == 96
    else:
        assert want[-1] == N * R * T * (Q + 1) == 72
    assert worker.oracle.queries == want[-1]  # the meter saw every query the oracle served
    assert result.records[-1]["gradients_total"] == 0
    assert result.derived["queries_per_estimate"] == Q + 1


@pytest.mark.parametrize("name", ZO)
def test_noise_is_keyed_and_placement_independent(name: str) -> None:
    raw = _zo_raw(name, noise_std=0.05)
    base = run(raw)[1]
    tiny = copy.deepcopy(raw)
    tiny["engine"] = {**raw["engine"], "chunk_size": 1}  # one client per oracle call
    chunked = run(tiny)[1]
    strip = [{k: v for k, v in r.items() if k != "wall_time_s"} for r in base.records]
    assert strip == [{k: v for k, v in r.items() if k != "wall_time_s"} for r in chunked.records]
    assert torch.equal(base.final_params, chunked.final_params)
    quiet = run(_zo_raw(name, noise_std=0.0))[1]
    assert not torch.equal(quiet.final_params, base.final_params)  # the noise is there
    other = copy.deepcopy(raw)
    other["seed"] = 1
    assert not torch.equal(run(other)[1].final_params, base.final_params)


@pytest.mark.parametrize("name", ZO)
def test_each_baseline_decreases_the_quadratic(name: str) -> None:
    # the spec's loop at its defaults (Q = 20, lambda = 0.01, T = 10, Adam lr 0.01) on
    # d = 20, N = 5, C = 5 for 10 rounds
    raw = experiment(
        topology={"name": "star", "n": 6},
        algorithm={"name": name},
        problem={"name": "zo_quadratic", "dim": 20, "heterogeneity": 5.0},
        stop={"rounds": 10},
        eval={"every": 10},
    )
    records = run(raw)[1].records
    first, last = records[0], records[-1]
    assert first["loss_gap"] == pytest.approx(3.1231, abs=1e-4)
    assert last["loss_gap"] < 0.3 * first["loss_gap"]
    assert last["loss"] < first["loss"]
    assert last["queries_total"] == 5 * (10 * 10 + (9 if name == "scaffold_zo1" else 0)) * 21


def test_fedzo_with_d_directions_and_a_tiny_step_is_fedavg_gradient_descent() -> None:
    # Q = d orthonormal directions: Delta = grad / d up to O(lambda); plain SGD clients
    d, T, lr = QUAD64["dim"], 3, 0.6
    zo = experiment(
        topology={"name": "star", "n": 5},
        algorithm={
            "name": "fedzo",
            "optimizer": "sgd",
            "lr": lr,
            "directions": d,
            "fd_step": 1e-7,
            "local_steps": T,
        },
        problem=QUAD64,
        stop={"rounds": 8},
        eval={"every": 8},
    )
    gd = copy.deepcopy(zo)
    gd["algorithm"] = {"name": "fedavg", "lr": lr / d, "local_steps": T}
    a, b = run(zo)[1], run(gd)[1]
    assert a.records[-1]["distance_to_opt"] < 0.5 * a.records[0]["distance_to_opt"]
    torch.testing.assert_close(a.final_params, b.final_params, rtol=0, atol=1e-6)
    assert a.records[-1]["queries_total"] == 4 * 8 * T * (d + 1)
    assert b.records[-1]["gradients_total"] == 4 * 8 * T


# ----------------------------------------------------------------------------- refusals

BLACK_BOX = {"name": "zo_quadratic", "dim": 6}


@pytest.mark.parametrize(
    ("algorithm", "topology"),
    [("fedavg", "star"), ("dsgd", "ring"), ("dadao", "ring")],
)
def test_gradient_methods_refuse_black_boxes(algorithm: str, topology: str) -> None:
    raw = experiment(
        topology={"name": topology, "n": 5}, algorithm={"name": algorithm}, problem=BLACK_BOX
    )
    if algorithm == "dadao":
        raw["stop"] = {"sim_time_s": 1.0}
    with pytest.raises(ConfigError) as err:
        compile_plan(validate(raw))
    assert str(err.value) == (
        f"algorithm.name: algorithm {algorithm!r} uses gradients, but problem 'zo_quadratic' "
        "is a black box (capability 'noisy_queries' only, no gradients); zeroth-order "
        "algorithms: fedprox_zo, fedzo, fzoos, scaffold_zo1, scaffold_zo2. Fix: set algorithm.name "
        "to one of them, or pick a problem with gradients"
    )


def test_zeroth_order_methods_refuse_problems_without_queries() -> None:
    raw = experiment(
        topology={"name": "star", "n": 5},
        algorithm={"name": "fedzo", "directions": 3},
        problem={"name": "digits_mlp", "hidden": 4},
    )
    with pytest.raises(ConfigError) as err:
        compile_plan(validate(raw))
    assert str(err.value).startswith(
        "problem.name: algorithm 'fedzo' needs capability 'noisy_queries' which problem "
        "'digits_mlp' does not provide; problems that provide it: ackley, digits_attack, "
        "digits_metric, least_squares, levy, logistic, quadratic, tiny_lm, zo_quadratic."
    )
    # a problem with gradients and queries serves both kinds of method
    raw["problem"] = QUAD64
    assert compile_plan(validate(raw)).topology.n == 5


@pytest.mark.parametrize("name", ["fedzo", "scaffold_zo2"])
def test_the_federated_safeguard_keeps_f_from_rising_and_is_metered(name: str) -> None:
    # d = 20, C = 5: FedZO's F rises again after round ~5 without the safeguard
    raw = experiment(
        topology={"name": "star", "n": 6},
        algorithm={"name": name},
        problem={"name": "zo_quadratic", "dim": 20, "heterogeneity": 5.0},
        stop={"rounds": 20},
        eval={"every": 1},
    )
    off = run(raw)[1]
    safe = copy.deepcopy(raw)
    safe["algorithm"]["safeguard"] = "federated"
    plan, on, worker = run(safe)
    rises = [b["loss"] - a["loss"] for a, b in pairwise(off.records)]
    assert max(rises) > 1e-3
    losses = [r["loss"] for r in on.records]
    assert all(b <= a + 1e-15 for a, b in pairwise(losses))
    assert losses[-1] < off.records[-1]["loss"]
    # 2 more queries and 2 more messages (x_r down, 2 scalars up) per client per round
    assert on.records[-1]["queries_total"] == 5 * 20 * (10 * 21 + 2) == worker.oracle.queries
    assert on.totals.messages == off.totals.messages + 2 * 5 * 20
    m, b = on.totals.by_kind["safeguard"]
    assert (m, b // m) == (100, 2 * 8 + 32)
    assert on.totals.by_kind["x_global"][1] // 100 == 20 * 8 + 32
    algo = type(worker.algorithm)
    assert algo.analytic_traffic(plan.config.algorithm, plan, 20) == on.totals.messages

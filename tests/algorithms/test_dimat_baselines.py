"""DIMAT's baselines (spec dimat.md 3.9): SGP, CDSGD, CDMSGD, CGA and local training.

Exact update rules replayed by hand on a noise-free quadratic, the StepLR schedule, exact
messages and bytes per round, gradient counts including CGA's cross-gradients, CGA's QP
against a brute-force solution, and convergence of each method on digits (MLP, 5 agents).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from helpers import experiment, run

from fedopt.algorithms.cone_projection import project_gradient, solve_dual
from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.engine.worker import Worker
from fedopt.errors import ConfigError

QUAD = {"name": "quadratic", "dim": 4, "mu": 0.5, "L": 2.0, "dtype": "float64"}
MLP = {"name": "digits_mlp", "hidden": 32, "batch_size": 32}
MLP_DIM = 75 * 32 + 10  # 2410 float32 parameters
HEADER = 32


def worker(algorithm: dict, topology: dict | None = None, problem: dict | None = None) -> Worker:
    raw = experiment(
        topology=topology or {"name": "ring", "n": 5},
        algorithm=algorithm,
        problem=problem or QUAD,
        stop={"rounds": 3},
    )
    plan = compile_plan(validate(raw))
    return Worker(plan, np.arange(plan.topology.n), torch.device("cpu"))


def dense_w(w: Worker) -> torch.Tensor:
    return torch.from_numpy(w.plan.topology.mixing_at(0).toarray())


def exact_grads(w: Worker, x: torch.Tensor) -> torch.Tensor:
    return w.oracle.grad(x, w.ctx.data_rows, 0)  # noise-free quadratic: step-independent


# ------------------------------------------------------------------ update rules


def test_sgp_adapts_then_combines():
    w = worker({"name": "sgp", "lr": 0.1, "gamma": 0.5, "steps_per_epoch": 1})
    W = dense_w(w)
    for t in range(3):
        x = w.state["x"].clone()
        expected = W @ (x - 0.1 * 0.5**t * exact_grads(w, x))
        w.round(t)
        assert torch.allclose(w.state["x"], expected, rtol=0, atol=1e-14)


def test_cdsgd_combines_then_adapts_with_the_pre_mixing_gradient():
    w = worker({"name": "cdsgd", "lr": 0.1, "gamma": 0.5, "steps_per_epoch": 2})
    W = dense_w(w)
    for t in range(4):
        x = w.state["x"].clone()
        expected = W @ x - 0.1 * 0.5 ** (t // 2) * exact_grads(w, x)
        w.round(t)
        assert torch.allclose(w.state["x"], expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("nesterov", [True, False])
def test_cdmsgd_momentum_buffer_and_steplr(nesterov):
    cfg = {"name": "cdmsgd", "lr": 0.1, "gamma": 0.981, "steps_per_epoch": 2}
    w = worker({**cfg, "nesterov": nesterov})
    W = dense_w(w)
    b = torch.zeros_like(w.state["x"])
    for t in range(5):
        x = w.state["x"].clone()
        g = exact_grads(w, x)
        b = 0.9 * b + g
        lr = 0.1 * 0.981 ** (t // 2)
        step = lr * (g + 0.9 * b) if nesterov else lr * b
        w.round(t)
        assert torch.allclose(w.state["x"], W @ x - step, rtol=0, atol=1e-14)
    assert [w.algorithm.lr_at(t) for t in (0, 1, 2, 5)] == [
        0.1,
        0.1,
        0.1 * 0.981,
        0.1 * 0.981**2,
    ]


def test_steps_per_epoch_follow_the_largest_node_and_the_batch():
    w = worker({"name": "cdmsgd"}, problem=MLP)
    m_max = int(w.oracle.num_samples.max())
    spe = math.ceil(m_max / 32)
    assert w.algorithm.steps_per_epoch == spe == 9  # 1438 training digits over 5 nodes
    assert w.algorithm.derived_constants() == {
        "lr_schedule": f"0.01 * 0.981 ** floor(t / {spe})",
        "steps_per_epoch": spe,
        "comm_rounds_per_epoch": spe * 2.0,  # DIMAT's axis: exchanges x degree on a ring
    }
    fc = worker({"name": "sgp"}, topology={"name": "complete", "n": 5}, problem=MLP)
    assert fc.algorithm.derived_constants()["comm_rounds_per_epoch"] == spe * 4.0
    assert w.algorithm.lr_at(spe - 1) == 0.01 and w.algorithm.lr_at(spe) == 0.01 * 0.981


def test_cga_projects_its_gradient_against_the_cross_gradients():
    cfg = {"name": "cga", "lr": 0.05, "gamma": 1.0, "momentum": 0.9, "margin": 0.5}
    w = worker(cfg, topology={"name": "two_hub", "n": 5, "weights": "given"})
    W = dense_w(w)
    n = W.shape[0]
    b = torch.zeros_like(w.state["x"])
    for t in range(3):
        x = w.state["x"].clone()
        g = exact_grads(w, x)
        proj = torch.empty_like(g)
        for i in range(n):
            nbrs = [j for j in range(n) if j != i and W[i, j] > 0]
            # model i on node j's data: row j's objective at x_i
            G = torch.stack([w.oracle.grad(x[i : i + 1], torch.tensor([j]), t)[0] for j in nbrs])
            proj[i] = torch.from_numpy(project_gradient(g[i].numpy(), G.numpy(), 0.5, 1e-3)[0])
        b = 0.9 * b + proj
        expected = W @ x - 0.05 * (proj + 0.9 * b)
        w.round(t)
        assert torch.allclose(w.state["x"], expected, rtol=0, atol=1e-13)


def test_local_training_is_adam_on_each_node_alone():
    w = worker({"name": "local_training", "lr": 0.01}, topology={"name": "disconnected", "n": 4})
    x = w.state["x"].clone()
    ref = x.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=0.01)
    for t in range(4):
        opt.zero_grad()
        ref.grad = exact_grads(w, ref.detach())
        opt.step()
        w.round(t)
    assert torch.allclose(w.state["x"], ref.detach(), rtol=0, atol=1e-15)


# ------------------------------------------------------------------ QP


def brute_force_dual(P: np.ndarray, c: np.ndarray, margin: float) -> np.ndarray:
    """Enumerate the active sets of min 1/2 v'Pv + c'v, v >= margin (KKT conditions)."""
    m = len(c)
    d = c + P @ np.full(m, margin)
    for k in range(m + 1):
        for free in itertools.combinations(range(m), k):
            u = np.zeros(m)
            f = list(free)
            if f:
                u[f] = np.linalg.solve(P[np.ix_(f, f)], -d[f])
            slope = P @ u + d
            if (u >= -1e-12).all() and all(slope[i] >= -1e-10 for i in range(m) if i not in f):
                return u + margin
    raise AssertionError("no KKT point")


@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_cga_qp_matches_brute_force(margin):
    gen = np.random.default_rng(7)
    worst = 0.0
    for _ in range(100):
        m, p = int(gen.integers(1, 6)), int(gen.integers(2, 40))
        G, g = gen.normal(size=(m, p)), gen.normal(size=p)
        P = G @ G.T + 1e-3 * np.eye(m)
        v = solve_dual(P, G @ g, margin)
        worst = max(worst, float(np.abs(v - brute_force_dual(P, G @ g, margin)).max()))
    assert worst < 1e-10


def test_cga_projection_without_margin_removes_every_conflict():
    gen = np.random.default_rng(3)
    g = gen.normal(size=10)
    G = np.stack([-g + 0.1 * gen.normal(size=10), gen.normal(size=10)])  # one conflicts
    assert (G @ g).min() < 0
    z, v = project_gradient(g, G, margin=0.0, eps=1e-12)
    assert (G @ z).min() > -1e-9 and (v >= 0).all()
    # z is the closest such vector: a feasible perturbation never gets nearer to g
    for _ in range(200):
        y = z + 1e-3 * gen.normal(size=10)
        if (G @ y).min() >= 0:
            assert np.linalg.norm(y - g) >= np.linalg.norm(z - g) - 1e-12
    same, none = project_gradient(g, np.zeros((0, 10)))
    assert np.array_equal(same, g) and len(none) == 0


# ------------------------------------------------------------------ messages and counters


@pytest.mark.parametrize(
    ("name", "topology", "per_round", "kinds"),
    [
        ("sgp", {"name": "ring", "n": 5}, 10, {"model"}),
        ("cdsgd", {"name": "complete", "n": 5}, 20, {"model"}),
        ("cdmsgd", {"name": "two_hub", "n": 5, "weights": "given"}, 12, {"model"}),
        ("cga", {"name": "ring", "n": 5}, 20, {"model", "cross_gradient"}),
        ("local_training", {"name": "disconnected", "n": 5}, 0, set()),
    ],
)
def test_exact_messages_bytes_and_gradients_per_round(name, topology, per_round, kinds):
    rounds = 3
    raw = experiment(
        topology=topology, algorithm={"name": name}, problem=MLP, stop={"rounds": rounds}
    )
    _, result, _ = run(raw)
    totals = result.totals
    msg_bytes = MLP_DIM * 4 + HEADER  # the model (or one cross-gradient) in float32
    assert totals.messages == rounds * per_round
    assert totals.bytes == rounds * per_round * msg_bytes
    assert set(totals.by_kind) == kinds
    for m, b in totals.by_kind.values():
        assert b == m * msg_bytes
    last = result.records[-1]
    cross = rounds * per_round // 2 if name == "cga" else 0  # one per model received
    assert last["gradients_total"] == rounds * 5 + cross
    assert last.get("cross_gradients_total", 0) == cross


# ------------------------------------------------------------------ convergence on digits


@pytest.mark.parametrize(
    ("name", "algorithm", "partition", "rounds", "at_least"),
    [
        ("sgp", {"lr": 0.1}, "iid", 300, 0.93),  # measured 0.944
        ("cdsgd", {"lr": 0.1}, "iid", 300, 0.93),  # measured 0.945
        ("cdmsgd", {"lr": 0.02}, "iid", 300, 0.95),  # measured 0.960
        ("cga", {"lr": 0.02}, "iid", 200, 0.96),  # measured 0.974
        ("cga", {"lr": 0.02}, "shards", 200, 0.93),  # measured 0.950; cdmsgd: 0.571
        ("local_training", {"lr": 0.003}, "iid", 300, 0.93),  # measured 0.943
    ],
)
def test_baselines_learn_digits_on_a_ring_of_5(name, algorithm, partition, rounds, at_least):
    topology = {"name": "disconnected" if name == "local_training" else "ring", "n": 5}
    problem = {**MLP, "partition": {"kind": partition, "shards_per_node": 2}}
    raw = experiment(
        topology=topology,
        algorithm={"name": name, **algorithm},
        problem=problem,
        stop={"rounds": rounds},
        eval={"every": rounds},
    )
    _, result, _ = run(raw)
    first, last = result.records[0], result.records[-1]
    assert first["test_accuracy"] < 0.2
    assert last["test_accuracy"] >= at_least  # mean over the 5 agents' own models
    assert "avg_model_test_accuracy" in last


# ------------------------------------------------------------------ running BatchNorm

BN_PROBLEM = {
    "name": "digits_model",
    "model": {"name": "digits_cnn_bn", "channels": [4, 8]},
    "batchnorm": "running",
    "batch_size": 16,
}


@pytest.mark.parametrize("name", ["sgp", "cdsgd", "cdmsgd"])
def test_gossip_baselines_mix_running_statistics_with_the_models(name):
    raw = experiment(
        topology={"name": "ring", "n": 5},
        algorithm={"name": name},
        problem=BN_PROBLEM,
        stop={"rounds": 2},
    )
    _, result, w = run(raw)
    dim, buf = w.oracle.dim, w.oracle.buf_dim
    assert buf == 2 * (4 + 8)  # running mean and variance of bn1, bn2
    assert result.totals.by_kind == {"model": [20, 20 * ((dim + buf) * 4 + HEADER)]}
    b = w.state["buf"]
    assert b.shape == (5, buf) and not torch.equal(b, w.oracle.layout.init_buffers(5))
    # the reported rows carry the statistics: [x_i, b_i]
    _, rows = w.outputs()
    assert rows.shape == (5, dim + buf) and torch.equal(rows[:, dim:], b)


def test_cga_refuses_running_statistics():
    raw = experiment(
        topology={"name": "ring", "n": 5}, algorithm={"name": "cga"}, problem=BN_PROBLEM
    )
    with pytest.raises(ConfigError, match="cga"):
        compile_plan(validate(raw))


def test_cga_under_lost_messages_projects_against_what_arrived():
    raw = experiment(
        topology={"name": "ring", "n": 5},
        algorithm={"name": "cga", "lr": 0.02},
        problem=MLP,
        faults={"drop": 0.3},
        stop={"rounds": 20},
        eval={"every": 20},
    )
    _, result, _ = run(raw)
    kinds, last = result.totals.by_kind, result.records[-1]
    assert kinds["model:dropped"][0] > 0 and kinds["cross_gradient:dropped"][0] > 0
    # one cross-gradient per model that arrived, plus every node's own gradient
    assert last["cross_gradients_total"] == kinds["model"][0]
    assert last["gradients_total"] == 20 * 5 + kinds["model"][0]
    assert np.isfinite(last["loss"])

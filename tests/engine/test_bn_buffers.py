"""Running BatchNorm statistics travel with the models: FedAvg averages them, D-SGD mixes
them, checkpoints carry them, BN reset recomputes them; bytes, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import crash_and_resume, experiment, run, run_records

from fedopt.algorithms.dsgd import DSGD
from fedopt.algorithms.fedavg import FedAvg
from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.errors import ConfigError
from fedopt.problems import PROBLEMS

BN = {  # buf_dim = 2 * (3 + 4) = 14: running mean and variance of bn1 (3) and bn2 (4)
    "name": "digits_model",
    "model": {"name": "digits_cnn_bn", "channels": [3, 4]},
    "batch_size": 8,
    "partition": {"kind": "dirichlet", "alpha": 0.5},  # unequal clients: the weights matter
    "batchnorm": "running",
}
BATCH_STATS = {**BN, "batchnorm": "batch_stats"}
LR, STEPS = 0.1, 2


def fedavg(problem: dict = BN, rounds: int = 1, **algo: object) -> dict:
    return experiment(
        topology={"name": "star", "n": 4},
        algorithm={"name": "fedavg", "lr": LR, "local_steps": STEPS, **algo},
        problem=problem,
        stop={"rounds": rounds},
    )


def dsgd(problem: dict = BN, rounds: int = 1, **algo: object) -> dict:
    return experiment(
        topology={"name": "ring", "n": 4},
        algorithm={"name": "dsgd", "lr": LR, "local_steps": STEPS, **algo},
        problem=problem,
        stop={"rounds": rounds},
    )


def oracle_of(plan, n: int):
    """The oracle of every data node (data ranks 0..n-1), as a fresh worker builds it."""
    cfg = plan.config
    return PROBLEMS.get(cfg.problem.name).build(
        cfg.problem, seed=cfg.seed, data_ranks=torch.arange(n), num_data_nodes=n, device="cpu"
    )


def local_training(o, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Round 0's local SGD steps from rows ``X`` and initial statistics, by hand."""
    rows = torch.arange(len(X))
    X = X.clone()
    o.set_buffers(rows, o.layout.init_buffers(len(X)))
    for s in range(STEPS):
        o.sgd_step_(X, rows, s, LR)
    return X, o.get_buffers(rows)


def test_fedavg_averages_the_running_statistics_with_the_models_weights() -> None:
    plan, res, worker = run(fedavg())
    o = oracle_of(plan, 3)
    d, bd = o.dim, o.buf_dim
    assert plan.buf_dim == bd == 14 and res.final_params.shape == (1, d + bd)
    w0 = o.init_params(torch.zeros(1, dtype=torch.int64))
    models, stats = local_training(o, w0.expand(3, d))
    n = o.num_samples.unsqueeze(1)
    assert len(set(n.flatten().tolist())) == 3  # unequal weights
    want_w = (models.double() * n).sum(0) / n.sum()
    want_b = (stats.double() * n).sum(0) / n.sum()  # mean of the running means and variances
    got_w, got_b = res.final_params[0, :d].double(), res.final_params[0, d:].double()
    torch.testing.assert_close(got_w, want_w, rtol=0, atol=1e-6)
    torch.testing.assert_close(got_b, want_b, rtol=0, atol=1e-6)
    assert not torch.allclose(got_b, o.layout.init_buffers(1)[0].double(), atol=1e-3)
    assert torch.equal(worker.state["w_buf"][0], res.final_params[0, d:])
    # gradients never read running statistics: the parameters are batch_stats' bit for bit
    _, ref, _ = run(fedavg(BATCH_STATS))
    assert torch.equal(ref.final_params, res.final_params[:, :d])


def test_evaluation_runs_the_average_model_on_its_running_statistics() -> None:
    plan, res, _ = run(fedavg(rounds=2))
    o = oracle_of(plan, 3)
    d = o.dim
    x, b = res.final_model[:d].float(), res.final_model[d:].float()
    last = res.records[-1]
    assert last["test_accuracy"] == o.evaluate_test(x, buffers=b)["test_accuracy"]
    rows = torch.arange(3)
    values = o.value(x.unsqueeze(0).expand(3, -1), rows, buffers=b)
    assert last["loss"] == pytest.approx(float((values * o.weights).sum()), rel=1e-12)
    # other statistics give another loss (eval mode reads them)
    fresh = o.layout.init_buffers(1)[0]
    assert abs(float(o.value(x[None], rows[:1], buffers=fresh)[0]) - float(values[0])) > 1e-3
    _, ref, _ = run(fedavg(BATCH_STATS, rounds=2))
    assert ref.records[-1]["loss"] != last["loss"]
    assert last["consensus_distance"] == 0.0


def test_message_bytes_grow_by_the_buffer_row() -> None:
    plan, res, _ = run(fedavg(rounds=2))
    _, ref, _ = run(fedavg(BATCH_STATS, rounds=2))
    d, bd, h = 1 * 9 * 3 + 3 + 3 + 3 * 9 * 4 + 4 + 4 + 16 * 10 + 10, 14, 32
    assert plan.config.network.header_bytes == h and ref.final_params.shape[1] == d
    msgs = 3 * 2  # 3 clients, 2 rounds
    assert res.totals.by_kind["model"] == [msgs, msgs * ((d + bd) * 4 + h)]
    assert res.totals.by_kind["update"] == [msgs, msgs * ((d + bd) * 4 + 4 + h)]  # + count
    assert ref.totals.by_kind["model"] == [msgs, msgs * (d * 4 + h)]
    assert res.totals.bytes - ref.totals.bytes == 2 * msgs * bd * 4
    # D-SGD: every message of the ring is one packed row
    _, ring, _ = run(dsgd(rounds=2))
    assert ring.totals.by_kind["model"] == [16, 16 * ((d + bd) * 4 + h)]


def test_dsgd_mixes_the_running_statistics_like_the_parameters() -> None:
    plan, res, worker = run(dsgd())
    o = oracle_of(plan, 4)
    d = o.dim
    X0 = o.init_params(torch.arange(4))
    models, stats = local_training(o, X0)
    W = torch.from_numpy(plan.topology.mixing_at(0).toarray())
    torch.testing.assert_close(
        res.final_params[:, :d].double(), W @ models.double(), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        res.final_params[:, d:].double(), W @ stats.double(), atol=1e-6, rtol=0
    )
    assert torch.equal(worker.state["buf"], res.final_params[:, d:])
    _, ref, _ = run(dsgd(BATCH_STATS))
    assert torch.equal(ref.final_params, res.final_params[:, :d])
    # the consensus distance counts the parameters only
    p = res.final_params[:, :d].double()
    assert res.records[-1]["consensus_distance"] == pytest.approx(
        float(((p - p.mean(0)) ** 2).sum(1).mean()), rel=1e-9
    )


def test_fedavg_bn_reset_takes_the_mean_of_the_clients_reset_statistics() -> None:
    plan, res, _ = run(fedavg(bn_reset=True))
    o = oracle_of(plan, 3)
    d, bd = o.dim, o.buf_dim
    w = res.final_params[0, :d]
    stats, passes = o.reset_buffers(w.expand(3, d).contiguous(), torch.arange(3))
    counts = o.counts
    assert torch.equal(passes, (counts + 7) // 8)  # batches of batch_size 8
    n = o.num_samples.unsqueeze(1)
    want = (stats.double() * n).sum(0) / n.sum()
    torch.testing.assert_close(res.final_params[0, d:].double(), want, rtol=0, atol=1e-6)
    # the statistics do not ride with the models; the reset exchange carries them
    h = 32
    assert res.totals.by_kind == {
        "model": [3, 3 * (d * 4 + h)],
        "update": [3, 3 * (d * 4 + 4 + h)],
        "bn_reset": [3, 3 * (d * 4 + h)],
        "bn_stats": [3, 3 * (bd * 4 + 4 + h)],
    }
    assert res.counters.as_dict()["forwards"] == int(passes.sum())
    _, ref, _ = run(fedavg(BATCH_STATS))
    assert torch.equal(ref.final_params, res.final_params[:, :d])


def test_dsgd_bn_reset_recomputes_each_node_s_statistics_on_its_own_data() -> None:
    plan, res, _ = run(dsgd(bn_reset=True, variant="cta"))
    o = oracle_of(plan, 4)
    d = o.dim
    stats, _ = o.reset_buffers(res.final_params[:, :d].contiguous(), torch.arange(4))
    assert torch.equal(res.final_params[:, d:], stats)
    assert res.totals.by_kind["model"][1] == 8 * (d * 4 + 32)  # the parameters only


@pytest.mark.parametrize("algo", ["fedavg", "dsgd"])
def test_resumed_run_equals_an_uninterrupted_one(tmp_path: Path, monkeypatch, algo: str) -> None:
    raw = (fedavg if algo == "fedavg" else dsgd)(rounds=5)
    raw["output"] = {"checkpoint_every": 2}
    raw["eval"] = {"every": 1}
    cls = FedAvg if algo == "fedavg" else DSGD
    ref, resumed = crash_and_resume(validate(raw), cls, 3, tmp_path, monkeypatch)
    assert run_records(resumed) == run_records(ref)
    a, b = (json.loads((p / "summary.json").read_text()) for p in (resumed, ref))
    assert a["params_sha256"] == b["params_sha256"]
    assert a["buf_dim"] == 14 and a["dim"] == b["dim"] == 319


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            experiment(algorithm={"name": "monna"}, problem=BN),
            "algorithm.name: algorithm 'monna' does not move model buffers, but problem "
            "'digits_model' keeps BatchNorm running statistics per node (problem.batchnorm: "
            "running, 14 floats per node) that must travel, average and checkpoint with the "
            "parameters. Fix: set problem.batchnorm: batch_stats (every batch normalised with "
            "its own statistics), or use an algorithm that moves them: dimat, dsgd, fedavg",
        ),
        (
            fedavg(aggregator="median"),
            "algorithm.aggregator: fedavg averages the clients' BatchNorm running statistics "
            "with the mean only, but the server applies 'median'",
        ),
        (
            fedavg(BATCH_STATS, bn_reset=True),
            "algorithm.bn_reset: true recomputes BatchNorm running statistics, but problem "
            "'digits_model' keeps none; set problem.batchnorm: running",
        ),
        (
            dsgd({"name": "digits_mlp"}, bn_reset=True),
            "algorithm.bn_reset: true recomputes BatchNorm running statistics, but problem "
            "'digits_mlp' keeps none",
        ),
    ],
    ids=["non-mover", "robust-rule", "fedavg-reset-without-stats", "dsgd-reset-without-stats"],
)
def test_refusals_name_the_algorithm_and_the_fix(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        compile_plan(validate(raw))
    assert message in str(err.value)

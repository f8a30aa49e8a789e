"""DIFF2-GD, DP-GD and distributed DP-SGD: the spec's sanity tests (diff2.md §4.11) at
the algorithm level, exact counts, the privacy ledger and the refusals."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import experiment, run

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.errors import ConfigError
from fedopt.privacy.accountant import GaussianRounds, epsilon_spent
from fedopt.problems import PROBLEMS

P = 5
LSQ = {
    "name": "least_squares",
    "dim": 4,
    "samples_per_node": 40,
    "heterogeneity": 1.0,
    "noise": 0.5,
    "dtype": "float64",
}


def _raw(algorithm: dict, rounds: int = 12, problem: dict | None = None, **kw: object) -> dict:
    return experiment(
        topology={"name": "star", "n": P + 1},
        algorithm=algorithm,
        problem=problem or LSQ,
        stop={"rounds": rounds},
        eval={"every": 1},
        **kw,
    )


def _oracle(plan):
    cfg = plan.config
    n = len(plan.data_nodes)
    return PROBLEMS.get(cfg.problem.name).build(
        cfg.problem,
        seed=cfg.seed,
        data_ranks=torch.arange(n),
        num_data_nodes=n,
        device=torch.device("cpu"),
    )


def _gd(plan, lr: float, rounds: int) -> torch.Tensor:
    """Full-batch GD on f = (1/P) sum_p f_p from the run's initial point."""
    o = _oracle(plan)
    rows = torch.arange(len(plan.data_nodes))
    x = o.init_params(rows[:1])[0].to(torch.float64)
    for _ in range(rounds):
        x = x - lr * o.full_grad(x.expand(len(rows), -1), rows).mean(0)
    return x


NOISELESS = {"epsilon": math.inf, "clip_grad": math.inf, "clip_diff": math.inf}


@pytest.mark.parametrize("tau", [0.0, 0.25, 0.5, 1.0])
def test_noiseless_diff2_is_full_batch_gd(tau: float) -> None:
    plan, result, _ = run(_raw({"name": "diff2", "lr": 0.2, "tau": tau, **NOISELESS}, rounds=12))
    ref = _gd(plan, 0.2, 12)
    assert torch.allclose(result.final_model.to(torch.float64), ref, rtol=0, atol=1e-10)


def test_noiseless_dp_sgd_with_every_sample_is_full_batch_gd() -> None:
    algo = {"name": "dp_sgd", "lr": 0.2, "epsilon": math.inf, "clip": math.inf}
    plan, result, _ = run(_raw({**algo, "sample_rate": 1.0}, rounds=10))
    ref = _gd(plan, 0.2, 10)
    assert torch.allclose(result.final_model.to(torch.float64), ref, rtol=0, atol=1e-12)


def test_tau_zero_is_dp_gd_bit_for_bit() -> None:
    common = {"lr": 0.2, "epsilon": 3.0, "clip_grad": 2.0}
    _, a, _ = run(_raw({"name": "diff2", "tau": 0.0, **common}))
    _, b, _ = run(_raw({"name": "dp_gd", **common}))
    assert torch.equal(a.final_model, b.final_model)
    assert a.derived["sigma1"] == b.derived["sigma1"]
    assert a.ledgers == b.ledgers


def test_the_noise_is_drawn_at_the_server_with_its_own_purpose() -> None:
    """Same data and step: a private run differs from the noiseless one, two seeds give
    two noise streams, and the same seed gives the same bits."""
    base = {"name": "diff2", "lr": 0.2, "tau": 0.25, "clip_grad": 5.0, "clip_diff": 5.0}
    _, quiet, _ = run(_raw({**base, "epsilon": math.inf}))
    _, noisy, _ = run(_raw({**base, "epsilon": 2.0}))
    _, again, _ = run(_raw({**base, "epsilon": 2.0}))
    assert not torch.equal(quiet.final_model, noisy.final_model)
    assert torch.equal(noisy.final_model, again.final_model)


def test_counts_messages_and_per_sample_gradients_exactly() -> None:
    rounds, tau = 12, 0.25  # T = 3: restarts at 0, 3, 6, 9
    _, result, _ = run(_raw({"name": "diff2", "lr": 0.2, "tau": tau}, rounds=rounds))
    n = LSQ["samples_per_node"]
    restarts = math.ceil(rounds / 3)
    last = result.records[-1]
    assert last["per_sample_gradients_total"] == P * n * (restarts + 2 * (rounds - restarts))
    assert result.totals.messages == 2 * P * rounds
    assert result.derived["period_T"] == 3 and result.derived["restart_rounds"] == restarts
    rec = last["ledgers"]["privacy"]
    assert rec["rounds"] == {"restart": restarts, "difference": rounds - restarts}


def test_ledger_records_the_accountants_epsilon_every_round() -> None:
    rounds = 12
    _, result, _ = run(
        _raw({"name": "diff2", "lr": 0.2, "tau": 0.25, "epsilon": 4.0}, rounds=rounds)
    )
    z1, z2 = result.derived["z1"], result.derived["z2"]
    eps = [r["ledgers"]["privacy"]["epsilon_rdp"] for r in result.records[1:]]
    assert eps == sorted(eps) and eps[-1] <= 4.0
    r = rounds  # the last record: every round spent
    restarts = math.ceil(r / 3)
    want = epsilon_spent(
        [GaussianRounds(z1, restarts), GaussianRounds(z2, r - restarts)], 1e-5, "rdp"
    )
    assert eps[-1] == pytest.approx(want, rel=1e-9)
    assert result.ledgers["privacy"]["threat_model"] == "central"


def test_dp_sgd_counts_the_sampled_per_sample_gradients() -> None:
    algo = {"name": "dp_sgd", "lr": 0.2, "epsilon": 5.0, "clip": 2.0, "sample_rate": 0.25}
    _, result, _ = run(_raw(algo, rounds=8))
    total = result.records[-1]["per_sample_gradients_total"]
    expected = 0.25 * P * LSQ["samples_per_node"] * 8
    assert 0.7 * expected < total < 1.3 * expected  # Poisson: 400 draws of rate 1/4
    assert result.ledgers["privacy"]["epsilon_rdp"] <= 5.0


def test_local_noise_is_sqrt_p_times_larger_per_client_and_ledger_says_local() -> None:
    base = {"name": "dp_gd", "lr": 0.2, "epsilon": 2.0, "clip_grad": 2.0}
    _, central, _ = run(_raw(base))
    _, local, _ = run(_raw({**base, "threat_model": "local"}))
    assert local.ledgers["privacy"]["threat_model"] == "local"
    assert not torch.equal(central.final_model, local.final_model)


@pytest.mark.parametrize(
    ("algorithm", "match"),
    [
        ({"name": "diff2", "epsilon": 0}, ("algorithm.epsilon",)),
        ({"name": "diff2", "epsilon": -1}, ("algorithm.epsilon",)),
        ({"name": "diff2", "delta": 1.0}, ("algorithm.delta",)),
        ({"name": "diff2", "delta": 0.0}, ("algorithm.delta",)),
        ({"name": "diff2", "tau": 1.5}, ("algorithm.tau",)),
        ({"name": "diff2", "tau": -0.1}, ("algorithm.tau",)),
        ({"name": "diff2", "clip_grad": 0}, ("algorithm.clip_grad",)),
        ({"name": "diff2", "clip_diff": -2}, ("algorithm.clip_diff",)),
        ({"name": "dp_sgd", "clip": 0}, ("algorithm.clip",)),
        ({"name": "dp_sgd", "sample_rate": 0}, ("algorithm.sample_rate",)),
    ],
)
def test_bad_privacy_parameters_are_refused(algorithm: dict, match: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as err:
        compile_plan(validate(_raw(algorithm)))
    for m in match:
        assert m in str(err.value)


def test_a_problem_without_per_sample_gradients_is_refused() -> None:
    raw = _raw({"name": "diff2"}, problem={"name": "quadratic", "dim": 3})
    with pytest.raises(ConfigError, match="per_sample_gradients"):
        compile_plan(validate(raw))


def test_diff2_needs_every_client_every_round() -> None:
    raw = _raw({"name": "diff2"}, faults={"drop": 0.1})
    with pytest.raises(ConfigError, match="every client every round"):
        compile_plan(validate(raw))


def test_a_noise_multiplier_the_accountant_cannot_accept_is_refused() -> None:
    algo = {"name": "dp_sgd", "epsilon": 1.0, "noise_multiplier": 0.3, "sample_rate": 0.5}
    with pytest.raises(ConfigError) as err:
        compile_plan(validate(_raw(algo, rounds=200)))
    assert "algorithm.noise_multiplier" in str(err.value) and "over the budget 1" in str(err.value)


def test_stop_rounds_is_required() -> None:
    raw = _raw({"name": "diff2"})
    raw["stop"] = {"rounds": None, "sim_time_s": 10.0}
    with pytest.raises(ConfigError, match=r"stop\.rounds"):
        compile_plan(validate(raw))


FC10 = {"name": "fc10_regression", "samples": 2000, "data_seed": 0}


@pytest.mark.parametrize("tau", [0.0, 0.1, 0.4])
def test_noiseless_diff2_on_fc10_is_full_batch_gd_to_1e10(tau: float) -> None:
    """Spec §4.11.2 on the paper's network: the recursion telescopes (float64)."""
    rounds = 20
    algo = {"name": "diff2", "lr": 0.1, "tau": tau, **NOISELESS}
    plan, result, _ = run(_raw(algo, rounds=rounds, problem=FC10))
    ref = _gd(plan, 0.1, rounds)
    assert torch.allclose(result.final_model, ref, rtol=0, atol=1e-10)
    assert float((result.final_model - _gd(plan, 0.1, 0)).norm()) > 1e-3  # it moved


def test_noise_levels_follow_the_calibration_on_fc10() -> None:
    """sigma1, sigma2, z1, z2 in summary.json are the spec's closed form for P = 5."""
    from fedopt.privacy.calibration import diff2_calibration

    algo = {"name": "diff2", "lr": 0.1, "tau": 0.1, "epsilon": 3.0}
    plan, result, _ = run(_raw(algo, rounds=20, problem=FC10))
    n_min = int(_oracle(plan).num_samples.min())
    assert n_min == 1600 // P  # 2000 rows, 80% train, round-robin over 5 workers
    cal = diff2_calibration(3.0, 1e-5, 20, 2, P, n_min)
    assert result.derived["sigma1"] == cal.sigma1 and result.derived["sigma2"] == cal.sigma2
    assert result.derived["z1"] == pytest.approx(cal.sigma1 * P * n_min / 2, rel=1e-15)


def test_a_resumed_diff2_run_equals_the_uninterrupted_one(tmp_path, monkeypatch) -> None:
    """The server's v, x_{r-1}, the clients' last model and the ledger are checkpointed."""
    import json

    from helpers import crash_and_resume

    from fedopt.algorithms.diff2 import Diff2

    raw = _raw({"name": "diff2", "lr": 0.2, "tau": 0.3, "epsilon": 4.0}, rounds=10)
    raw["output"] = {"checkpoint_every": 4}
    ref, resumed = crash_and_resume(validate(raw), Diff2, 6, tmp_path, monkeypatch)
    a = json.loads((resumed / "summary.json").read_text())
    b = json.loads((ref / "summary.json").read_text())
    assert a["params_sha256"] == b["params_sha256"]
    assert a["ledgers"] == b["ledgers"] and a["ledgers"]["privacy"]["rounds"]["restart"] == 4


@pytest.mark.parametrize(
    "algorithm",
    [
        {"name": "dp_gd", "clip_grad": 2.0},
        {"name": "diff2", "tau": 0.5, "clip_grad": 2.0, "clip_diff": 2.0},
        {"name": "dp_sgd", "clip": 2.0, "sample_rate": 0.5, "noise_multiplier": 1.5},
    ],
    ids=["dp_gd", "diff2", "dp_sgd"],
)
def test_audit_noise_scale_scales_the_drawn_noise_not_the_ledger(algorithm: dict) -> None:
    """One round from the same point: x_1 = x_0 - lr (g + s xi), so the step's noise part
    is linear in s; the ledger and the calibrated constants do not move."""
    common = {"lr": 0.2, "epsilon": 3.0, "noise_seed": 4, **algorithm}
    runs = {s: run(_raw({**common, "audit_noise_scale": s}, rounds=1))[1] for s in (0.0, 0.5, 1.0)}
    x0, half, full = (runs[s].final_model.to(torch.float64) for s in (0.0, 0.5, 1.0))
    assert float(torch.linalg.vector_norm(full - x0)) > 1e-3
    torch.testing.assert_close(half - x0, 0.5 * (full - x0), rtol=0, atol=1e-12)
    assert runs[0.5].ledgers == runs[1.0].ledgers
    assert runs[0.5].derived.pop("audit_noise_scale") == 0.5
    assert "audit_noise_scale" not in runs[1.0].derived
    assert runs[0.5].derived == runs[1.0].derived

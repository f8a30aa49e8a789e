"""The empirical privacy audit (issue 11, item 4): honest mechanisms stay below their
accountant, a mechanism drawing a tenth of its calibrated noise is caught (the test of
the test), and the pieces (worlds, trials, statistic, CLI) do what they say."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml
from helpers import experiment

from fedopt.cli import main
from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.engine.local import run_local
from fedopt.errors import ConfigError
from fedopt.privacy.audit import (
    AuditSettings,
    auditable,
    canary_kind,
    carrying_rounds,
    compile_worlds,
    format_table,
    run_audit,
    run_trial,
    statistic,
    world_problems,
)
from fedopt.privacy.lower_bound import resolution

LOGISTIC = {"name": "logistic", "dim": 3, "samples_per_node": 20, "batch_size": 0}
TARGET = 2.0


def tiny(algorithm: dict | None = None, rounds: int = 3) -> dict:
    """DP-GD on logistic regression, P = 2 clients x 20 samples, dim 3 (ms per trial)."""
    algo = {"name": "dp_gd", "lr": 0.5, "epsilon": TARGET, "clip_grad": 1.0}
    return experiment(
        topology={"name": "star", "n": 3},
        algorithm={**algo, **(algorithm or {})},
        problem=LOGISTIC,
        stop={"rounds": rounds},
    )


# ----------------------------------------------------------------------------- the audit


@pytest.fixture(scope="module")
def honest():
    return run_audit(tiny(), AuditSettings(trials=200))


@pytest.fixture(scope="module")
def broken():
    return run_audit(tiny(), AuditSettings(trials=200, noise_scale=0.1))


def test_the_honest_mechanism_stays_below_its_accountant(honest) -> None:
    r = honest
    assert r.test.resolution == pytest.approx(resolution(100, 1e-5))
    assert r.test.resolution > TARGET + 1
    assert r.epsilon_pld < r.epsilon_rdp <= TARGET
    assert r.epsilon_lb < r.epsilon_accountant == r.epsilon_pld
    assert not r.violation and r.verdict == "lower bound below the accountant: consistent"
    assert r.rounds == r.carrying_rounds == 3 and r.canary == "replace"
    assert len(r.statistics_in) == len(r.statistics_out) == 200
    # in - out: about the noiseless 0.140 (standard error 0.036 with 200 + 200 trials)
    shift = np.mean(r.statistics_in) - np.mean(r.statistics_out)
    assert shift == pytest.approx(0.140, abs=0.12)


def test_a_tenth_of_the_noise_is_caught(broken, honest) -> None:
    r = broken
    assert r.epsilon_rdp == honest.epsilon_rdp  # the ledger still claims the calibration
    assert r.epsilon_lb > r.epsilon_rdp > r.epsilon_accountant
    assert r.violation and r.verdict == "VIOLATION"
    assert r.epsilon_lb <= r.test.resolution
    table = format_table(r)
    assert "VIOLATION" in table and "noise scale          0.1 (BROKEN" in table


def test_the_report_json_has_every_figure(honest) -> None:
    d = honest.to_dict()
    for key in ("trials", "epsilon_rdp", "epsilon_pld", "epsilon_lb", "resolution", "fpr"):
        assert key in d
    assert d["false_positives"] + d["false_negatives"] > 0
    assert d["fpr_upper"] >= d["fpr"] and d["fnr_upper"] >= d["fnr"]
    assert d["alpha"] == 0.05 and d["delta"] == 1e-5
    json.dumps(d, allow_nan=False)  # strict JSON (an infinite threshold is null)


# ----------------------------------------------------------------------------- the pieces


def test_a_trial_is_the_real_run_with_that_noise_seed() -> None:
    worlds = compile_worlds(tiny(), AuditSettings(trials=4))
    models, worker = run_trial(worlds.plans[0], 7, torch.device("cpu"))
    raw = tiny()
    raw["problem"] = world_problems(raw["problem"], "replace", 3)[0]
    raw["algorithm"]["noise_seed"] = 7
    result, _ = run_local(compile_plan(validate(raw)))
    assert torch.equal(models[-1].to(result.final_model.dtype), result.final_model)
    assert models.shape == (4, 3)
    assert worker.ctx.ledgers["privacy"].counts == {"restart": 3}


def test_without_noise_the_worlds_differ_by_the_canarys_2c_per_round() -> None:
    """The mirror pair moves v_r by 2C/(P n) = 0.05 along u in each of the 3 rounds; the
    data's own gradient pulls x back a little (logistic curvature), hence 0.140 < 0.15."""
    worlds = compile_worlds(tiny(), AuditSettings(trials=4, noise_scale=0.0))
    u = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    t_in, t_out = (
        statistic(run_trial(p, 0, torch.device("cpu"))[0], u, 0.5, np.ones(3, dtype=bool))
        for p in worlds.plans
    )
    assert t_in - t_out == pytest.approx(0.14016, abs=2e-5)
    m_in, _ = run_trial(worlds.plans[0], 0, torch.device("cpu"))
    m_in2, _ = run_trial(worlds.plans[0], 99, torch.device("cpu"))
    assert torch.equal(m_in, m_in2)  # no noise: the seed does not matter


def test_world_problems_replace_mirrors_and_add_empties() -> None:
    d_in, d_out = world_problems(LOGISTIC, "replace", 3)
    assert d_in == {"name": "canary", "inner": LOGISTIC, "present": True}
    assert d_out == {**d_in, "direction": [-1.0, -0.0, -0.0]}
    own = {"name": "canary", "inner": LOGISTIC, "node": 1, "direction": [3.0, 4.0, 0.0]}
    d_in, d_out = world_problems(own, "replace", 3)
    assert d_in["node"] == 1 and d_out["direction"] == [-3.0, -4.0, -0.0]
    d_in, d_out = world_problems({**own, "absent": "inner"}, "add", 3)
    assert d_out == {**own, "present": False, "absent": "empty"} and "absent" not in d_in


def test_the_canary_kind_follows_the_accountants_adjacency() -> None:
    assert set(auditable()) >= {"diff2", "dp_gd", "dp_sgd"}
    assert canary_kind("dp_gd", None) == "replace" and canary_kind("diff2", "add") == "add"
    assert canary_kind("dp_sgd", None) == "add"
    with pytest.raises(ConfigError, match=r"--canary replace: the accountant of 'dp_sgd'"):
        canary_kind("dp_sgd", "replace")


def test_carrying_rounds_and_the_statistic() -> None:
    assert carrying_rounds({"period_T": 3}, 7).tolist() == [1, 0, 0, 1, 0, 0, 1]
    assert carrying_rounds({"period_T": 1}, 2).tolist() == [1, 1]
    assert carrying_rounds({"noise_multiplier": 1.0}, 3).tolist() == [1, 1, 1]
    models = torch.tensor([[0.0, 0.0], [-1.0, 5.0], [-1.5, 0.0], [-3.5, 1.0]])
    u = torch.tensor([1.0, 0.0], dtype=torch.float64)
    # v_r . u = (x_r - x_{r+1}) . u / lr = 2, 1, 4 at lr 0.5
    assert statistic(models, u, 0.5, np.array([True, True, True])) == 7.0
    assert statistic(models, u, 0.5, np.array([True, False, True])) == 6.0


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (experiment(), r"algorithm\.name: fedopt audit runs a differentially private"),
        (tiny({"epsilon": math.inf}), r"algorithm\.epsilon: inf claims no privacy"),
        (
            {**tiny(), "problem": {"name": "quadratic"}},
            r"problem\.name: algorithm 'dp_gd' needs capability 'per_sample_gradients'",
        ),
    ],
    ids=["not_private", "no_claim", "no_per_sample"],
)
def test_what_cannot_be_audited_is_refused(raw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        run_audit(raw, AuditSettings(trials=4))


def test_a_diverged_trial_stops_the_audit(monkeypatch) -> None:
    import fedopt.privacy.audit as audit
    from fedopt.errors import RunDiverged

    monkeypatch.setattr(audit, "statistic", lambda *a: math.nan)
    with pytest.raises(RunDiverged, match="audit trial with noise_seed 0: the released"):
        run_audit(tiny(), AuditSettings(trials=4))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"trials": 3}, r"--trials: must be an integer >= 4"),
        ({"noise_scale": -1.0}, r"--noise-scale: must be a finite number >= 0"),
        ({"alpha": 1.0}, r"--alpha: must be a number in \(0, 1\)"),
        ({"seed": -1}, r"--seed: must be an integer in \[0, "),
        ({"canary": "swap"}, r"--canary: must be replace or add"),
    ],
)
def test_bad_settings_name_the_flag(kw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        AuditSettings(**kw)


def test_cli_audit_writes_json_and_exits_by_verdict(tmp_path, capsys) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny()))
    out = tmp_path / "audit"
    assert main(["audit", str(path), "--trials", "20", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "privacy audit: dp_gd on logistic, canary replace" in text
    saved = json.loads((out / "audit.json").read_text())
    assert saved["trials"] == 20 and len(saved["statistics_in"]) == 20
    assert saved["resolution"] == pytest.approx(resolution(10, 1e-5))
    broken = ["audit", str(path), "--trials", "60", "--noise-scale", "0", "--quiet"]
    assert main(broken) == 1  # no noise at all: VIOLATION (resolution 2.1 with 30 + 30)
    assert "VIOLATION" in capsys.readouterr().out
    assert main(["audit", str(path), "--trials", "2"]) == 2
    assert "error: --trials: must be an integer >= 4" in capsys.readouterr().err
    assert main(["audit", str(path), "--canary", "add", "--set", "algorithm.name=dsgd"]) == 2


# ----------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_diff2_honest_audit_stays_below_its_accountant() -> None:
    """DIFF2 with T = 3 over R = 6: the restarts (rounds 0 and 3) carry the canary."""
    raw = tiny({"name": "diff2", "tau": 0.5, "clip_diff": 1.0}, rounds=6)
    r = run_audit(raw, AuditSettings(trials=400))
    assert r.carrying_rounds == 2 and r.test.resolution > TARGET + 1.5
    assert r.epsilon_lb < r.epsilon_accountant <= TARGET and not r.violation


@pytest.mark.slow
def test_diff2_with_a_tenth_of_the_noise_is_caught() -> None:
    raw = tiny({"name": "diff2", "tau": 0.5, "clip_diff": 1.0}, rounds=6)
    r = run_audit(raw, AuditSettings(trials=400, noise_scale=0.1))
    assert r.violation and r.epsilon_lb > r.epsilon_rdp


@pytest.mark.slow
def test_dp_sgd_honest_audit_with_the_add_canary() -> None:
    raw = tiny({"name": "dp_sgd", "clip": 1.0, "sample_rate": 0.25}, rounds=3)
    del raw["algorithm"]["clip_grad"]
    r = run_audit(raw, AuditSettings(trials=400))
    assert r.canary == "add" and r.epsilon_lb < r.epsilon_accountant and not r.violation


@pytest.mark.slow
def test_dp_sgd_without_sampling_with_a_tenth_of_the_noise_is_caught() -> None:
    """The add canary against an empty slot (q = 1: no sampling noise in the statistic;
    at q = 0.25 the sum over rounds does not see the broken variant, see the README)."""
    raw = tiny({"name": "dp_sgd", "clip": 1.0, "sample_rate": 1.0}, rounds=3)
    del raw["algorithm"]["clip_grad"]
    r = run_audit(raw, AuditSettings(trials=200, noise_scale=0.1))
    assert r.canary == "add" and r.violation and r.epsilon_lb > r.epsilon_rdp

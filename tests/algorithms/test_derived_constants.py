"""summary.json records the constants each algorithm derived, as ``fedopt topology`` prints them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from helpers import experiment

from fedopt.cli import main

QUAD = {"name": "quadratic", "dim": 5, "mu": 0.5, "L": 2.0}


def summary_of(raw: dict, tmp_path: Path, name: str = "run") -> dict:
    """``fedopt run`` on ``raw``; the exit code must be 0; return summary.json."""
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / name
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    return json.loads((out / "summary.json").read_text())


def topology_printout(capsys: pytest.CaptureFixture, *args: str) -> dict[str, str]:
    """``fedopt topology ...`` as printed: ``{key: shown value}``."""
    capsys.readouterr()
    assert main(["topology", *args]) == 0
    rows = [line.split(None, 1) for line in capsys.readouterr().out.splitlines()]
    return {r[0]: r[1].strip() for r in rows if len(r) == 2}


def shown(value: float) -> str:
    """A float as ``fedopt topology`` prints it."""
    return f"{value:.6g}"


def test_dadao_on_a_ring_records_the_chi_fedopt_topology_prints(tmp_path, capsys) -> None:
    n = 8
    raw = experiment(
        topology={"name": "ring", "n": n},
        algorithm={"name": "dadao"},
        problem=QUAD,
        stop={"sim_time_s": 0.5},
    )
    derived = summary_of(raw, tmp_path)["derived"]
    printed = topology_printout(capsys, "ring", "--n", str(n))
    for key in ("chi1", "chi2", "lambda_mix"):
        assert shown(derived[key]) == printed[f"dadao_{key}"]
    # closed forms on the ring: lambda_2(L) = 2 - 2 cos(2 pi / n), edge resistance (n-1)/n
    chi1 = n / (2 - 2 * math.cos(2 * math.pi / n))
    assert derived["chi1"] == pytest.approx(chi1, rel=1e-12)
    assert derived["chi2"] == pytest.approx((n - 1) / 2, rel=1e-12)
    assert derived["lambda_mix"] == pytest.approx(math.sqrt(2 * chi1 * (n - 1) / 2), rel=1e-12)
    assert (round(chi1, 2), round(derived["lambda_mix"], 2)) == (13.66, 9.78)  # spec table
    assert derived["lambda_mix_threshold"] == derived["lambda_mix"]
    assert (derived["mu"], derived["L"]) == (0.5, 2.0)
    assert "switch_every" not in derived


def test_time_varying_dadao_records_the_worst_case_fedopt_topology_prints(tmp_path, capsys) -> None:
    topo = {"name": "random_geometric_sequence", "n": 8, "params": {"count": 5}}
    raw = experiment(topology=topo, algorithm={"name": "dadao"}, problem=QUAD)
    raw["stop"] = {"sim_time_s": 0.05}
    derived = summary_of(raw, tmp_path)["derived"]
    cfg = tmp_path / "topo.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    printed = topology_printout(capsys, str(cfg))
    assert shown(derived["chi1"]) == printed["dadao_chi1_worst"]
    assert shown(derived["chi2"]) == printed["dadao_chi2_worst"]
    assert shown(derived["lambda_mix"]) == printed["dadao_lambda_mix_worst"]
    assert shown(derived["switch_every"]) == printed["dadao_switch_every"]
    assert derived["switch_every"] == pytest.approx(1 / derived["chi1"], rel=1e-12)
    assert derived["graphs"] == 5 and printed["sequence_members"] == "5"
    # the union graph's values are labelled as such, and differ from the worst case
    assert float(printed["union_dadao_chi1"]) < derived["chi1"]
    assert "dadao_chi1" not in printed and printed["dadao_accepts"] == "True"


def test_schedules_of_disconnected_members_report_an_infinite_worst_chi1(capsys) -> None:
    printed = topology_printout(capsys, "random_matching", "--n", "8")
    assert printed["dadao_chi1_worst"] == "inf" and printed["dadao_accepts"] == "False"
    assert float(printed["union_dadao_chi1"]) < math.inf


@pytest.mark.parametrize("name", ["adom_plus", "msda"])
def test_adom_plus_and_msda_record_mu_and_l(tmp_path, name: str) -> None:
    raw = experiment(topology={"name": "ring", "n": 8}, algorithm={"name": name}, problem=QUAD)
    derived = summary_of(raw, tmp_path)["derived"]
    assert (derived["mu"], derived["L"]) == (0.5, 2.0)  # the problem's bounds
    if name == "msda":  # gamma = lambda_min / lambda_max of the ring's Laplacian
        gamma = (2 - 2 * math.cos(2 * math.pi / 8)) / 4
        assert derived["gamma"] == pytest.approx(gamma, rel=1e-12)
        assert derived["K"] == math.floor(1 / math.sqrt(gamma)) == 2
    else:
        assert derived["consensus_steps"] == 1 and derived["chi"] == derived["graph_chi"]
        assert derived["tau2"] == pytest.approx(math.sqrt(0.5 / 2.0), rel=1e-12)


def test_robust_algorithms_record_f_and_the_rule(tmp_path) -> None:
    byz = {"count": 2, "attack": {"name": "sign_flip"}}
    monna = experiment(
        topology={"name": "complete", "n": 11},
        algorithm={"name": "monna", "lr_decay_every": 50},
        byzantine=byz,
    )
    derived = summary_of(monna, tmp_path, "monna")["derived"]
    assert derived["f"] == derived["aggregator.f"] == 2 and derived["aggregator"] == "nna"
    assert (derived["received"], derived["honest_picks"]) == (9, 6)
    assert derived["lr_schedule"] == "0.05 / (1 + floor(t / 50))"
    fed = experiment(
        topology={"name": "star", "n": 13},
        algorithm={"name": "fedavg", "aggregator": "centered_clipping"},
        byzantine=byz,
    )
    derived = summary_of(fed, tmp_path, "fedavg")["derived"]
    assert derived["aggregator"] == "centered_clipping" and derived["aggregator.f"] == 2
    assert {"aggregator.tau", "aggregator.iterations"} <= set(derived)
    assert (derived["clients"], derived["sampled_clients"], derived["byzantine"]) == (12, 12, 2)


def test_dsgd_records_its_lr_schedule(tmp_path) -> None:
    raw = experiment(algorithm={"name": "dsgd", "lr": 0.2, "lr_decay": 0.02})
    assert summary_of(raw, tmp_path)["derived"] == {"lr_schedule": "0.2 / (1 + 0.02 t)"}

"""Every experiment file validates (topology compiled too); the small ones run; every
sweep file (``*.sweep.yaml``) validates cell by cell."""

from pathlib import Path

import pytest

from fedopt.config import load_experiment
from fedopt.engine.compile import compile_plan
from fedopt.run import run_experiment

ALL = sorted((Path(__file__).resolve().parents[1] / "experiments").rglob("*.yaml"))
EXPERIMENTS = [p for p in ALL if not p.name.endswith(".sweep.yaml")]
SWEEPS = [p for p in ALL if p.name.endswith(".sweep.yaml")]
SMALL = {
    "quickstart.yaml",
    "fedavg_quadratic_star.yaml",
    "dsgd_custom_topology.yaml",
    "dsgd_lossy_campus.yaml",
}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_validates(path: Path) -> None:
    cfg = load_experiment(path)
    plan = compile_plan(cfg, base_dir=path.parent)
    assert plan.topology.n >= 2


@pytest.mark.parametrize("path", [p for p in EXPERIMENTS if p.name in SMALL], ids=lambda p: p.name)
def test_small_experiment_runs_and_improves(path: Path, tmp_path: Path) -> None:
    cfg = load_experiment(path)
    out = run_experiment(cfg, base_dir=path.parent, out_dir=tmp_path / "run", progress=False)
    import json

    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["loss"] < records[0]["loss"]


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.parent.name + "/" + p.name)
def test_sweep_file_validates(path: Path) -> None:
    from fedopt.sweep import load_sweep
    from fedopt.sweep.expand import expand, prepare

    spec = load_sweep(path)
    assert len(prepare(spec, expand(spec))) >= 2

"""An interrupted run resumed from its checkpoint ends exactly as an uninterrupted one."""

import json
from pathlib import Path

import pytest
from helpers import experiment

from fedopt.algorithms.dsgd import DSGD
from fedopt.config import validate
from fedopt.errors import ConfigError
from fedopt.run import checkpoint_path, run_experiment

RAW = experiment(
    topology={"name": "ring", "n": 8},
    algorithm={"name": "dsgd", "lr": 0.1, "local_steps": 2},
    problem={
        "name": "logistic",
        "dim": 6,
        "samples_per_node": 30,
        "batch_size": 4,
        "generator": "seeded",
    },
    network={"loss": 0.3},
    compute={"straggler_prob": 0.3},
    stop={"rounds": 10},
    eval={"every": 2},
    output={"checkpoint_every": 3},
)


def records(path: Path) -> list[dict]:
    lines = (path / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "wall_time_s"} for x in lines]


def test_resume_after_a_crash_gives_identical_results(tmp_path: Path, monkeypatch) -> None:
    cfg = validate(RAW)
    ref = run_experiment(cfg, out_dir=tmp_path / "ref", progress=False)

    original = DSGD.round

    def crash_at_7(self, state, t):
        if t == 7:
            raise KeyboardInterrupt("driver killed")
        return original(self, state, t)

    monkeypatch.setattr(DSGD, "round", crash_at_7)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, out_dir=out, progress=False)
    assert not out.exists() and checkpoint_path(out).is_file()  # round-6 checkpoint kept
    monkeypatch.setattr(DSGD, "round", original)
    resumed = run_experiment(cfg, out_dir=out, progress=False, resume=True)
    assert records(resumed) == records(ref)
    a = json.loads((resumed / "summary.json").read_text())
    b = json.loads((ref / "summary.json").read_text())
    for key in ("params_sha256", "bytes_total", "retransmissions_total", "sim_time_s"):
        assert a[key] == b[key]
    assert not checkpoint_path(out).exists()  # removed after success


def test_resume_needs_a_matching_checkpoint(tmp_path: Path) -> None:
    cfg = validate(RAW)
    with pytest.raises(ConfigError, match="no checkpoint"):
        run_experiment(cfg, out_dir=tmp_path / "r", progress=False, resume=True)
    import torch

    torch.save({"config_sha256": "other"}, checkpoint_path(tmp_path / "r"))
    with pytest.raises(ConfigError, match="different experiment"):
        run_experiment(cfg, out_dir=tmp_path / "r", progress=False, resume=True)

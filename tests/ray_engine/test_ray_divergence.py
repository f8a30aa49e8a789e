"""A diverging run on the Ray engine stops like a local one and is not restarted."""

import json
import logging
from pathlib import Path

import pytest
from helpers import experiment

from fedopt.config import validate
from fedopt.errors import RunDiverged
from fedopt.run import checkpoint_path, run_experiment


def test_ray_divergence_is_reported_not_restarted(ray_session, tmp_path: Path, caplog) -> None:
    raw = experiment(
        topology={"name": "ring", "n": 4},
        algorithm={"name": "dsgd", "lr": 50.0},
        problem={"name": "quadratic", "dim": 3},
        stop={"rounds": 500},
        output={"checkpoint_every": 2},
        engine={"kind": "ray", "threads": 1, "actors": 2, "max_restarts": 3},
    )
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="fedopt"):
        with pytest.raises(RunDiverged, match="diverged at round"):
            run_experiment(validate(raw), out_dir=out, progress=False)
    assert not [r for r in caplog.records if "restart" in r.getMessage()]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] == "diverged" and summary["diverged"]["nodes"] == [0, 1, 2, 3]
    assert not checkpoint_path(out).exists()

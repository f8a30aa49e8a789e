"""``fedopt bench dimat`` prints one JSON line with both trainings and every merge phase."""

import contextlib
import io
import json

import pytest

from fedopt.cli import main


def test_bench_dimat_small() -> None:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["bench", "dimat", "--nodes", "3", "--rounds", "1", "--repeats", "1"]) == 0
    rec = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert rec["dim"] == 1922 and rec["buf_dim"] == 48  # digits_cnn_bn [8, 16]
    assert rec["nodes"] == 3 and set(rec["train_step_s"]) == {"vmap", "loop"}
    assert rec["train_loop_over_vmap"] > 0
    phases = {"bn_reset_pairs", "features", "assignments", "permute_average", "bn_reset_merged"}
    assert set(rec["merge_phase_s"]) == phases
    assert sum(rec["merge_phase_share"].values()) == pytest.approx(1.0, abs=0.01)

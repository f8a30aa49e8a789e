"""``fedopt bench dimat`` runs and reports both trainings and every merge phase."""

import pytest

from fedopt.bench.dimat import bench_dimat


def test_bench_dimat_small() -> None:
    rec = bench_dimat(nodes=3, steps=1, repeats=1)
    assert rec["dim"] == 1922 and rec["buf_dim"] == 48  # digits_cnn_bn [8, 16]
    assert set(rec["train_step_s"]) == {"vmap", "loop"}
    assert rec["train_loop_over_vmap"] > 0
    phases = {"bn_reset_pairs", "features", "assignments", "permute_average", "bn_reset_merged"}
    assert set(rec["merge_phase_s"]) == phases
    assert sum(rec["merge_phase_share"].values()) == pytest.approx(1.0, abs=0.01)

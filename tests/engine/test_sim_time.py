"""Simulated time equals the link and compute models' prediction on hand-computed cases."""

import pytest
from helpers import experiment, run


def test_path_of_three_round_time_is_slowest_arrival() -> None:
    # dim 10 float32 -> 40 B payload + 32 B header = 72 B; 72 / 7200 B/s = 0.01 s transfer.
    # compute: node 0 and 2 take 0.1 s (speed 1), node 1 takes 0.05 s (speed 2).
    # arrivals: 0->1 at 0.1 + 0.01 + 0.01 = 0.12 (latest); so each round lasts 0.12 s.
    rounds = 5
    _, result, _ = run(
        experiment(
            topology={"name": "path", "n": 3},
            problem={"name": "quadratic", "dim": 10},
            network={"latency_s": 0.01, "bandwidth_Bps": 7200.0},
            compute={"step_time_s": 0.1, "speeds": [1.0, 2.0, 1.0]},
            stop={"rounds": rounds},
        )
    )
    assert result.sim_time_s == pytest.approx(0.12 * rounds, rel=1e-12)
    assert [r["sim_time_s"] for r in result.records] == pytest.approx(
        [0.12 * t for t in range(rounds + 1)], rel=1e-12
    )


def test_fedavg_round_time_is_broadcast_compute_upload() -> None:
    # broadcast 4*4+32 = 48 B at 4800 B/s: 0.01 s + 0.005 s latency
    # compute 3 steps * 0.02 s = 0.06 s; upload (4+1)*4+32 = 52 B: 52/4800 + 0.005 s
    _, result, _ = run(
        experiment(
            topology={"name": "star", "n": 4},
            algorithm={"name": "fedavg", "lr": 0.1, "local_steps": 3},
            problem={"name": "quadratic", "dim": 4},
            network={"latency_s": 0.005, "bandwidth_Bps": 4800.0},
            compute={"step_time_s": 0.02},
            stop={"rounds": 2},
        )
    )
    per_round = (0.005 + 48 / 4800) + 0.06 + (0.005 + 52 / 4800)
    assert result.sim_time_s == pytest.approx(2 * per_round, rel=1e-12)


def test_stop_by_simulated_time() -> None:
    _, result, _ = run(
        experiment(
            topology={"name": "ring", "n": 4},
            network={"latency_s": 0.5, "bandwidth_Bps": 1e12},
            compute={"step_time_s": 0.0},
            stop={"rounds": 100, "sim_time_s": 2.0},
        )
    )
    assert result.stop_reason == "sim_time"
    assert result.rounds == 4  # 0.5 s per round
    assert result.sim_time_s == pytest.approx(2.0)


def test_stragglers_slow_rounds_down_deterministically() -> None:
    base = {"step_time_s": 0.1}
    slow = {"step_time_s": 0.1, "straggler_prob": 0.5, "straggler_slowdown": 10.0}
    t_fast = run(experiment(compute=base, stop={"rounds": 20}))[1].sim_time_s
    t_slow = run(experiment(compute=slow, stop={"rounds": 20}))[1].sim_time_s
    t_slow2 = run(experiment(compute=slow, stop={"rounds": 20}))[1].sim_time_s
    assert t_slow == t_slow2
    # with 8 nodes and p=1/2, nearly every round has a straggler: ~10x the compute time
    assert t_slow > 5 * t_fast

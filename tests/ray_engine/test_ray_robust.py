"""Robust peer-to-peer learning under attack: the same bits and meters on Ray as locally."""

import copy

import torch
from helpers import experiment, run

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.run import execute

PROBLEM = {
    "name": "quadratic",
    "dim": 10,
    "mu": 1.0,
    "L": 1.0,
    "center": 3.0,
    "heterogeneity": 0.5,
    "noise_std": 1.0,
    "init_scale": 0.0,
    "dtype": "float64",
}


def test_monna_on_ray_equals_local(ray_session) -> None:
    raw = experiment(
        topology={"name": "complete", "n": 11},
        algorithm={"name": "monna", "lr": 0.05, "momentum": 0.9},
        problem=PROBLEM,
        stop={"rounds": 6},
        eval={"every": 3},
        byzantine={"count": 2, "attack": {"name": "alie"}},
    )
    _, local, _ = run(raw)
    ray_raw = copy.deepcopy(raw)
    ray_raw["engine"] = {"kind": "ray", "actors": 3, "threads": 1}
    out = execute(compile_plan(validate(ray_raw)))
    assert torch.equal(out.result.final_params, local.final_params)
    assert out.result.totals.by_kind == local.totals.by_kind
    h, f, n = 9, 2, 11
    assert local.totals.by_kind["byzantine"][0] == 6 * f * h
    assert local.totals.by_kind["model"][0] + local.totals.by_kind["model:late"][0] == 6 * (
        h * (n - 1)
    )
    assert local.totals.by_kind["model:late"][0] == 6 * h * f  # the f honest ones missed


def test_label_flipping_on_lossy_links_on_ray_equals_local(ray_session) -> None:
    """The all-gather meters at the receivers' actors, each draw keyed by its exchange."""
    raw = experiment(
        topology={"name": "complete", "n": 7},
        algorithm={"name": "learn", "lr": 0.1, "max_minibatches": 2},
        problem={"name": "logistic", "dim": 4, "samples_per_node": 10, "batch_size": 4},
        stop={"rounds": 3},
        eval={"every": 1},
        byzantine={"count": 2, "attack": {"name": "label_flip"}},
        network={"loss": 0.5},
    )
    _, local, _ = run(raw)
    ray_raw = copy.deepcopy(raw)
    ray_raw["engine"] = {"kind": "ray", "actors": 3, "threads": 1}
    out = execute(compile_plan(validate(ray_raw)))
    assert torch.equal(out.result.final_params, local.final_params)
    strip = [{k: v for k, v in r.items() if k != "wall_time_s"} for r in local.records]
    assert [{k: v for k, v in r.items() if k != "wall_time_s"} for r in out.result.records] == (
        strip
    )
    assert out.result.totals.by_kind == local.totals.by_kind
    assert local.totals.retransmissions > 0


def test_robust_fedavg_on_ray_equals_local(ray_session) -> None:
    raw = experiment(
        topology={"name": "star", "n": 13},
        algorithm={"name": "fedavg", "lr": 0.1, "local_steps": 2, "aggregator": "median"},
        problem={**PROBLEM, "mu": 0.5, "L": 2.0},
        stop={"rounds": 5},
        eval={"every": 5},
        byzantine={"count": 2, "attack": {"name": "alie"}},
        faults={"drop": 0.1},
    )
    _, local, _ = run(raw)
    ray_raw = copy.deepcopy(raw)
    ray_raw["engine"] = {"kind": "ray", "actors": 3, "threads": 1}
    out = execute(compile_plan(validate(ray_raw)))
    assert torch.equal(out.result.final_params, local.final_params)
    assert out.result.totals.by_kind == local.totals.by_kind


def test_adom_and_msda_on_ray_equal_local_without_given_mu_and_l(ray_session) -> None:
    lsq = {
        "name": "least_squares",
        "dim": 5,
        "samples_per_node": 50,
        "heterogeneity": 3.0,
        "dtype": "float64",
    }
    for algorithm in ({"name": "adom_plus", "multi_consensus": True}, {"name": "msda"}):
        raw = experiment(
            topology={"name": "ring", "n": 8},
            algorithm=algorithm,
            problem=lsq,
            stop={"rounds": 6},
            eval={"every": 3},
        )
        _, local, _ = run(raw)
        ray_raw = copy.deepcopy(raw)
        ray_raw["engine"] = {"kind": "ray", "actors": 2, "threads": 1}
        out = execute(compile_plan(validate(ray_raw)))
        assert torch.equal(out.result.final_params, local.final_params)
        assert out.result.totals.by_kind == local.totals.by_kind
        # the driver gets the constants from a worker: the same as the local run's
        assert out.result.derived == local.derived and {"mu", "L"} <= set(local.derived)

"""Generic checks every registered algorithm must pass.

Adding an algorithm = adding one entry to ``ENTRIES``: a small experiment on which it
must converge, and the tolerance. ``test_every_algorithm_has_an_entry`` fails when an
algorithm is registered without one.
"""

import pickle

import numpy as np
import pytest
import torch
from helpers import experiment

from fedopt.algorithms import ALGORITHMS
from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.engine.local import run_local
from fedopt.engine.worker import Worker

QUAD = {"name": "quadratic", "dim": 6, "mu": 0.5, "L": 2.0, "dtype": "float64"}
LSQ = {
    "name": "least_squares",
    "dim": 6,
    "samples_per_node": 50,
    "heterogeneity": 3.0,
    "noise": 0.5,
    "dtype": "float64",
}

ENTRIES = {
    "dsgd": dict(
        raw=experiment(
            topology={"name": "ring", "n": 8},
            algorithm={"name": "dsgd", "lr": 0.3, "lr_decay": 0.05},
            problem=QUAD,
            stop={"rounds": 1500},
            eval={"every": 1500},
        ),
        tol=5e-3,
    ),
    "fedavg": dict(
        raw=experiment(
            topology={"name": "star", "n": 9},
            algorithm={"name": "fedavg", "lr": 0.4, "local_steps": 1},
            problem=QUAD,
            stop={"rounds": 200},
            eval={"every": 200},
        ),
        tol=1e-8,
    ),
    "adom_plus": dict(  # multi-consensus is checked in test_adom_msda.py
        raw=experiment(
            topology={"name": "ring", "n": 4},
            algorithm={"name": "adom_plus"},
            problem=LSQ,
            stop={"rounds": 1000},
            eval={"every": 1000},
        ),
        tol=1e-7,
        floats=(2 * LSQ["dim"],),  # [v, s] travel together: 2 dim floats per message
    ),
    "msda": dict(
        raw=experiment(
            topology={"name": "ring", "n": 8},
            algorithm={"name": "msda"},
            problem=LSQ,
            stop={"rounds": 80},
            eval={"every": 80},
        ),
        tol=1e-10,
    ),
}

# robust peer-to-peer algorithms: complete graph, identical honest optima (so every rule
# reaches x* exactly), 2 Byzantine sign flippers out of 9 for the rules that tolerate them
ROBUST_QUAD = {**QUAD, "heterogeneity": 0.0, "center": 2.0, "init_scale": 1.0}
for _name in ("monna", "nna", "mocwtm", "bridge", "p2p_mean", "mogm", "gm", "scc", "learn"):
    _raw = experiment(
        topology={"name": "complete", "n": 9},
        algorithm={"name": _name, "lr": 0.2, "momentum": 0.5},
        problem=ROBUST_QUAD,
        stop={"rounds": 300},
        eval={"every": 300},
    )
    if _name == "learn":
        _raw["algorithm"] = {"name": "learn", "lr": 0.2, "max_minibatches": 3}
    if _name in ("monna", "nna", "mocwtm", "bridge", "learn"):
        _raw["byzantine"] = {"count": 2, "attack": {"name": "sign_flip"}}
    ENTRIES[_name] = dict(raw=_raw, tol=1e-8)


def test_every_round_algorithm_has_an_entry() -> None:
    rounds = {
        name
        for name, algo in ALGORITHMS.items()
        if algo.schedule == "rounds" and not algo.__module__.startswith("fedopt_plugin_")
    }  # test plug-ins (tests/plugins/) register algorithms of their own
    assert rounds == set(ENTRIES)


def _short(raw: dict, rounds: int = 3) -> dict:
    return {**raw, "stop": {"rounds": rounds}, "eval": {"every": 1}}


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_state_shapes_and_pickling(name: str) -> None:
    plan = compile_plan(validate(_short(ENTRIES[name]["raw"])))
    w = Worker(plan, np.arange(plan.topology.n), torch.device("cpu"))
    w.round(0)
    ids, params = w.outputs()
    assert params.ndim == 2 and params.shape[0] == len(ids)
    assert params.shape[1] == ENTRIES[name]["raw"]["problem"]["dim"]
    assert torch.isfinite(params).all()
    restored = pickle.loads(pickle.dumps(w.state))
    assert restored.keys() == w.state.keys()
    for k, v in w.state.items():
        assert torch.equal(restored[k], v)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_deterministic_bitwise(name: str) -> None:
    raw = _short(ENTRIES[name]["raw"], rounds=5)
    r1, _ = run_local(compile_plan(validate(raw)))
    r2, _ = run_local(compile_plan(validate(raw)))
    strip = [{k: v for k, v in r.items() if k != "wall_time_s"} for r in r1.records]
    assert strip == [{k: v for k, v in r.items() if k != "wall_time_s"} for r in r2.records]
    assert torch.equal(r1.final_params, r2.final_params)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_metered_messages_equal_analytic_count(name: str) -> None:
    raw = _short(ENTRIES[name]["raw"], rounds=4)
    plan = compile_plan(validate(raw))
    result, _ = run_local(plan)
    expected = ALGORITHMS.get(name).analytic_traffic(plan.config.algorithm, plan, 4)
    assert expected is not None and result.totals.messages == expected
    dim = raw["problem"]["dim"]
    floats = ENTRIES[name].get("floats", (dim, dim + 1))  # default: model (+ sample count)
    per_msg = {f * 8 + 32 for f in floats}  # float64 payloads plus the header
    sizes = {b // m for m, b in result.totals.by_kind.values()}
    assert sizes <= per_msg


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_converges_on_small_problem(name: str) -> None:
    result, _ = run_local(compile_plan(validate(ENTRIES[name]["raw"])))
    assert result.records[-1]["distance_to_opt"] < ENTRIES[name]["tol"]

"""Generic checks every registered round algorithm must pass.

Driven by the typed records of ``tests/algorithm_info.py``: adding an algorithm = adding
one :class:`~algorithm_info.AlgorithmInfo` there (a small experiment on which it must
converge, the tolerance, its bad inputs). ``test_every_round_algorithm_has_an_entry``
fails when an algorithm is registered without one.
"""

import pickle

import numpy as np
import pytest
import torch
from algorithm_info import ROUND_INFOS

from fedopt.algorithms import ALGORITHMS
from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.engine.local import run_local
from fedopt.engine.worker import Worker

INFOS = {info.name: info for info in ROUND_INFOS}
# the entries as plain dicts, as scripts outside the suite read them (golden digests)
ENTRIES = {name: {"raw": info.raw, "tol": info.tol} for name, info in INFOS.items()}


def test_every_round_algorithm_has_an_entry() -> None:
    rounds = {
        name
        for name, algo in ALGORITHMS.items()
        if algo.schedule == "rounds" and not algo.__module__.startswith("fedopt_plugin_")
    }  # test plug-ins (tests/plugins/) register algorithms of their own
    assert rounds == set(INFOS)


@pytest.mark.parametrize("name", sorted(INFOS))
def test_state_shapes_and_pickling(name: str) -> None:
    plan = compile_plan(validate(INFOS[name].short()))
    w = Worker(plan, np.arange(plan.topology.n), torch.device("cpu"))
    w.round(0)
    ids, params = w.outputs()
    assert params.ndim == 2 and params.shape[0] == len(ids)
    assert params.shape[1] == INFOS[name].row_width
    assert torch.isfinite(params).all()
    restored = pickle.loads(pickle.dumps(w.state))
    assert restored.keys() == w.state.keys()
    for k, v in w.state.items():
        assert torch.equal(restored[k], v)


@pytest.mark.parametrize("name", sorted(INFOS))
def test_deterministic_bitwise(name: str) -> None:
    raw = INFOS[name].short(rounds=5)
    r1, _ = run_local(compile_plan(validate(raw)))
    r2, _ = run_local(compile_plan(validate(raw)))
    strip = [{k: v for k, v in r.items() if k != "wall_time_s"} for r in r1.records]
    assert strip == [{k: v for k, v in r.items() if k != "wall_time_s"} for r in r2.records]
    assert torch.equal(r1.final_params, r2.final_params)


@pytest.mark.parametrize("name", sorted(INFOS))
def test_metered_messages_equal_analytic_count(name: str) -> None:
    raw = INFOS[name].short(rounds=4)
    plan = compile_plan(validate(raw))
    result, _ = run_local(plan)
    expected = ALGORITHMS.get(name).analytic_traffic(plan.config.algorithm, plan, 4)
    assert expected is not None and result.totals.messages == expected
    if INFOS[name].sizes_tested_in:
        return  # seeds and scalars, sizes by round and sender: checked there
    dim = INFOS[name].row_width
    floats = INFOS[name].floats or (dim, dim + 1)  # default: model (+ sample count)
    per_msg = {f * INFOS[name].itemsize + 32 for f in floats}  # payloads plus the header
    sizes = {b // m for m, b in result.totals.by_kind.values()}
    assert sizes <= per_msg


@pytest.mark.parametrize("name", sorted(INFOS))
def test_converges_on_small_problem(name: str) -> None:
    info = INFOS[name]
    result, _ = run_local(compile_plan(validate(info.raw)))
    assert result.records[-1][info.metric] < info.tol

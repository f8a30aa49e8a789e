"""Every algorithm gives the local engine's bits on 2 Ray actors (from its AlgorithmInfo).

One short run per algorithm (3 rounds, or 15 simulated seconds); the default suite keeps
``algorithm_info.RAY_FAST`` (``ray_slow=False``), the rest run with ``-m slow``.
"""

import copy

import numpy as np
import pytest
import torch
from algorithm_info import ALGORITHM_INFOS, RAY_FAST

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.run import execute

CASES = [
    pytest.param(name, marks=[pytest.mark.slow] if info.ray_slow else [], id=name)
    for name, info in sorted(ALGORITHM_INFOS.items())
    if info.ray_identical
]


def _strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in records]


def test_the_default_suite_keeps_a_handful_of_algorithms_on_ray() -> None:
    fast = {n for n, i in ALGORITHM_INFOS.items() if i.ray_identical and not i.ray_slow}
    assert fast == RAY_FAST and len(fast) >= 4


@pytest.mark.parametrize("name", CASES)
def test_ray_on_two_actors_equals_local(ray_session, name: str) -> None:
    raw = ALGORITHM_INFOS[name].short()
    raw["engine"] = {**raw.get("engine", {}), "threads": 1, "reduce_block": 4}
    local = execute(compile_plan(validate(raw)))
    ray_raw = copy.deepcopy(raw)
    ray_raw["engine"].update(kind="ray", actors=2)
    out = execute(compile_plan(validate(ray_raw)))
    assert len(out.workers) == 2
    assert torch.equal(out.result.final_ids, local.result.final_ids)
    assert torch.equal(out.result.final_params, local.result.final_params)
    assert _strip(out.result.records) == _strip(local.result.records)
    assert np.array_equal(out.edge_messages, local.edge_messages)
    assert np.array_equal(out.edge_bytes, local.edge_bytes)
    assert out.result.sim_time_s == local.result.sim_time_s
    assert out.result.derived == local.result.derived
    assert local.result.totals.messages > 0

"""A Ray worker that dies mid-run is restarted from the checkpoint with identical results."""

import copy
from pathlib import Path

import torch
from helpers import experiment

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.run import execute

PLUGIN = """
import os
from typing import Literal
from fedopt.problems import PROBLEMS
from fedopt.problems.quadratic import Quadratic, QuadraticConfig, QuadraticOracle

MARKER = {marker!r}


class DyingConfig(QuadraticConfig):
    name: Literal["dying_quadratic"] = "dying_quadratic"


class DyingOracle(QuadraticOracle):
    def grad(self, X, rows, step):
        if step == 5 and len(self.data_ranks) and int(self.data_ranks[0]) == 3:
            if not os.path.exists(MARKER):
                open(MARKER, "w").close()
                os._exit(1)  # the actor process dies, as on a lost machine
        return super().grad(X, rows, step)


@PROBLEMS.register("dying_quadratic")
class Dying(Quadratic):
    Config = DyingConfig
    oracle_class = DyingOracle
"""


def test_dead_actor_is_restarted_from_checkpoint(ray_session, tmp_path: Path) -> None:
    plugin = tmp_path / "dying.py"
    plugin.write_text(PLUGIN.format(marker=str(tmp_path / "died")))
    raw = experiment(
        plugins=[str(plugin)],
        topology={"name": "ring", "n": 6},
        problem={"name": "dying_quadratic", "dim": 4, "noise_std": 0.1},
        stop={"rounds": 8},
        output={"checkpoint_every": 2},
    )
    ray_raw = copy.deepcopy(raw)
    ray_raw["engine"] = {"kind": "ray", "threads": 1, "actors": 2, "max_restarts": 1}
    out = execute(compile_plan(validate(ray_raw)), on_checkpoint=lambda ck: None)
    assert out.restarts == 1 and (tmp_path / "died").exists()
    ref = execute(compile_plan(validate(raw)))  # local engine, marker present: no crash
    assert torch.equal(out.result.final_params, ref.result.final_params)
    assert out.result.totals.bytes == ref.result.totals.bytes
    assert out.result.sim_time_s == ref.result.sim_time_s

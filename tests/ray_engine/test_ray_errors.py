"""Bad Ray plans get clear errors; a failing worker is reported with its nodes."""

import copy

import pytest
from helpers import experiment

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.errors import ConfigError, EngineError
from fedopt.run import execute

RAW = experiment(topology={"name": "ring", "n": 6}, stop={"rounds": 2})


def plan_with(**engine: object):
    raw = copy.deepcopy(RAW)
    raw["engine"] = {"kind": "ray", "threads": 1, **engine}
    return compile_plan(validate(raw))


def test_more_actors_than_nodes(ray_session) -> None:
    with pytest.raises(ConfigError, match=r"engine.actors: 7 actors for n=6 nodes"):
        execute(plan_with(actors=7, cpus_per_actor=0.1))


def test_zero_actors_rejected_by_schema() -> None:
    with pytest.raises(ConfigError, match=r"engine\.actors"):
        plan_with(actors=0)


def test_more_cpus_than_the_cluster_has(ray_session) -> None:
    with pytest.raises(ConfigError, match=r"6 actors x 1 CPU = 6 CPUs, but the cluster has 4"):
        execute(plan_with(actors=6, cpus_per_actor=1))


def test_gpu_requested_without_gpus(ray_session) -> None:
    with pytest.raises(ConfigError, match="GPU"):
        execute(plan_with(actors=2, gpus_per_actor=1))


def test_two_sizing_options_conflict() -> None:
    with pytest.raises(ConfigError, match="set only one of them"):
        plan_with(actors=2, nodes_per_actor=3)


PLUGIN = """
import torch
from fedopt.problems import PROBLEMS
from fedopt.problems.quadratic import Quadratic, QuadraticConfig, QuadraticOracle
from typing import Literal


class FlakyConfig(QuadraticConfig):
    name: Literal["flaky_quadratic"] = "flaky_quadratic"


class FlakyOracle(QuadraticOracle):
    def grad(self, X, rows, step):
        if len(self.data_ranks) and int(self.data_ranks.max()) >= 3 and step >= 1:
            raise FloatingPointError("gradient exploded on purpose")
        return super().grad(X, rows, step)


@PROBLEMS.register("flaky_quadratic")
class Flaky(Quadratic):
    Config = FlakyConfig
    oracle_class = FlakyOracle
"""


def test_worker_failure_names_its_nodes_and_cause(ray_session, tmp_path) -> None:
    plugin = tmp_path / "flaky.py"
    plugin.write_text(PLUGIN)
    raw = copy.deepcopy(RAW)
    raw["plugins"] = [str(plugin)]
    raw["problem"] = {"name": "flaky_quadratic", "dim": 3}
    raw["engine"] = {"kind": "ray", "threads": 1, "actors": 2}
    plan = compile_plan(validate(raw))
    with pytest.raises(EngineError) as info:
        execute(plan)
    msg = str(info.value)
    assert "worker 1 hosting nodes 3..5 (3 nodes) failed during round 1" in msg
    # the original traceback's frame and exception travel with the report
    assert 'raise FloatingPointError("gradient exploded on purpose")' in msg
    assert "FloatingPointError: gradient exploded on purpose" in msg


def test_unreachable_address_fails_fast(tmp_path) -> None:
    import subprocess
    import sys
    import time
    from pathlib import Path

    quick = Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml"
    t0 = time.perf_counter()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedopt",
            "run",
            str(quick),
            "--engine",
            "ray",
            "--address",
            "127.0.0.1:1",
            "--out",
            str(tmp_path / "x"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 2 and time.perf_counter() - t0 < 60
    assert "engine.address: cannot join a Ray cluster at '127.0.0.1:1'" in r.stderr
    assert not (tmp_path / "x").exists()

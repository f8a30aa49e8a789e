"""Counters, ledgers, algorithm metrics and node-model evaluation: Ray equals local."""

import copy
from pathlib import Path

from helpers import experiment

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.run import execute

PLUGIN = str(Path(__file__).parents[1] / "engine" / "counting_plugin.py")


def test_two_actors_give_the_local_counters_ledgers_and_records(ray_session) -> None:
    raw = experiment(
        topology={"name": "ring", "n": 6},
        algorithm={"name": "counting_dsgd_nodes", "lr": 0.1},
        problem={"name": "logistic", "dim": 5, "samples_per_node": 20, "batch_size": 4},
        compute={"cost_s": {"queries": 0.5, "hvp_calls": 0.25}, "straggler_prob": 0.3},
        stop={"rounds": 3},
        eval={"every": 1},
    )
    raw["plugins"] = [PLUGIN]
    out = {}
    for kind, engine in {"local": {}, "ray": {"kind": "ray", "actors": 2}}.items():
        r = copy.deepcopy(raw)
        r["engine"] = {"threads": 1, "chunk_size": 4, **engine}
        out[kind] = execute(compile_plan(validate(r))).result
    local, ray = out["local"], out["ray"]
    assert ray.counters == local.counters
    assert local.counters.as_dict() == {"gradients": 18, "queries": 36, "hvp_calls": 18}
    assert ray.ledgers == local.ledgers == {"counting": {"node_rounds": 18, "last_round": 2}}
    assert ray.metrics == local.metrics and set(local.metrics) == {"x_norm", "x_max_abs"}
    strip = [
        [{k: v for k, v in r.items() if k != "wall_time_s"} for r in res.records]
        for res in (local, ray)
    ]
    assert strip[0] == strip[1]
    assert (
        "avg_model_loss" in strip[0][-1] and strip[0][-1]["loss"] != strip[0][-1]["avg_model_loss"]
    )

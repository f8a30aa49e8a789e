"""Same config and seed give identical metrics and bitwise-identical parameters."""

import numpy as np
import pytest
import torch
from helpers import experiment, run

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.engine.worker import Worker
from fedopt.results.rundir import params_digest


def test_dsgd_results_do_not_depend_on_chunk_size() -> None:
    raw = experiment(
        topology={"name": "torus", "n": 16},
        algorithm={"name": "dsgd", "lr": 0.1, "local_steps": 3},
        problem={
            "name": "logistic",
            "dim": 10,
            "samples_per_node": 50,
            "batch_size": 8,
            "generator": "seeded",
        },
        stop={"rounds": 5},
    )
    _, a, _ = run({**raw, "engine": {"threads": 1, "chunk_size": 3}})
    _, b, _ = run({**raw, "engine": {"threads": 1, "chunk_size": 1024}})
    assert torch.equal(a.final_params, b.final_params)
    assert a.records[-1]["loss"] == b.records[-1]["loss"]


@pytest.mark.parametrize("reduce_block", [4, 1024])
def test_fedavg_params_sha256_does_not_depend_on_chunk_size(reduce_block: int) -> None:
    """``engine.chunk_size`` is performance only: the bits come from ``reduce_block``."""
    raw = experiment(
        topology={"name": "star", "n": 14},
        algorithm={"name": "fedavg", "lr": 0.2, "local_steps": 3, "client_fraction": 0.8},
        problem={"name": "logistic", "dim": 9, "samples_per_node": 30, "batch_size": 4},
        stop={"rounds": 4},
        eval={"every": 2},
    )
    digests, losses = set(), set()
    for chunk in (1, 5, 1024):
        raw["engine"] = {"threads": 1, "chunk_size": chunk, "reduce_block": reduce_block}
        _, result, _ = run(raw)
        digests.add(params_digest(result.final_ids, result.final_params))
        losses.add(tuple(r["loss"] for r in result.records))
    assert len(digests) == 1 and len(losses) == 1


def test_reduce_block_sets_the_canonical_sums_and_defaults_to_1024() -> None:
    raw = experiment(engine={"threads": 1, "chunk_size": 7, "reduce_block": 3})
    plan = compile_plan(validate(raw))
    w = Worker(plan, np.arange(plan.topology.n), torch.device("cpu"))
    assert (w.comm.block, w.ctx.chunk_size) == (3, 7)
    assert validate(experiment(engine={"chunk_size": 8})).engine.reduce_block == 1024


def test_different_seed_differs() -> None:
    raw = experiment(problem={"name": "quadratic", "dim": 4, "noise_std": 0.1})
    _, a, _ = run(raw)
    _, b, _ = run({**raw, "seed": 1})
    assert not torch.equal(a.final_params, b.final_params)

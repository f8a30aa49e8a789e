"""Compile-time facts: the worst-case mu and L over every data node, computed once.

ADOM+, MSDA and the event algorithms read them from ``plan.facts``; a worker hosting a
shard builds the oracle of its own nodes only, never that of every node.
"""

import numpy as np
import pytest
import torch
from helpers import experiment

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.engine.worker import Worker
from fedopt.errors import ConfigError
from fedopt.problems import PROBLEMS

LS = {
    "name": "least_squares",
    "dim": 5,
    "samples_per_node": 50,
    "heterogeneity": 3.0,
    "noise": 0.5,
    "dtype": "float64",
}


def _raw(name: str, **algo: float) -> dict:
    stop = {"events": 200} if name == "dadao" else {"rounds": 3}
    return experiment(
        topology={"name": "ring", "n": 8},
        algorithm={"name": name, **algo},
        problem=LS,
        stop=stop,
    )


@pytest.fixture
def built(monkeypatch) -> list[int]:
    """Number of data ranks of every least-squares oracle built from now on."""
    cls = PROBLEMS.get("least_squares").oracle_class
    original = cls.__init__
    sizes: list[int] = []

    def counting(self, config, seed, data_ranks, *args, **kwargs):
        sizes.append(len(data_ranks))
        original(self, config, seed, data_ranks, *args, **kwargs)

    monkeypatch.setattr(cls, "__init__", counting)
    return sizes


@pytest.mark.parametrize("name", ["adom_plus", "msda", "dadao"])
def test_plan_carries_the_worst_case_over_every_node(name: str, built: list[int]) -> None:
    plan = compile_plan(validate(_raw(name)))
    assert built == [8]  # one oracle of all 8 data ranks, once, at compile time
    oracle = PROBLEMS.get("least_squares").build(
        plan.config.problem, seed=0, data_ranks=torch.arange(8), num_data_nodes=8, device="cpu"
    )
    mu, L = oracle.curvature_bounds()
    assert plan.facts["mu"] == float(mu.min()) and plan.facts["L"] == float(L.max())
    assert float(mu.min()) < float(mu.max())  # nodes differ: the worst case matters


@pytest.mark.parametrize("name", ["adom_plus", "msda"])
def test_a_shard_worker_builds_only_its_own_oracle(name: str, built: list[int]) -> None:
    plan = compile_plan(validate(_raw(name)))
    built.clear()
    shard = Worker(plan, np.array([2, 5]), torch.device("cpu"))
    assert built and max(built) <= 2  # never an oracle of every data rank
    assert (shard.algorithm.mu, shard.algorithm.L) == (plan.facts["mu"], plan.facts["L"])
    full = Worker(plan, np.arange(8), torch.device("cpu"))
    assert (full.algorithm.mu, full.algorithm.L) == (shard.algorithm.mu, shard.algorithm.L)


def test_given_mu_and_L_need_no_oracle_at_compile_time(built: list[int]) -> None:
    plan = compile_plan(validate(_raw("adom_plus", mu=0.3, L=4.0)))
    assert built == [] and (plan.facts["mu"], plan.facts["L"]) == (0.3, 4.0)


def test_dadao_graph_constants_are_facts_of_the_plan() -> None:
    plan = compile_plan(validate(_raw("dadao")))
    chi = plan.facts["dadao_graph"]
    assert chi["lambda_mix"] == pytest.approx((2 * chi["chi1"] * chi["chi2"]) ** 0.5)
    from fedopt.run import execute  # the event run uses (and reports) these very constants

    out = execute(plan)
    assert out.result.derived["chi1"] == chi["chi1"]
    assert out.result.derived["lambda_mix"] == chi["lambda_mix"]
    assert out.result.derived["mu"] == plan.facts["mu"]


def test_validate_refuses_a_problem_that_is_not_strongly_convex() -> None:
    raw = _raw("adom_plus")
    raw["problem"] = {"name": "logistic", "dim": 4, "samples_per_node": 20}
    with pytest.raises(ConfigError, match=r"algorithm\.mu: adom_plus .* 'logistic' has mu = 0"):
        compile_plan(validate(raw))  # before: only when the workers were built

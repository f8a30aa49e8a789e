"""Event workers hosting shards build their own nodes' oracles only, and give the local bits.

Each shard worker builds the oracle of its hosted nodes (the continuized method, whose
edge events take a dual gradient at both endpoints, also its nodes' neighbours'), and
evaluation adds the workers' partial values; the run equals the one-worker run bit for
bit: parameters, every record, per-edge meters. Runs in-process on threads
(``tests/threaded_events.py``); ``tests/ray_engine/test_ray_events.py`` checks Ray.
"""

import numpy as np
import pytest
import torch
from helpers import experiment
from threaded_events import ThreadedEventGroup, run_sharded

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.engine.events_worker import EventWorker, oracle_nodes
from fedopt.errors import EngineError
from fedopt.problems import PROBLEMS
from fedopt.run import execute

LSQ = {
    "name": "least_squares",
    "dim": 5,
    "samples_per_node": 50,
    "noise": 0.5,
    "heterogeneity": 3.0,
    "dtype": "float64",
}
CASES = {
    "dadao-ring": experiment(
        topology={"name": "ring", "n": 8},
        algorithm={"name": "dadao"},
        problem=LSQ,
        stop={"sim_time_s": 25.0},
        engine={"threads": 1, "event_block": 128},
    ),
    "dadao-time-varying": experiment(
        topology={"name": "random_geometric_sequence", "n": 10, "params": {"count": 4}},
        algorithm={"name": "dadao"},
        problem=LSQ,
        stop={"sim_time_s": 15.0},
        eval={"every_time_s": 3.0},
        engine={"threads": 1, "event_block": 128},
    ),
    "async-gossip-sgd": experiment(
        topology={"name": "grid", "n": 9},
        algorithm={"name": "async_gossip_sgd", "lr": 0.05},
        problem={**LSQ, "batch_size": 8},
        stop={"events": 600},
        engine={"threads": 1, "event_block": 200},
    ),
    "continuized": experiment(
        topology={"name": "ring", "n": 8},
        algorithm={"name": "continuized"},
        problem=LSQ,
        stop={"sim_time_s": 40.0},
        engine={"threads": 1, "event_block": 64},
    ),
}


def _strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in records]


@pytest.fixture
def built(monkeypatch) -> list[list[int]]:
    """The data ranks of every least-squares oracle built from now on."""
    cls = PROBLEMS.get("least_squares").oracle_class
    original = cls.__init__
    ranks: list[list[int]] = []

    def counting(self, config, seed, data_ranks, *args, **kwargs):
        ranks.append(data_ranks.tolist())
        original(self, config, seed, data_ranks, *args, **kwargs)

    monkeypatch.setattr(cls, "__init__", counting)
    return ranks


@pytest.mark.parametrize(
    ("case", "k"),
    [
        ("dadao-ring", 2),
        ("dadao-ring", 3),
        ("dadao-time-varying", 2),
        ("async-gossip-sgd", 3),
        ("continuized", 2),
    ],
)
def test_shard_workers_give_the_one_worker_bits(case: str, k: int) -> None:
    plan = compile_plan(validate(CASES[case]))
    local = execute(plan)
    result, group = run_sharded(plan, k)
    assert torch.equal(result.final_params, local.result.final_params)
    assert _strip(result.records) == _strip(local.result.records)
    assert result.x_star is not None and torch.equal(result.x_star, local.result.x_star)
    messages, nbytes = group.edge_meters()
    assert (messages == local.edge_messages).all() and (nbytes == local.edge_bytes).all()
    assert result.counters == local.result.counters
    assert result.derived == local.result.derived


def test_a_shard_worker_builds_the_oracle_of_its_own_nodes_only(built) -> None:
    plan = compile_plan(validate(CASES["dadao-ring"]))  # compile time: all 8, once
    built.clear()
    group = ThreadedEventGroup(plan, 2)
    group.pool.shutdown()
    assert built == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [w.node_oracle.nodes.tolist() for w in group.workers] == built


def test_continuized_shards_also_build_their_neighbours_oracles(built) -> None:
    plan = compile_plan(validate(CASES["continuized"]))
    built.clear()
    group = ThreadedEventGroup(plan, 2)
    group.pool.shutdown()
    # ring of 8: nodes 0..3 need their neighbours 7 and 4, nodes 4..7 need 3 and 0
    assert built == [[0, 1, 2, 3, 4, 7], [0, 3, 4, 5, 6, 7]]
    assert oracle_nodes(plan, np.arange(8), True).tolist() == list(range(8))


def test_a_node_without_an_oracle_here_is_an_engine_error() -> None:
    raw = experiment(**{**CASES["dadao-ring"], "problem": {**LSQ, "init_scale": 1.0}})
    plan = compile_plan(validate(raw))
    w = EventWorker(plan, np.array([0, 1]), np.repeat(np.arange(4), 2), 0, None)
    with pytest.raises(EngineError, match="oracle of node 5 is not on this worker"):
        w.node_oracle.full_grad(torch.zeros(1, 5, dtype=torch.float64), torch.tensor([5]))
    x0 = w.ctx.initial_params()
    assert x0.shape == (8, 5) and bool((x0[2:] == 0).all()) and bool((x0[:2] != 0).any())
    whole = EventWorker(plan, np.arange(8))
    assert torch.equal(whole.ctx.initial_params()[:2], x0[:2])  # keyed by node: same draw


def test_grad_norm_of_an_event_run_is_summed_over_the_workers() -> None:
    raw = experiment(**{**CASES["dadao-ring"], "eval": {"every": 1, "grad_norm": True}})
    plan = compile_plan(validate(raw))
    local = execute(plan)
    sharded, _ = run_sharded(plan, 3)
    assert _strip(sharded.records) == _strip(local.result.records)
    oracle = PROBLEMS.get("least_squares").build(
        plan.config.problem, seed=0, data_ranks=torch.arange(8), num_data_nodes=8, device="cpu"
    )
    x = local.result.final_model.expand(8, -1)
    g = (oracle.full_grad(x, torch.arange(8)) * oracle.weights.unsqueeze(1)).sum(0)
    last, first = local.result.records[-1], local.result.records[0]
    assert last["grad_norm_sq"] == pytest.approx(float(g.square().sum()), rel=1e-12)
    assert first["grad_norm_sq"] > 100 * last["grad_norm_sq"]  # DADAO converges

"""The fault schedule on round algorithms: exact message accounting and effects on the state."""

import copy

import pytest
import torch
from helpers import experiment, run

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.errors import ConfigError

QUAD = {"name": "quadratic", "dim": 6, "mu": 0.5, "L": 2.0, "dtype": "float64"}
RING = experiment(
    topology={"name": "ring", "n": 8},
    algorithm={"name": "dsgd", "lr": 0.3},
    problem={**QUAD, "heterogeneity": 1.0},
    stop={"rounds": 60},
    eval={"every": 20},
)
GOSSIP = experiment(  # pure averaging from random starts: sums are conserved
    topology={"name": "ring", "n": 8},
    algorithm={"name": "dsgd", "local_steps": 0},
    problem={**QUAD, "init_scale": 1.0, "same_init": False},
    stop={"rounds": 30},
    eval={"every": 30},
)


def with_faults(raw: dict, **faults) -> dict:
    out = copy.deepcopy(raw)
    out["faults"] = faults
    return out


def kinds(result) -> dict[str, list[int]]:
    return result.totals.by_kind


def test_no_faults_section_changes_nothing() -> None:
    _, a, _ = run(RING)
    _, b, _ = run(with_faults(RING))
    assert torch.equal(a.final_params, b.final_params)
    assert kinds(a) == kinds(b) == {"model": [960, 960 * (6 * 8 + 32)]}


def test_crashed_nodes_are_frozen_and_their_links_silent() -> None:
    raw = with_faults(RING, crashes=[{"nodes": [2, 5], "from_round": 10, "to_round": 30}])
    raw["stop"]["rounds"] = 30
    _, result, _ = run(raw)
    # of 16 x 30 messages, 2 crashed nodes x 2 neighbours x 20 rounds = 80 are never
    # sent (not metered) and 80 are sent to them and lost
    assert kinds(result) == {"model": [320, 320 * 80], "model:dropped": [80, 80 * 80]}
    assert result.counters["gradients"] == 8 * 30 - 2 * 20  # crashed nodes compute nothing
    raw10 = copy.deepcopy(raw)
    raw10["stop"]["rounds"] = 10
    raw10["faults"] = {}
    _, before, _ = run(raw10)
    assert torch.equal(result.final_params[[2, 5]], before.final_params[[2, 5]])
    assert not torch.equal(result.final_params[[1, 3]], before.final_params[[1, 3]])


def test_partition_conserves_each_groups_average() -> None:
    _, start, _ = run({**GOSSIP, "stop": {"rounds": 1}, "eval": {"every": 1}})
    x0 = start.final_params  # after one fault-free round (the partition starts at round 1)
    raw = with_faults(GOSSIP, partitions=[{"groups": [[0, 1, 2, 3]], "from_round": 1}])
    raw["stop"]["rounds"] = 80
    _, result, _ = run(raw)
    x = result.final_params
    for group in ([0, 1, 2, 3], [4, 5, 6, 7]):
        assert torch.allclose(x[group].mean(0), x0[group].mean(0), atol=1e-12)
        assert float((x[group] - x[group].mean(0)).abs().max()) < 1e-3  # each group agrees
    assert float((x[0] - x[4]).abs().max()) > 0.1  # but the groups do not
    # the cut links (3,4) and (7,0) carry 4 lost messages per round for 79 rounds
    assert kinds(result)["model:dropped"][0] == 4 * 79


def test_drop_probability_loses_that_share_of_messages() -> None:
    raw = with_faults(RING, drop=0.3)
    raw["stop"]["rounds"] = 500
    raw["eval"]["every"] = 500
    _, result, _ = run(raw)
    k = kinds(result)
    sent = k["model"][0] + k["model:dropped"][0]
    assert sent == 16 * 500
    assert abs(k["model:dropped"][0] / sent - 0.3) < 0.02  # 8000 Bernoulli(0.3) draws


def test_drop_one_isolates_every_node() -> None:
    raw = with_faults(GOSSIP, drop=1.0)
    raw["stop"] = {"rounds": 3}
    _, result, worker = run(raw)
    assert kinds(result) == {"model:dropped": [48, 48 * 80]}
    x0 = worker.oracle.init_params(torch.arange(8)).double()
    # every neighbour's weight falls back on the node itself: nobody moves
    assert torch.allclose(result.final_params, x0, atol=1e-14)
    assert float(x0.std(0).min()) > 0.1


def test_partial_receipt_uses_the_first_k_arrivals() -> None:
    raw = with_faults(RING, partial_receipt=1)
    _, result, _ = run(raw)
    assert kinds(result) == {"model": [480, 480 * 80], "model:late": [480, 480 * 80]}


def test_fedavg_with_lost_broadcasts_and_updates() -> None:
    raw = experiment(
        topology={"name": "star", "n": 9},
        algorithm={"name": "fedavg", "lr": 0.4},
        problem=QUAD,
        stop={"rounds": 30},
        eval={"every": 10},
        faults={"drop": 0.3, "partial_receipt": 5},
    )
    _, result, _ = run(raw)
    k = kinds(result)
    assert k["model"][0] + k["model:dropped"][0] == 8 * 30
    # only clients that got the model send an update; the server uses at most 5 per round
    sent = k["update"][0] + k["update:late"][0] + k["update:dropped"][0]
    assert sent == k["model"][0]
    assert k["update"][0] <= 5 * 30
    assert result.records[-1]["loss"] < result.records[0]["loss"]


@pytest.mark.parametrize(
    ("faults", "match"),
    [
        ({"crashes": [{"nodes": [9], "from_round": 1}]}, r"crashes\[0\]\.nodes: node id 9"),
        ({"crashes": [{"nodes": [1], "from_round": 70}]}, r"from_round: 70 is after"),
        ({"partitions": [{"groups": [[0, 1], [1, 2]], "from_round": 0}]}, "in two groups"),
        ({"link_failures": [{"links": [[0, 4]], "from_round": 0}]}, r"\(0, 4\) is not an edge"),
    ],
)
def test_bad_fault_schedules_are_refused(faults: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        compile_plan(validate(with_faults(RING, **faults)))


@pytest.mark.parametrize(
    ("faults", "match"),
    [
        ({"drop": 1.5}, r"faults\.drop"),
        ({"crashes": [{"nodes": [1], "from_round": 5, "to_round": 2}]}, "before it starts"),
        ({"crashes": [{"nodes": [1], "from_round": 1, "to_time_s": 2.0}]}, "not both"),
        ({"partial_receipt": 0}, r"faults\.partial_receipt"),
    ],
)
def test_fault_fields_are_validated(faults: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        validate(with_faults(RING, **faults))


def test_server_crash_and_event_faults_are_refused() -> None:
    raw = experiment(
        topology={"name": "star", "n": 5},
        algorithm={"name": "fedavg"},
        problem=QUAD,
        faults={"crashes": [{"nodes": [0], "from_round": 1}]},
    )
    with pytest.raises(ConfigError, match="is the server"):
        compile_plan(validate(raw))


def test_partial_receipt_lets_the_server_outrun_stragglers() -> None:
    raw = experiment(
        topology={"name": "star", "n": 21},
        algorithm={"name": "fedavg", "lr": 0.4, "local_steps": 2},
        problem=QUAD,
        compute={"step_time_s": 0.01, "straggler_prob": 0.1, "straggler_slowdown": 10.0},
        stop={"rounds": 40},
        eval={"every": 40},
    )
    _, waiting, _ = run(raw)
    _, proceeding, _ = run(with_faults(raw, partial_receipt=15))
    # with 20 clients nearly every round has a straggler (1 - 0.9^20 = 88%)
    assert proceeding.sim_time_s < 0.5 * waiting.sim_time_s
    assert kinds(proceeding)["update"][0] == 15 * 40
    assert proceeding.records[-1]["loss"] < 1.05 * waiting.records[-1]["loss"]

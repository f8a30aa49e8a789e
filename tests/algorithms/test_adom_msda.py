"""ADOM+ and MSDA, the synchronous baselines of DADAO (spec dadao.md 1.8).

Setting of spec 1.11: a ring of 8 least squares nodes, dim 5, 50 samples each,
heterogeneous local truths (heterogeneity 3), float64, starting from x = 0.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import experiment, run

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.engine.worker import Worker
from fedopt.errors import ConfigError

LS = {
    "name": "least_squares",
    "dim": 5,
    "samples_per_node": 50,
    "heterogeneity": 3.0,
    "noise": 0.5,
    "dtype": "float64",
}
HEADER = 32  # bytes per message besides the payload (fedopt.network.meter)


def _raw(algorithm: dict, topology: dict, rounds: int, every: int, problem: dict = LS) -> dict:
    return experiment(
        topology=topology,
        algorithm=algorithm,
        problem=problem,
        stop={"rounds": rounds},
        eval={"every": every},
    )


def _relative_error(result) -> float:
    """``mean_i ||x_i - x*||^2 / ||x_i(0) - x*||^2`` (x_i(0) = 0 here), spec 1.11."""
    x_star = result.x_star
    per_node = ((result.final_params.double() - x_star) ** 2).sum(dim=1)
    return float(per_node.mean() / (x_star**2).sum())


def _first_below(result, fraction: float) -> dict | None:
    """First record whose distance to x* is below ``fraction`` of the initial one."""
    d0 = result.records[0]["distance_to_opt"]
    return next((r for r in result.records if r["distance_to_opt"] < fraction * d0), None)


# -- ADOM+ ----------------------------------------------------------------------------


def test_adom_plus_converges_linearly_on_ring8() -> None:
    _, result, worker = run(_raw({"name": "adom_plus"}, {"name": "ring", "n": 8}, 2000, 200))
    assert _relative_error(result) < 1e-8
    # chi of the ring-8 Laplacian (spec 1.2 table: 6.83)
    assert worker.algorithm.chi == pytest.approx(4 / (2 - math.sqrt(2)))
    d = np.array([r["distance_to_opt"] for r in result.records])
    ratios = d[3:] / d[2:-1]  # after the transient: one factor per 200 rounds
    assert ratios.max() < 0.5
    assert ratios.max() / ratios.min() < 1.1  # a constant rate: geometric decay
    # one gradient and one gossip of [v, s] per round: 2 |E| messages of 2 dim floats
    assert result.totals.messages == 2000 * 16
    assert result.totals.bytes == 2000 * 16 * (2 * 5 * 8 + HEADER)


def test_multi_consensus_needs_fewer_rounds_but_more_messages_on_ring16() -> None:
    ring = {"name": "ring", "n": 16}
    _, plain, wp = run(_raw({"name": "adom_plus"}, ring, 1100, 10))
    _, multi, wm = run(_raw({"name": "adom_plus", "multi_consensus": True}, ring, 100, 10))
    # ring-16 chi = 26.27, so ceil(chi ln 2) = 19 gossip steps per round (spec 1.2)
    assert wp.algorithm.steps == 1 and wm.algorithm.steps == 19
    assert wm.algorithm.chi == 2.0
    for rec in plain.records:
        assert rec["messages_total"] == rec["round"] * 32
    for rec in multi.records:
        assert rec["messages_total"] == rec["round"] * 19 * 32
    hit_plain, hit_multi = _first_below(plain, 1e-2), _first_below(multi, 1e-2)
    assert hit_plain is not None and hit_multi is not None
    assert 5 * hit_multi["round"] < hit_plain["round"]
    assert hit_multi["messages_total"] > hit_plain["messages_total"]


def test_adom_plus_on_time_varying_graphs_meters_each_member() -> None:
    topo = {"name": "random_geometric_sequence", "n": 8, "params": {"count": 5, "radius": 0.6}}
    plan, result, _ = run(_raw({"name": "adom_plus"}, topo, 600, 600))
    graphs = plan.topology.schedule.graphs
    expected = sum(2 * graphs[t % 5].number_of_edges() for t in range(600))
    assert result.totals.messages == expected
    assert _first_below(result, 1e-2) is not None


def test_adom_plus_refuses_matching_schedules() -> None:
    raw = _raw({"name": "adom_plus"}, {"name": "random_matching", "n": 8}, 5, 5)
    with pytest.raises(ConfigError, match=r"topology\.name: .*random_geometric_sequence"):
        compile_plan(validate(raw))


def test_adom_plus_needs_strong_convexity() -> None:
    raw = _raw({"name": "adom_plus"}, {"name": "ring", "n": 8}, 3, 3, problem={"name": "logistic"})
    with pytest.raises(ConfigError, match=r"algorithm\.mu: adom_plus .* 'logistic' has mu = 0"):
        run(raw)


def test_adom_plus_initial_duals_do_not_depend_on_sharding() -> None:
    raw = _raw({"name": "adom_plus"}, {"name": "ring", "n": 8}, 5, 5)
    full = Worker(compile_plan(validate(raw)), np.arange(8), torch.device("cpu"))
    # a shard takes the worst-case mu and L over every node, as the full worker does
    auto = Worker(compile_plan(validate(raw)), np.array([2, 5]), torch.device("cpu"))
    assert (auto.algorithm.mu, auto.algorithm.L) == (full.algorithm.mu, full.algorithm.L)
    assert auto.algorithm.consts == full.algorithm.consts
    shard_raw = {**raw, "algorithm": {"name": "adom_plus", "mu": 0.4, "L": 1.7}}
    shard = Worker(compile_plan(validate(shard_raw)), np.array([2, 5]), torch.device("cpu"))
    for key in ("y", "m"):
        assert torch.equal(shard.state[key], full.state[key][[2, 5]])
        draws = full.state[key]  # 40 N(0, 1) draws
        assert abs(float(draws.mean())) < 0.5 and 0.7 < float(draws.std()) < 1.3
    assert torch.count_nonzero(full.state["z"]) == 0


# -- MSDA -----------------------------------------------------------------------------


def test_msda_converges_linearly_on_ring8_at_the_predicted_rate() -> None:
    _, result, worker = run(_raw({"name": "msda"}, {"name": "ring", "n": 8}, 60, 5))
    assert _relative_error(result) < 1e-16
    c, mu, L = worker.algorithm.consts, worker.algorithm.mu, worker.algorithm.L
    assert c.K == 2  # floor(sqrt(6.83)), spec 1.2 table
    # accelerated dual rate: 1 - 1 / sqrt(kappa_dual), kappa_dual = kappa (1+c1^K)^2/(1-c1^K)^2
    cK = c.c1**c.K
    q = 1 - (1 - cK) / ((1 + cK) * math.sqrt(L / mu))
    d = np.array([r["distance_to_opt"] for r in result.records])
    assert d[-1] / d[0] < q**60
    assert np.all(d[1:] < d[:-1])  # every 5 iterations it gets closer


@pytest.mark.parametrize(("topology", "K", "edges"), [("ring", 5, 16), ("path", 10, 15)])
def test_msda_sends_K_gossip_steps_per_iteration(topology: str, K: int, edges: int) -> None:
    raw = _raw({"name": "msda"}, {"name": topology, "n": 16}, 7, 1)
    _, result, worker = run(raw)
    assert worker.algorithm.consts.K == K  # floor(1 / sqrt(gamma)), spec 1.2 table
    for rec in result.records:
        assert rec["messages_total"] == rec["round"] * K * 2 * edges
    assert result.totals.bytes == 7 * K * 2 * edges * (5 * 8 + HEADER)
    assert result.totals.by_kind["dual"][0] == 7 * K * 2 * edges


def test_msda_on_complete_graph_uses_one_gossip_step() -> None:
    _, result, worker = run(_raw({"name": "msda"}, {"name": "complete", "n": 6}, 40, 40))
    assert worker.algorithm.consts.K == 1  # gamma = 1: c2 is infinite, unused
    assert result.totals.messages == 40 * 30
    assert _relative_error(result) < 1e-16


def test_msda_refuses_problems_without_conjugate_gradients() -> None:
    raw = _raw({"name": "msda"}, {"name": "ring", "n": 8}, 5, 5, problem={"name": "logistic"})
    with pytest.raises(ConfigError) as err:
        compile_plan(validate(raw))
    assert str(err.value).startswith(
        "problem.name: algorithm 'msda' needs capability 'conjugate_gradients' which problem "
        "'logistic' does not provide; problems that provide it: least_squares, quadratic."
    )


def test_msda_refuses_time_varying_topologies() -> None:
    topo = {"name": "random_geometric_sequence", "n": 8, "params": {"count": 3}}
    raw = _raw({"name": "msda"}, topo, 5, 5)
    with pytest.raises(ConfigError, match=r"topology\.name: msda runs on a fixed graph"):
        compile_plan(validate(raw))

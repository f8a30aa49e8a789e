"""Registered generators: validity, labels, determinism, parameter errors."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from fedopt.errors import ConfigError
from fedopt.topology import TOPOLOGIES, TopologyConfig, build_topology
from fedopt.topology.builtins import is_time_varying

STATIC = [name for name, entry in TOPOLOGIES.items() if not is_time_varying(entry)]
BUILTIN = {
    "ring",
    "path",
    "star",
    "complete",
    "grid",
    "torus",
    "hypercube",
    "erdos_renyi",
    "random_regular",
    "small_world",
    "barabasi_albert",
    "exponential",
    "barbell",
}
RANDOM = ["erdos_renyi", "random_regular", "small_world", "barabasi_albert"]


def build(name, n=16, seed=0, **params):
    return build_topology(TopologyConfig(name=name, n=n, params=params), seed=seed)


def test_all_builtins_registered():
    assert BUILTIN <= set(STATIC)
    assert {"one_peer_exponential", "random_matching"} <= set(TOPOLOGIES)


@pytest.mark.parametrize("name", sorted(BUILTIN))
@pytest.mark.parametrize("n", [16, 64])
def test_generator_builds_connected_graph(name, n):
    plan = build(name, n=n)
    g = plan.graph
    assert list(g.nodes) == list(range(n))
    assert all(type(v) is int for v in g.nodes)
    assert nx.is_connected(g)
    assert nx.number_of_selfloops(g) == 0
    assert plan.n == n and plan.undirected
    assert len(plan.edges) == 2 * g.number_of_edges()
    keys = plan.edges[:, 0] * n + plan.edges[:, 1]
    assert np.all(np.diff(keys) > 0)


def test_shapes():
    assert build("hypercube", n=16).graph.number_of_edges() == 32
    assert build("torus", n=16).graph.number_of_edges() == 32
    assert build("grid", n=12, rows=3).graph.number_of_edges() == 3 * 3 + 2 * 4
    assert build("barbell", n=16).graph.number_of_edges() == 57
    ex = build("exponential", n=16).graph
    assert sorted(ex[0]) == [1, 2, 4, 8, 12, 14, 15]
    rr = build("random_regular", n=16, degree=3).graph
    assert {d for _, d in rr.degree()} == {3}


def test_star_roles():
    plan = build("star", n=5)
    assert plan.roles == ("server", "client", "client", "client", "client")


@pytest.mark.parametrize("name", RANDOM)
def test_seeded_determinism(name):
    a, b, c = build(name, seed=3), build(name, seed=3), build(name, seed=4)
    assert np.array_equal(a.edges, b.edges)
    assert not np.array_equal(a.edges, c.edges)


def test_erdos_renyi_retries_until_connected():
    # p near the threshold: first draws are often disconnected; the result must be connected
    for seed in range(5):
        assert nx.is_connected(build("erdos_renyi", n=40, seed=seed, p=0.1).graph)


@pytest.mark.parametrize(
    ("name", "n", "params", "field", "phrase"),
    [
        ("ring", 2, {}, "topology.n", "ring needs n >= 3, got 2"),
        ("hypercube", 12, {}, "topology.n", "power of 2"),
        ("barbell", 9, {}, "topology.n", "even n"),
        ("torus", 10, {}, "topology.params", "rows >= 3"),
        ("grid", 12, {"rows": 5, "cols": 3}, "topology.params", "rows * cols == topology.n"),
        ("grid", 12, {"rows": 5}, "topology.params.rows", "dividing n"),
        ("erdos_renyi", 50, {"p": 0.001}, "topology.params", "larger p"),
        ("erdos_renyi", 10, {"p": 1.5}, "topology.params.p", "in (0, 1]"),
        ("random_regular", 9, {"degree": 3}, "topology.params.degree", "n * degree even"),
        ("random_regular", 8, {"degree": 8}, "topology.params.degree", "degree <= 7"),
        ("small_world", 10, {"k": 3}, "topology.params.k", "even k"),
        ("barabasi_albert", 10, {"m": 0}, "topology.params.m", "m >= 1"),
        ("ring", 8, {"q": 1}, "topology.params.q", "no parameter"),
        ("small_world", 8, {"kk": 2}, "topology.params.kk", "Did you mean 'k'"),
    ],
)
def test_generator_errors(name, n, params, field, phrase):
    with pytest.raises(ConfigError) as err:
        build(name, n=n, **params)
    msg = str(err.value)
    assert msg.startswith(field), msg
    assert phrase in msg, msg


def test_missing_n_and_unknown_name():
    with pytest.raises(ConfigError, match=r"topology\.n") as err:
        build_topology(TopologyConfig(name="ring"), seed=0)
    assert "set topology.n" in str(err.value)
    with pytest.raises(ConfigError, match=r"topology\.name") as err:
        build_topology(TopologyConfig(name="rnig", n=8), seed=0)
    assert "Did you mean 'ring'" in str(err.value)


def test_unknown_file_like_name():
    with pytest.raises(ConfigError, match=r"topology\.name") as err:
        build_topology(TopologyConfig(name="graphs/net.json"), seed=0)
    assert ".edgelist" in str(err.value)

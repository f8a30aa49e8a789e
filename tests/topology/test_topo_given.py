"""``topology.weights: given`` and DIMAT's four connectivity cases (spec dimat.md 3.5)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from fedopt.errors import ConfigError
from fedopt.topology import TopologyConfig, build_topology, describe
from fedopt.topology.connectivity import hub_weight


def matrix(name: str, n: int | None = None, weights: str = "metropolis", base_dir=None):
    cfg = TopologyConfig(name=name, n=n, weights=weights)
    return build_topology(cfg, seed=0, base_dir=base_dir).mixing_static.toarray()


def write(tmp_path: Path, name: str, text: str) -> str:
    (tmp_path / name).write_text(textwrap.dedent(text))
    return name


def test_fully_connected_and_ring_are_the_reference_matrices():
    # off-diagonal entries exactly 1/N and 1/3; the diagonal is 1 - row sum (to an ulp)
    fc = matrix("complete", 5)
    off = ~np.eye(5, dtype=bool)
    assert np.all(fc[off] == 0.2) and np.allclose(np.diag(fc), 0.2, rtol=0, atol=1e-15)
    ring = matrix("ring", 5)
    expected = np.zeros((5, 5))
    for i in range(5):
        for j in (i - 1, i, i + 1):
            expected[i, j % 5] = 1 / 3
    assert np.array_equal(ring[off], expected[off])
    assert np.allclose(ring, expected, rtol=0, atol=1e-15)


def test_two_hub_has_the_reference_weights_for_5_agents():
    w = matrix("two_hub", 5, "given")
    expected = np.array(
        [
            [0.5, 0, 0, 0.25, 0.25],
            [0, 0.5, 0, 0.25, 0.25],
            [0, 0, 0.5, 0.25, 0.25],
            [0.25, 0.25, 0.25, 0.25, 0],
            [0.25, 0.25, 0.25, 0, 0.25],
        ]
    )
    assert np.array_equal(w, expected)


@pytest.mark.parametrize("n", [3, 10, 20])
def test_two_hub_weights_follow_the_floor_rule(n):
    a = hub_weight(n)
    assert a == {3: 0.5, 10: 0.11, 20: 0.05}[n]
    w = matrix("two_hub", n, "given")
    leaves, hubs = range(n - 2), (n - 2, n - 1)
    for i in leaves:
        assert w[i, i] == pytest.approx(1 - 2 * a, abs=1e-15)
        assert w[i, n - 2] == w[i, n - 1] == a
    for h in hubs:
        assert w[h, h] == pytest.approx(1 - (n - 2) * a, abs=1e-15)
    assert w[n - 2, n - 1] == 0
    assert np.array_equal(w, w.T)
    assert np.allclose(w.sum(0), 1, atol=1e-12) and np.allclose(w.sum(1), 1, atol=1e-12)


def test_two_hub_under_metropolis_is_not_the_reference_for_10_agents():
    # for n = 5 Metropolis happens to give the same matrix (a = 1/4); for n = 10 it
    # gives 1/9 per hub edge where DIMAT writes floor(100/9)/100 = 0.11
    assert matrix("two_hub", 10)[0, 8] == pytest.approx(1 / 9)
    assert matrix("two_hub", 10, "given")[0, 8] == 0.11


def test_disconnected_is_the_identity():
    assert np.array_equal(matrix("disconnected", 5), np.eye(5))
    plan = build_topology(TopologyConfig(name="disconnected", n=5), seed=0)
    assert len(plan.edges) == 0 and describe(plan)["connected"] is False


def test_given_reads_an_edge_list_with_self_weights(tmp_path):
    name = write(
        tmp_path,
        "w.edgelist",
        """\
        0 1 weight=0.5
        1 2 weight=0.25
        node 2 self_weight=0.75
        """,
    )
    w = matrix(name, weights="given", base_dir=tmp_path)
    assert np.array_equal(w, [[0.5, 0.5, 0], [0.5, 0.25, 0.25], [0, 0.25, 0.75]])


def test_given_refuses_a_matrix_that_is_not_doubly_stochastic(tmp_path):
    name = write(
        tmp_path,
        "bad.edgelist",
        """\
        0 1 weight=0.5
        1 2 weight=0.25
        node 0 self_weight=0.7
        """,
    )
    with pytest.raises(ConfigError) as err:
        matrix(name, weights="given", base_dir=tmp_path)
    text = str(err.value)
    assert "topology.weights" in text and "not doubly stochastic" in text
    assert "row 0 sums to 1.2" in text and "column 0 sums to 1.2" in text
    assert "self_weight" in text  # the fix


def test_given_refuses_edge_weights_above_one(tmp_path):
    name = write(tmp_path, "heavy.edgelist", "0 1 weight=0.75\n1 2 weight=0.5\n")
    with pytest.raises(ConfigError, match=r"node 1's edge weights sum to 1.25 > 1"):
        matrix(name, weights="given", base_dir=tmp_path)


def test_given_needs_a_weight_on_every_edge():
    with pytest.raises(ConfigError, match=r"topology.weights: 'given'.*edges \(0, 1\)"):
        matrix("ring", 5, "given")


def test_given_refuses_nonpositive_weights(tmp_path):
    name = write(tmp_path, "zero.edgelist", "0 1 weight=0\n")
    with pytest.raises(ConfigError, match=r"edge \(0, 1\) has weight 0"):
        matrix(name, weights="given", base_dir=tmp_path)


def test_an_algorithm_needing_doubly_stochastic_weights_accepts_two_hub():
    from fedopt.topology import check_topology

    plan = build_topology(TopologyConfig(name="two_hub", n=5, weights="given"), seed=0)
    check_topology(
        plan, connected=True, doubly_stochastic=True, symmetric=True, star=False, algorithm="x"
    )

"""Time-varying schedules: one-peer exponential and random matching."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from fedopt.errors import ConfigError
from fedopt.topology import TopologyConfig, build_topology, check_topology
from fedopt.topology.mixing import is_doubly_stochastic, is_row_stochastic, is_symmetric


def build(name, n, seed=0, **params):
    return build_topology(TopologyConfig(name=name, n=n, params=params), seed=seed)


@pytest.mark.parametrize("n", [2, 5, 8, 12, 16])
def test_one_peer_exponential_doubly_stochastic(n):
    plan = build("one_peer_exponential", n)
    assert plan.is_time_varying and plan.period == int(np.ceil(np.log2(n)))
    for t in range(2 * plan.period):
        w = plan.mixing_at(t)
        assert w.shape == (n, n) and w.dtype == np.float64
        assert is_doubly_stochastic(w)
        k = t % plan.period
        assert w[0, (2**k) % n] == pytest.approx(0.5)
    # every round's messages travel on plan edges
    for t in range(plan.period):
        w = plan.mixing_at(t).tocoo()
        off = w.row != w.col
        plan.edge_index(w.col[off], w.row[off])


@pytest.mark.parametrize("n", [2, 4, 8, 16, 64])
def test_one_peer_exponential_exact_average_power_of_two(n):
    plan = build("one_peer_exponential", n)
    prod = np.eye(n)
    for t in range(plan.period):
        prod = plan.mixing_at(t).toarray() @ prod
    np.testing.assert_allclose(prod, np.full((n, n), 1.0 / n), atol=1e-12)


def test_one_peer_exponential_union_is_connected_but_not_symmetric():
    plan = build("one_peer_exponential", 12)
    check_topology(
        plan, connected=True, doubly_stochastic=True, symmetric=False, star=False, algorithm="dsgd"
    )
    with pytest.raises(ConfigError, match=r"topology\.name") as err:
        check_topology(
            plan,
            connected=True,
            doubly_stochastic=True,
            symmetric=True,
            star=False,
            algorithm="extra",
        )
    assert "not symmetric" in str(err.value) and "random_matching" in str(err.value)


@pytest.mark.parametrize(
    ("base", "base_params"), [("complete", {}), ("ring", {}), ("erdos_renyi", {"p": 0.3})]
)
def test_random_matching(base, base_params):
    n = 11
    a = build("random_matching", n, seed=5, base=base, base_params=base_params)
    b = build("random_matching", n, seed=5, base=base, base_params=base_params)
    c = build("random_matching", n, seed=6, base=base, base_params=base_params)
    mats = []
    for t in range(6):
        w = a.mixing_at(t)
        assert (w != b.mixing_at(t)).nnz == 0
        assert is_row_stochastic(w) and is_doubly_stochastic(w) and is_symmetric(w)
        d = w.diagonal()
        assert set(np.round(d, 12)) <= {0.5, 1.0}
        assert (d == 0.5).sum() % 2 == 0
        coo = w.tocoo()
        off = coo.row != coo.col
        a.edge_index(coo.col[off], coo.row[off])  # on base edges
        # maximal: no base edge joins two unmatched nodes
        free = d == 1.0
        assert not np.any(free[a.edges[:, 0]] & free[a.edges[:, 1]])
        mats.append(w.toarray())
    assert any(not np.array_equal(mats[0], m) for m in mats[1:])
    assert any((a.mixing_at(t) != c.mixing_at(t)).nnz for t in range(6))
    # deterministic per (seed, t) regardless of call order and cache
    w3 = a.mixing_at(3).toarray()
    a.mixing_at(0)
    np.testing.assert_array_equal(a.mixing_at(3).toarray(), w3)


def test_schedules_pickle():
    for name in ("one_peer_exponential", "random_matching"):
        plan = build(name, 8)
        w = plan.mixing_at(2).toarray()
        clone = pickle.loads(pickle.dumps(plan))
        np.testing.assert_array_equal(clone.mixing_at(2).toarray(), w)


def test_schedule_errors():
    with pytest.raises(ConfigError, match=r"topology\.params\.base"):
        build("random_matching", 8, base="nope")
    with pytest.raises(ConfigError, match=r"topology\.params\.base"):
        build("random_matching", 8, base="one_peer_exponential")
    with pytest.raises(ConfigError, match=r"topology\.params\.base_params") as err:
        build("random_matching", 8, base="erdos_renyi", base_params={"p": 2})
    assert "topology.params.p" in str(err.value)
    with pytest.raises(ConfigError, match=r"topology\.weights"):
        build_topology(TopologyConfig(name="one_peer_exponential", n=8, weights="uniform"), seed=0)

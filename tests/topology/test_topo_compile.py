"""build_topology / check_topology / describe / draw."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fedopt.errors import ConfigError
from fedopt.topology import (
    TopologyConfig,
    assign_star_roles,
    build_topology,
    check_topology,
    describe,
    draw,
)
from fedopt.topology.mixing import is_doubly_stochastic

DSGD = dict(connected=True, doubly_stochastic=True, symmetric=False, star=False)
FEDAVG = dict(connected=True, doubly_stochastic=False, symmetric=False, star=True)


def build(name, n=None, **kw):
    return build_topology(TopologyConfig(name=name, n=n, **kw), seed=0)


def test_plan_fields():
    plan = build("ring", 6)
    assert plan.roles == ("gossip",) * 6
    assert plan.edges.dtype == np.int64 and plan.edges.shape == (12, 2)
    assert plan.edge_attrs == {} and plan.period is None and not plan.is_time_varying
    assert is_doubly_stochastic(plan.mixing_at(0))
    idx = plan.edge_index(np.array([0, 5, 3]), np.array([1, 0, 2]))
    assert [tuple(plan.edges[i]) for i in idx] == [(0, 1), (5, 0), (3, 2)]
    with pytest.raises(ValueError):
        plan.edge_index(np.array([0]), np.array([3]))


def test_describe_ring():
    d = describe(build("ring", 10))
    assert (d["n"], d["edges"]) == (10, 10)
    assert (d["degree_min"], d["degree_mean"], d["degree_max"]) == (2, 2.0, 2)
    assert d["connected"] and d["diameter"] == 5 and d["period"] is None
    assert d["spectral"]["spectral_gap"] > 0


def test_describe_schedule():
    d = describe(build("one_peer_exponential", 8))
    assert d["time_varying"] and d["period"] == 3 and d["connected"]


def test_star_check_assigns_roles():
    plan = build("ring", 6)
    with pytest.raises(ConfigError) as err:
        check_topology(plan, **FEDAVG, algorithm="fedavg")
    msg = str(err.value)
    assert msg.startswith("topology:")
    assert "algorithm 'fedavg' needs a star (one server + clients); 'ring' is not a star" in msg
    assert "Use topology.name: star" in msg
    star = build("star", 5)
    assert check_topology(star, **FEDAVG, algorithm="fedavg").roles == star.roles
    # a star from a file without roles gets them assigned
    from fedopt.topology.base import TopologyPlan

    bare = TopologyPlan(
        n=4,
        roles=("gossip",) * 4,
        edges=star.edges[:0],
        edge_attrs={},
        undirected=True,
        name="x",
        weights_rule="metropolis",
        mixing_static=None,
    )
    with pytest.raises(ConfigError):
        assign_star_roles(bare)
    gossip_star = build("complete", 2)
    out = check_topology(gossip_star, **FEDAVG, algorithm="fedavg")
    assert out.roles == ("server", "client")
    assert assign_star_roles(gossip_star).roles == ("server", "client")


def test_disconnected_error(tmp_path):
    (tmp_path / "foo.edgelist").write_text(
        "\n".join(f"{i} {i + 1}" for i in range(9)) + "\n10 11\n11 12\n12 13\n14 15\n"
    )
    plan = build_topology(TopologyConfig(name="foo.edgelist"), seed=0, base_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        check_topology(plan, **DSGD, algorithm="dsgd")
    msg = str(err.value)
    assert msg.startswith("topology: the graph 'foo.edgelist' is disconnected")
    assert "(3 components: sizes 10, 4, 2)" in msg
    assert "algorithm 'dsgd' needs a connected graph" in msg


def test_not_doubly_stochastic_error():
    plan = build("barbell", 8, weights="uniform")
    with pytest.raises(ConfigError) as err:
        check_topology(plan, **DSGD, algorithm="dsgd")
    msg = str(err.value)
    assert msg.startswith("topology.weights: rule 'uniform' on this irregular graph")
    assert "not doubly stochastic (column sums range" in msg
    assert "algorithm 'dsgd' needs doubly stochastic weights: use weights: metropolis" in msg
    check_topology(build("barbell", 8), **DSGD, algorithm="dsgd")
    # uniform on a regular graph is fine
    check_topology(build("ring", 8, weights="uniform"), **DSGD, algorithm="dsgd")


def test_symmetric_error():
    plan = build("star", 6, weights="uniform")
    with pytest.raises(ConfigError, match=r"topology\.weights") as err:
        check_topology(
            plan,
            connected=True,
            doubly_stochastic=False,
            symmetric=True,
            star=False,
            algorithm="gradient_tracking",
        )
    assert "not symmetric" in str(err.value)


def test_weights_field_errors():
    with pytest.raises(ConfigError, match=r"topology\.laplacian_alpha"):
        build("ring", 6, laplacian_alpha=0.1)
    plan = build("ring", 6, weights="laplacian", laplacian_alpha=0.25)
    assert plan.mixing_static[0, 1] == pytest.approx(0.25)


def test_draw(tmp_path):
    out = draw(build("star", 8), tmp_path / "star.png")
    assert out.exists() and out.read_bytes()[:4] == b"\x89PNG"
    out = draw(build("one_peer_exponential", 8), tmp_path / "sub" / "ope.png")
    assert out.exists()


def test_import_does_not_pull_matplotlib_or_ray():
    code = "import sys, fedopt.topology; print('matplotlib' in sys.modules, 'ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]

"""Mixing rules: stochasticity and symmetry."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from fedopt.errors import ConfigError
from fedopt.topology import mixing_matrix
from fedopt.topology.mixing import is_doubly_stochastic, is_row_stochastic, is_symmetric

IRREGULAR = nx.barbell_graph(4, 2)  # degrees 3, 4 and 2
REGULAR = nx.cycle_graph(7)


@pytest.mark.parametrize(
    "graph", [IRREGULAR, REGULAR, nx.star_graph(6)], ids=["irr", "reg", "star"]
)
@pytest.mark.parametrize("rule", ["metropolis", "max_degree", "laplacian"])
def test_symmetric_rules_are_doubly_stochastic(graph, rule):
    w = mixing_matrix(graph, rule)
    assert w.shape == (graph.number_of_nodes(),) * 2
    assert w.dtype == np.float64
    assert is_row_stochastic(w)
    assert is_doubly_stochastic(w)
    assert is_symmetric(w)
    assert w.toarray().min() >= 0


def test_metropolis_formula():
    g = nx.star_graph(3)  # hub degree 3, leaves degree 1
    w = mixing_matrix(g, "metropolis").toarray()
    assert w[0, 1] == pytest.approx(1 / 4)
    assert w[1, 1] == pytest.approx(3 / 4)
    assert w[0, 0] == pytest.approx(1 / 4)


def test_max_degree_formula():
    w = mixing_matrix(nx.path_graph(4), "max_degree").toarray()
    assert w[0, 1] == pytest.approx(1 / 3)
    assert w[0, 0] == pytest.approx(2 / 3)
    assert w[1, 1] == pytest.approx(1 / 3)


def test_uniform_is_row_but_not_doubly_stochastic_on_irregular():
    w = mixing_matrix(IRREGULAR, "uniform")
    assert is_row_stochastic(w)
    assert not is_doubly_stochastic(w)
    assert not is_symmetric(w)
    d = dict(IRREGULAR.degree())
    dense = w.toarray()
    for i in IRREGULAR:
        assert dense[i, i] == pytest.approx(1 / (d[i] + 1))
    r = mixing_matrix(REGULAR, "uniform")
    assert is_doubly_stochastic(r) and is_symmetric(r)


def test_laplacian_rule_and_alpha():
    g = nx.cycle_graph(6)
    w = mixing_matrix(g, "laplacian", laplacian_alpha=0.25).toarray()
    lap = nx.laplacian_matrix(g).toarray()
    np.testing.assert_allclose(w, np.eye(6) - 0.25 * lap)
    default = mixing_matrix(g, "laplacian").toarray()
    np.testing.assert_allclose(default, np.eye(6) - lap / 3)


def test_laplacian_alpha_too_large_is_an_error():
    with pytest.raises(ConfigError, match=r"topology\.laplacian_alpha") as err:
        mixing_matrix(nx.star_graph(5), "laplacian", laplacian_alpha=0.5)
    assert "negative" in str(err.value)


def test_unknown_rule():
    with pytest.raises(ConfigError, match=r"topology\.weights"):
        mixing_matrix(REGULAR, "bogus")

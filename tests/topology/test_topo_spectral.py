"""Spectral facts: the DADAO constants table and basic gap properties."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from fedopt.topology import TopologyConfig, build_topology, spectral_facts

# (graph, |E|, chi1, chi2, lambda_mix)
TABLE = [
    ("complete16", nx.complete_graph(16), 120, 7.50, 7.50, 10.61),
    ("cycle16", nx.cycle_graph(16), 16, 105.10, 7.50, 39.70),
    ("path16", nx.path_graph(16), 15, 390.33, 7.50, 76.52),
    ("star16", nx.star_graph(15), 15, 15.00, 7.50, 15.00),
    ("grid4x4", nx.convert_node_labels_to_integers(nx.grid_2d_graph(4, 4)), 24, 40.97, 8.41, 26.25),
    ("barbell8", nx.barbell_graph(8, 0), 57, 279.18, 28.50, 126.15),
    ("ring8", nx.cycle_graph(8), 8, 13.66, 3.50, 9.78),
    ("star300", nx.star_graph(299), 299, 299.0, 149.5, 299.0),
]


@pytest.mark.parametrize(
    ("label", "graph", "m", "chi1", "chi2", "lam"), TABLE, ids=[t[0] for t in TABLE]
)
def test_dadao_constants(label, graph, m, chi1, chi2, lam):
    assert graph.number_of_edges() == m
    f = spectral_facts(graph)
    assert round(f["dadao_chi1"], 2) == pytest.approx(chi1, abs=1e-9)
    assert round(f["dadao_chi2"], 2) == pytest.approx(chi2, abs=1e-9)
    assert round(f["dadao_lambda_mix"], 2) == pytest.approx(lam, abs=1e-9)


def test_laplacian_and_gap_values():
    f = spectral_facts(nx.complete_graph(16))
    assert f["laplacian_algebraic_connectivity"] == pytest.approx(16.0)
    assert f["laplacian_max_eigenvalue"] == pytest.approx(16.0)
    assert f["max_edge_effective_resistance"] == pytest.approx(2 / 16)
    # Metropolis on K_n is J/n: SLEM 0, gap 1
    assert f["spectral_gap"] == pytest.approx(1.0)
    ring = spectral_facts(nx.cycle_graph(16))
    assert 0 < ring["spectral_gap"] < f["spectral_gap"]
    assert ring["second_largest_eigenvalue_modulus"] == pytest.approx(1 - ring["spectral_gap"])


def test_plan_and_graph_agree():
    plan = build_topology(TopologyConfig(name="ring", n=12), seed=0)
    assert spectral_facts(plan) == spectral_facts(plan.graph)


def test_disconnected_graph_has_zero_gap():
    g = nx.disjoint_union(nx.cycle_graph(4), nx.cycle_graph(4))
    f = spectral_facts(g)
    assert f["spectral_gap"] == pytest.approx(0.0, abs=1e-9)
    assert f["dadao_chi1"] == float("inf")


def test_time_varying_plan_reports_union_graph():
    plan = build_topology(TopologyConfig(name="one_peer_exponential", n=8), seed=0)
    f = spectral_facts(plan)
    assert f["spectral_gap"] is None
    assert f["laplacian_algebraic_connectivity"] > 0


def test_sparse_branch_matches_closed_form():
    # n > 2000 takes the sparse (shift-invert Lanczos) path
    n = 2100
    f = spectral_facts(nx.cycle_graph(n))
    theta = 2 * np.pi / n
    assert f["laplacian_algebraic_connectivity"] == pytest.approx(2 - 2 * np.cos(theta), rel=1e-6)
    assert f["laplacian_max_eigenvalue"] == pytest.approx(4.0)
    # Metropolis on a ring: W = (I + A) / 3, eigenvalues (1 + 2 cos(2 pi k / n)) / 3
    slem = max((1 + 2 * np.cos(theta)) / 3, 1 / 3)
    assert f["second_largest_eigenvalue_modulus"] == pytest.approx(slem, rel=1e-9)
    assert f["dadao_chi1"] == pytest.approx(n / (2 - 2 * np.cos(theta)), rel=1e-6)
    assert f["max_edge_effective_resistance"] is None and f["dadao_chi2"] is None

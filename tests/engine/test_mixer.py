"""The batched mixer equals W @ X, and a shard of rows gets the same bits as the whole."""

import networkx as nx
import numpy as np
import pytest
import torch

from fedopt.engine.mixer import Mixer, degree_cap
from fedopt.topology import mixing_matrix


@pytest.mark.parametrize("graph", [nx.cycle_graph(9), nx.star_graph(30), nx.barbell_graph(5, 2)])
def test_mixer_matches_dense_product(graph: nx.Graph) -> None:
    W = mixing_matrix(graph, "metropolis")
    X = torch.randn(W.shape[0], 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    Y = Mixer(W, degree_cap(W), torch.float64, torch.device("cpu"))(X)
    assert torch.allclose(Y, torch.from_numpy(W.toarray()) @ X, atol=1e-12)


def test_star_hub_is_a_heavy_row() -> None:
    W = mixing_matrix(nx.star_graph(30), "metropolis")
    m = Mixer(W, degree_cap(W), torch.float32, torch.device("cpu"))
    assert [h[0] for h in m.heavy] == [0] and m.nbr.shape[1] == 2


@pytest.mark.parametrize("graph", [nx.cycle_graph(12), nx.star_graph(20)])
def test_sharded_rows_give_identical_bits(graph: nx.Graph) -> None:
    W = mixing_matrix(graph, "metropolis").tocsr()
    n = W.shape[0]
    X = torch.randn(n, 33, generator=torch.Generator().manual_seed(2))
    cap = degree_cap(W)
    full = Mixer(W, cap, X.dtype, torch.device("cpu"))(X)
    rows = np.array([0, 3, 4, 7, 11])
    needed = np.unique(W[rows].indices)  # hosted + halo columns, stored in a shuffled order
    order = np.random.default_rng(0).permutation(needed)
    col_map = np.full(n, -1)
    col_map[order] = np.arange(len(order))
    part = Mixer(W[rows], cap, X.dtype, torch.device("cpu"), col_map=col_map)(X[order])
    assert torch.equal(part, full[rows])

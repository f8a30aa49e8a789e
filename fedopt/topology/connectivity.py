"""DIMAT's connectivity cases as built-in topologies: ``two_hub`` and ``disconnected``.

Saadati et al., "DIMAT: Decentralized Iterative Merging-And-Training for Deep Learning
Models", CVPR 2024, run every method on four mixing matrices ``Pi`` (their
``Connectivity/{N}_{id}.json`` files; spec ``dimat.md`` section 3.5):

* 1, fully connected, ``pi_ij = 1/N``: ``complete`` (metropolis);
* 2, ring, self and both neighbours ``1/3`` each: ``ring`` (metropolis);
* 3, "bipartite", two hubs (:func:`two_hub`): ``two_hub`` with ``weights: given``;
* 4, disconnected, ``Pi = I`` (local training only): ``disconnected``.

Metropolis weights ``1 / (1 + max(d_i, d_j))`` give cases 1 and 2 exactly (every degree
is ``N - 1``, resp. 2). Case 3 is irregular, so its weights are written on the graph's
edges and read with ``topology.weights: given`` (:mod:`fedopt.topology.given`).
"""

from __future__ import annotations

import math

import networkx as nx

from fedopt.topology.builtins import TOPOLOGIES, need_n


def hub_weight(n: int) -> float:
    """DIMAT's hub-edge weight ``a = floor(100 / (n - 1)) / 100`` (0.25 for ``n = 5``)."""
    return math.floor(100 / (n - 1)) / 100


@TOPOLOGIES.register("two_hub")
def two_hub(n: int, *, seed: int) -> nx.Graph:
    """DIMAT's "bipartite" case: leaves ``0..n-3`` each linked to both hubs ``n-2, n-1``.

    Every edge carries ``weight = a = floor(100 / (n - 1)) / 100`` (:func:`hub_weight`);
    the hubs are not linked to each other. Under ``topology.weights: given`` the diagonal
    is the rest of each row: a leaf keeps ``1 - 2a``, a hub ``1 - (n - 2) a`` (for
    ``n = 5``: ``a = 0.25``, leaves ``0.5``, hubs ``0.25``), a symmetric doubly
    stochastic matrix. Needs ``n >= 3``.
    """
    need_n("two_hub", n, 3)
    a = hub_weight(n)
    g = nx.Graph()
    g.add_nodes_from(range(n))
    for leaf in range(n - 2):
        for hub in (n - 2, n - 1):
            g.add_edge(leaf, hub, weight=a)
    return g


@TOPOLOGIES.register("disconnected")
def disconnected(n: int, *, seed: int) -> nx.Graph:
    """``n`` isolated nodes: the mixing matrix is ``I`` (DIMAT's local-training case)."""
    need_n("disconnected", n, 1)
    g = nx.Graph()
    g.add_nodes_from(range(n))
    return g

"""Which nodes each actor hosts.

* ``contiguous``: node ids in order, cut into near-equal shards.
* ``partition``: a graph partition of the topology (union over time) that minimises
  the edges cut between actors, with METIS (``pymetis``) when installed and
  recursive Kernighan-Lin bisection from networkx otherwise.

With ``pin_server`` the server node gets an actor of its own; one-node-per-actor mode
gives every node its own actor.
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from fedopt.engine.plan import Plan
from fedopt.errors import ConfigError


def shard_nodes(plan: Plan, actors: int) -> list[np.ndarray]:
    """Sorted node ids of each actor's shard (every shard non-empty)."""
    eng = plan.config.engine
    n = plan.topology.n
    if eng.one_node_per_actor:
        return [np.array([i], dtype=np.int64) for i in range(n)]
    if actors < 1:
        raise ConfigError(f"engine.actors: must be at least 1, got {actors}")
    if actors > n:
        raise ConfigError(
            f"engine.actors: {actors} actors for n={n} nodes; use at most n actors "
            "(or engine.one_node_per_actor: true for one actor per node)"
        )
    nodes = np.arange(n, dtype=np.int64)
    pinned: list[np.ndarray] = []
    if eng.pin_server and plan.server_id is not None and actors >= 2:
        pinned = [np.array([plan.server_id], dtype=np.int64)]
        nodes = nodes[nodes != plan.server_id]
        actors -= 1
    if eng.placement == "partition" and actors > 1:
        shards = _partition(plan, nodes, actors)
    else:
        shards = [s for s in np.array_split(nodes, actors) if len(s)]
    return pinned + shards


def _partition(plan: Plan, nodes: np.ndarray, parts: int) -> list[np.ndarray]:
    edges = plan.topology.edges
    keep = np.isin(edges[:, 0], nodes) & np.isin(edges[:, 1], nodes)
    index = {int(v): i for i, v in enumerate(nodes)}
    g = nx.Graph()
    g.add_nodes_from(range(len(nodes)))
    g.add_edges_from((index[int(a)], index[int(b)]) for a, b in edges[keep])
    labels = _metis(g, parts)
    if labels is None:
        labels = _kernighan_lin(g, parts)
    shards = [np.sort(nodes[labels == p]) for p in range(parts)]
    shards = [s for s in shards if len(s)]
    return sorted(shards, key=lambda s: int(s[0]))


def _metis(g: nx.Graph, parts: int) -> np.ndarray | None:
    try:
        import pymetis
    except ImportError:
        return None
    adjacency = [sorted(g.neighbors(i)) for i in range(g.number_of_nodes())]
    _, membership = pymetis.part_graph(parts, adjacency=adjacency)
    return np.asarray(membership, dtype=np.int64)


def _kernighan_lin(g: nx.Graph, parts: int) -> np.ndarray:
    """Recursive Kernighan-Lin bisection into ``parts`` groups (sizes proportional)."""
    labels = np.zeros(g.number_of_nodes(), dtype=np.int64)

    def split(members: list[int], k: int, first: int) -> None:
        if k == 1 or len(members) <= 1:
            labels[members] = first
            return
        left_k = k // 2
        sub = g.subgraph(members)
        a, b = nx.algorithms.community.kernighan_lin_bisection(sub, seed=0)
        a, b = sorted(a), sorted(b)
        want = round(len(members) * left_k / k)
        both = a + b  # move nodes across to honour uneven part counts
        a, b = both[:want], both[want:]
        split(a, left_k, first)
        split(b, k - left_k, first + left_k)

    split(list(range(g.number_of_nodes())), parts, 0)
    return labels


def cut_edges(plan: Plan, shards: list[np.ndarray]) -> int:
    """Undirected edges whose ends sit on different actors."""
    owner = np.empty(plan.topology.n, dtype=np.int64)
    for r, s in enumerate(shards):
        owner[s] = r
    e = plan.topology.edges
    return int((owner[e[:, 0]] != owner[e[:, 1]]).sum()) // 2

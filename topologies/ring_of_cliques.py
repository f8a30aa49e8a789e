"""Plug-in example: a ring of cliques.

Usable both as the registered name ``ring_of_cliques`` (this folder is imported lazily
when ``topology.name`` is not a built-in) and by path as
``topologies/ring_of_cliques.py:ring_of_cliques``::

    topology:
      name: ring_of_cliques
      n: 20
      params: {clique_size: 5}
"""

from __future__ import annotations

import networkx as nx

from fedopt.errors import ConfigError
from fedopt.topology import TOPOLOGIES


@TOPOLOGIES.register("ring_of_cliques")
def ring_of_cliques(n: int, *, seed: int, clique_size: int = 4) -> nx.Graph:
    """``n / clique_size`` cliques of ``clique_size`` nodes, consecutive cliques joined by one edge.

    Clique ``c`` holds nodes ``c * clique_size .. (c + 1) * clique_size - 1``; the graph is
    deterministic (``seed`` is unused). Needs ``clique_size >= 2`` dividing ``n`` and at
    least two cliques.
    """
    if isinstance(clique_size, bool) or not isinstance(clique_size, int) or clique_size < 2:
        raise ConfigError(
            f"topology.params.clique_size: ring_of_cliques needs an integer >= 2, "
            f"got {clique_size!r}"
        )
    if n % clique_size or n // clique_size < 2:
        raise ConfigError(
            f"topology.n: ring_of_cliques needs n to be a multiple of clique_size = "
            f"{clique_size} with at least two cliques, got n = {n}. Use topology.n: "
            f"{max(2, round(n / clique_size)) * clique_size}"
        )
    return nx.ring_of_cliques(n // clique_size, clique_size)

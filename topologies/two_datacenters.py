"""Plug-in example: two data centres joined by a few slow links (link-model plug-in).

Each data centre is a complete graph; ``links`` random pairs across the two join them.
The inter-data-centre edges carry the link attributes ``latency_s`` and
``bandwidth_Bps`` read by the network model; edges without them (inside a data centre)
use the network model's defaults. Usable as ``two_datacenters`` or as
``topologies/two_datacenters.py:two_datacenters``::

    topology:
      name: two_datacenters
      n: 16
      params: {links: 2, latency_s: 0.04, bandwidth_Bps: 1.25e8}
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from fedopt.errors import ConfigError
from fedopt.rng import numpy_seed
from fedopt.topology import TOPOLOGIES


@TOPOLOGIES.register("two_datacenters")
def two_datacenters(
    n: int,
    *,
    seed: int,
    links: int = 2,
    latency_s: float = 0.04,
    bandwidth_Bps: float = 1.25e8,
) -> nx.Graph:
    """Nodes ``0..n/2-1`` and ``n/2..n-1`` form two cliques joined by ``links`` slow edges.

    The cross edges pair distinct random nodes of each side, drawn from
    ``numpy_seed(seed, "topology", 0)``; each gets ``latency_s`` (default 40 ms) and
    ``bandwidth_Bps`` (default 1.25e8 B/s = 1 Gbit/s).
    """
    if n < 4:
        raise ConfigError(f"topology.n: two_datacenters needs n >= 4, got {n}")
    half = n // 2
    if isinstance(links, bool) or not isinstance(links, int) or not 1 <= links <= half:
        raise ConfigError(
            f"topology.params.links: two_datacenters needs 1 <= links <= {half}, got {links!r}"
        )
    if not latency_s >= 0:
        raise ConfigError(f"topology.params.latency_s: must be >= 0, got {latency_s!r}")
    if not bandwidth_Bps > 0:
        raise ConfigError(f"topology.params.bandwidth_Bps: must be > 0, got {bandwidth_Bps!r}")
    g = nx.complete_graph(half)
    g.add_edges_from(nx.complete_graph(range(half, n)).edges())
    rng = np.random.default_rng(numpy_seed(seed, "topology", 0))
    left = rng.choice(half, size=links, replace=False)
    right = half + rng.choice(n - half, size=links, replace=False)
    for u, v in zip(left.tolist(), right.tolist(), strict=True):
        g.add_edge(u, v, latency_s=float(latency_s), bandwidth_Bps=float(bandwidth_Bps))
    return g

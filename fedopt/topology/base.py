"""The topology contract between the topology package and the engine.

A :class:`TopologyPlan` is plain picklable data compiled from the ``topology`` section
of an experiment: node roles, the directed edge list (the union over time for
time-varying schedules), per-edge link attributes from the graph file, and the mixing
matrix ``W_t`` for every round ``t``. ``W_t`` is row-stochastic: node ``i`` combines
``sum_j W_t[i, j] x_j``, so a nonzero ``W_t[i, j]`` with ``i != j`` is one message
``j -> i`` in that round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import networkx as nx
import numpy as np
import scipy.sparse as sp
from pydantic import Field

from fedopt.fields import COUNT_MAX, Section

MixingRule = Literal["metropolis", "max_degree", "uniform", "laplacian", "given"]
ROLES = ("gossip", "client", "server")
LINK_ATTRS = ("latency_s", "bandwidth_Bps", "loss", "drop", "rate")


class TopologyConfig(Section):
    """The ``topology`` section of an experiment.

    ``name`` is a registered topology (``fedopt list``), a Python plug-in
    ``path/to/file.py:function`` (relative paths resolve against the experiment file's
    folder, then the working directory, then the repository's ``topologies/``), or a
    graph file (``.edgelist``/``.txt``/``.csv`` edge list, ``.adjlist``, ``.graphml``,
    ``.gml``, ``.npy`` adjacency matrix).
    """

    name: str = Field("ring", description="registered name, file.py:function, or graph file")
    n: int | None = Field(
        None, ge=1, le=COUNT_MAX, description="number of nodes (inferred from a graph file)"
    )
    params: dict[str, Any] = Field(default_factory=dict, description="generator keyword arguments")
    weights: MixingRule = Field(
        "metropolis",
        description="rule that turns the graph into W (given: the edges' weight attribute)",
    )
    laplacian_alpha: float | None = Field(
        None, gt=0, description="step a of W = I - a L (default 1/(max degree + 1))"
    )


@dataclass(frozen=True)
class TopologyPlan:
    """Compiled topology: what every engine and the meter need, as plain arrays.

    Attributes
    ----------
    n
        Number of nodes, labelled ``0..n-1``.
    roles
        Role per node (``gossip``, ``client`` or ``server``).
    edges
        ``[E, 2]`` int64 directed edges ``(src, dst)`` without self loops, sorted by
        ``(src, dst)``; both directions for an undirected graph; for a time-varying
        schedule, the union of every round's edges.
    edge_attrs
        Per-edge float64 arrays aligned with ``edges`` for each of ``LINK_ATTRS`` that
        the graph file or generator set; NaN where an edge lacks it.
    undirected
        Whether every ``(i, j)`` edge has its ``(j, i)`` twin.
    period
        ``None`` for a static topology; otherwise ``W_t`` depends on ``t`` and repeats
        (or is resampled, for random schedules) every round.
    name
        Display name (registered name or file).
    graph
        The static networkx graph (``None`` for time-varying schedules), for drawing.
    """

    n: int
    roles: tuple[str, ...]
    edges: np.ndarray
    edge_attrs: dict[str, np.ndarray]
    undirected: bool
    name: str
    weights_rule: str
    mixing_static: sp.csr_matrix | None
    schedule: Any = None  # object with .mixing_at(t) -> csr for time-varying topologies
    period: int | None = None
    graph: nx.Graph | None = field(default=None, compare=False)

    def mixing_at(self, t: int) -> sp.csr_matrix:
        """Row-stochastic mixing matrix ``W_t`` (n x n, CSR, float64) for round ``t``."""
        if self.mixing_static is not None:
            return self.mixing_static
        return self.schedule.mixing_at(t)

    @property
    def is_time_varying(self) -> bool:
        """True when ``W_t`` changes with ``t``."""
        return self.mixing_static is None

    def edge_index(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Positions in :attr:`edges` of the directed edges ``src -> dst`` (must exist)."""
        keys = self.edges[:, 0] * self.n + self.edges[:, 1]
        q = np.asarray(src, dtype=np.int64) * self.n + np.asarray(dst, dtype=np.int64)
        pos = np.searchsorted(keys, q)
        if len(q) and (pos.max(initial=0) >= len(keys) or not np.array_equal(keys[pos], q)):
            raise ValueError("edge_index: some messages travel on edges not in the topology")
        return pos

    def role_nodes(self, role: str) -> np.ndarray:
        """Sorted node ids with the given role."""
        return np.array([i for i, r in enumerate(self.roles) if r == role], dtype=np.int64)

"""The compiled, picklable plan that every engine runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedopt.config.schema import ExperimentConfig
from fedopt.topology.base import TopologyPlan


@dataclass(frozen=True)
class Plan:
    """Everything an engine needs, validated; contains no data, only specs and seeds.

    Attributes
    ----------
    config
        The validated experiment.
    topology
        Compiled topology (roles assigned, requirements checked).
    data_nodes
        Sorted global ids of the nodes that hold data (every role but ``server``);
        a node's *data rank* is its position here.
    server_id
        Global id of the server node, or None.
    base_dir
        Folder of the experiment file (for relative plug-in paths).
    plugin_sources
        ``{module name: (origin, source)}`` of the experiment's plug-in files, which
        every remote worker installs before building its nodes.
    facts
        Compile-time facts the algorithm asked for
        (:meth:`~fedopt.algorithms.base.Algorithm.plan_facts`), computed once by the
        compiler from every node's data, so workers read them instead of rebuilding
        other workers' oracles: the worst-case ``mu`` and ``L`` over all data nodes,
        graph constants, ... Plain picklable values.
    buf_dim
        Width of the per-node buffer rows that travel with the parameters
        (``Problem.buffer_dim``: running BatchNorm statistics), 0 without. The reported
        models are then packed rows ``[dim + buf_dim]``: parameters, then buffers.
    """

    config: ExperimentConfig
    topology: TopologyPlan
    data_nodes: np.ndarray
    server_id: int | None
    base_dir: Path | None = None
    plugin_sources: dict[str, tuple[str, str]] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    buf_dim: int = 0

    @property
    def clients(self) -> np.ndarray:
        """Sorted ids of the client nodes."""
        return self.topology.role_nodes("client")

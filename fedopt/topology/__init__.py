"""Communication topologies: generators, plug-ins, graph files and mixing matrices.

``build_topology(config, seed=...)`` turns the ``topology`` section of an experiment into
a :class:`TopologyPlan`; ``check_topology`` verifies it suits an algorithm. Importing this
package registers the built-in generators and schedules; it imports neither ray nor
matplotlib.
"""

from fedopt.topology import connectivity as _connectivity  # noqa: F401  (registers)
from fedopt.topology import schedules as _schedules  # noqa: F401  (registers schedules)
from fedopt.topology.base import LINK_ATTRS, ROLES, TopologyConfig, TopologyPlan
from fedopt.topology.builtins import TOPOLOGIES
from fedopt.topology.compile import (
    assign_star_roles,
    build_topology,
    check_topology,
    describe,
    draw,
    sequence_graphs,
)
from fedopt.topology.mixing import mixing_matrix
from fedopt.topology.spectral import dadao_constants, spectral_facts

__all__ = [
    "LINK_ATTRS",
    "ROLES",
    "TOPOLOGIES",
    "TopologyConfig",
    "TopologyPlan",
    "assign_star_roles",
    "build_topology",
    "check_topology",
    "dadao_constants",
    "describe",
    "draw",
    "mixing_matrix",
    "sequence_graphs",
    "spectral_facts",
]

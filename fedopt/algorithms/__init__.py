"""Algorithms: each module registers itself in :data:`ALGORITHMS`."""

from fedopt.algorithms import async_gossip, dadao, dsgd, fedavg  # noqa: F401  (registration)
from fedopt.algorithms.base import ALGORITHMS, Algorithm, AlgorithmConfig, WorkerContext

__all__ = ["ALGORITHMS", "Algorithm", "AlgorithmConfig", "WorkerContext"]

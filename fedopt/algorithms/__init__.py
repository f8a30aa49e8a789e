"""Algorithms: each module registers itself in :data:`ALGORITHMS`."""

from fedopt.algorithms import (  # noqa: F401  (registration)
    adom,
    async_gossip,
    continuized,
    cwtm,
    dadao,
    diff2,
    dp_sgd,
    dsgd,
    fedavg,
    fedkseed,
    fedzo,
    ferret,
    fzoos,
    geomed,
    learn,
    monna,
    msda,
    p2p_mean,
    scaffold_zo,
    scc,
)
from fedopt.algorithms.base import ALGORITHMS, Algorithm, AlgorithmConfig, WorkerContext

__all__ = ["ALGORITHMS", "Algorithm", "AlgorithmConfig", "WorkerContext"]

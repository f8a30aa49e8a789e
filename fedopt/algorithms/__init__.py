"""Algorithms: each module registers itself in :data:`ALGORITHMS`."""

from fedopt.algorithms import (  # noqa: F401  (registration)
    adom,
    async_gossip,
    cdsgd,
    cga,
    continuized,
    cwtm,
    dadao,
    diff2,
    dimat,
    dp_sgd,
    dsgd,
    fedavg,
    fedkseed,
    fedzo,
    ferret,
    fzoos,
    geomed,
    learn,
    local_training,
    monna,
    msda,
    p2p_mean,
    scaffold_zo,
    scc,
)
from fedopt.algorithms.base import ALGORITHMS, Algorithm, AlgorithmConfig, WorkerContext

__all__ = ["ALGORITHMS", "Algorithm", "AlgorithmConfig", "WorkerContext"]

"""Self-centered clipping (SCC) of models, with momentum 0.9.

The robust P2P round (:mod:`fedopt.algorithms.robust_p2p`) where each node clips its
neighbours' models around its own half step (ClippedGossip: He, Karimireddy & Jaggi,
"Byzantine-robust decentralized learning via ClippedGossip", arXiv 2202.01545)::

    v <- own; repeat 3 times: v <- v + mean_k clip(x_k - v, tau)

with tau = 2 (the MoNNA paper's MNIST value).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from fedopt.algorithms.base import ALGORITHMS
from fedopt.algorithms.robust_p2p import RobustP2P, RobustP2PConfig
from fedopt.fields import COUNT_MAX


class SCCConfig(RobustP2PConfig):
    name: Literal["scc"] = "scc"
    momentum: float = Field(0.9, ge=0, lt=1, description="beta of the momentum EMA")
    tau: float = Field(2.0, gt=0, description="clipping radius (2 on MNIST, 5 on CIFAR)")
    iterations: int = Field(3, ge=1, le=COUNT_MAX, description="clipping iterations")


@ALGORITHMS.register("scc")
class SCC(RobustP2P):
    """Self-centered clipping around the node's own half step."""

    Config = SCCConfig
    aggregator = "scc"

    @classmethod
    def aggregator_params(cls, config: Any) -> dict[str, Any]:
        return {"tau": config.tau, "iterations": config.iterations}

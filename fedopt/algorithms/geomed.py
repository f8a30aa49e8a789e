"""Geometric median of models: MoGM (momentum 0.99) and GM (none).

The robust P2P round (:mod:`fedopt.algorithms.robust_p2p`) with the geometric median
by smoothed Weiszfeld iterations (RFA: Pillutla, Kakade & Harchaoui, "Robust
aggregation for federated learning", IEEE TSP 2022), as the MoNNA paper configures it:
smoothing nu = 0.1, 3 iterations started at 0.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from fedopt.algorithms.base import ALGORITHMS
from fedopt.algorithms.robust_p2p import MomentumP2PConfig, RobustP2P, RobustP2PConfig
from fedopt.fields import COUNT_MAX


class GMConfig(RobustP2PConfig):
    """Geometric median without momentum."""

    name: Literal["gm", "mogm"] = "gm"
    nu: float = Field(0.1, gt=0, description="Weiszfeld smoothing")
    iterations: int = Field(3, ge=1, le=COUNT_MAX, description="Weiszfeld iterations from 0")


class MoGMConfig(MomentumP2PConfig, GMConfig):
    """Geometric median with momentum 0.99."""

    name: Literal["mogm"] = "mogm"


@ALGORITHMS.register("mogm")
class MoGM(RobustP2P):
    """Geometric median (smoothed Weiszfeld) of models, with momentum."""

    Config = MoGMConfig
    aggregator = "geometric_median"

    @classmethod
    def aggregator_params(cls, config: Any) -> dict[str, Any]:
        return {"nu": config.nu, "iterations": config.iterations}


@ALGORITHMS.register("gm")
class GM(MoGM):
    """Geometric median (smoothed Weiszfeld) of models, without momentum."""

    Config = GMConfig

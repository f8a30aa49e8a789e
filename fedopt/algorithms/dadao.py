"""DADAO: Decoupled Accelerated Decentralized Asynchronous Optimization.

Nabli & Oyallon, ICML 2023 (arXiv 2208.00779). Each node takes a gradient step at the
arrivals of its own Poisson clock (rate 1); each edge gossips at the arrivals of its
own clock (total rate ``lambda_mix = sqrt(2 chi1 chi2)`` split evenly over edges, chi
computed on Lap/|E|); between events every node's six state vectors follow a linear
ODE that is integrated exactly. The update rules and constants are in
:mod:`fedopt.events.dadao`; this module holds the hyperparameters, and the engine's
event driver (:mod:`fedopt.engine.events_local`) runs it. An edge event sends ``y + z``
both ways: two messages of ``dim`` floats.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from fedopt.algorithms.base import ALGORITHMS, Algorithm, AlgorithmConfig, State


class DADAOConfig(AlgorithmConfig):
    """Hyperparameters of DADAO (every constant follows from mu, L and the graph)."""

    name: Literal["dadao"] = "dadao"
    mu: float | None = Field(None, gt=0, description="strong convexity (default: from problem)")
    L: float | None = Field(None, gt=0, description="smoothness (default: from the problem)")
    lambda_mix: float | None = Field(
        None, gt=0, description="total gossip rate (default: sqrt(2 chi1 chi2), the threshold)"
    )


@ALGORITHMS.register("dadao")
class DADAO(Algorithm):
    """DADAO on the event schedule (the round methods are not used)."""

    Config = DADAOConfig
    requires = frozenset({"connected"})
    roles = ("gossip", "client")
    schedule = "events"

    def init_state(self) -> State:  # pragma: no cover - event schedule only
        raise TypeError("dadao runs on the event schedule, not in rounds")

    def round(self, state: State, t: int) -> None:  # pragma: no cover - event schedule only
        raise TypeError("dadao runs on the event schedule, not in rounds")

    def output(self, state: State) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise TypeError("dadao runs on the event schedule, not in rounds")

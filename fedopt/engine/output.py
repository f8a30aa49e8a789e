"""What an engine hands back after a run, whatever the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedopt.engine.driver import RunResult


@dataclass
class EngineOutput:
    """A finished run: the schedule's result, merged per-edge meters, where it ran."""

    result: RunResult
    edge_messages: np.ndarray
    edge_bytes: np.ndarray
    device: str
    threads: int
    workers: list[dict[str, Any]] = field(default_factory=list)
    restarts: int = 0
    transport: list[Any] | None = None  # engine.transport: grpc: every worker's TransportStats

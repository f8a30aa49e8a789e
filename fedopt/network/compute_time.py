"""Compute-time model: simulated seconds spent on local steps.

A node ``i`` doing ``k`` local steps in round ``t`` spends

    k * step_time_s / speed_i * slowdown_{i,t}

simulated seconds. ``speed_i`` is fixed per node: given explicitly, or drawn once as
``exp(speed_spread * N(0,1))`` (log-normal, median 1). ``slowdown_{i,t}`` is
``straggler_slowdown`` with probability ``straggler_prob`` (drawn per node and round,
keyed by the seed) and 1 otherwise. Wall-clock time is never used.
"""

from __future__ import annotations

import torch
from pydantic import Field, field_validator

from fedopt import rng
from fedopt.fields import Section


class ComputeConfig(Section):
    """The ``compute`` section: simulated time per local step and node speeds."""

    step_time_s: float = Field(0.01, ge=0, description="seconds per local step at speed 1")
    speeds: list[float] | None = Field(None, description="explicit speed per node (length n)")
    speed_spread: float = Field(0.0, ge=0, description="sigma of log-normal node speeds")
    straggler_prob: float = Field(0.0, ge=0, le=1, description="chance a node straggles a round")
    straggler_slowdown: float = Field(5.0, ge=1, description="slowdown factor of a straggler")

    @field_validator("speeds")
    @classmethod
    def _positive(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and any(s <= 0 for s in v):
            bad = next(s for s in v if s <= 0)
            raise ValueError(f"every speed must be > 0, got {bad}; use a positive speed factor")
        return v


class ComputeTimeModel:
    """Seconds of simulated compute per node, for batches of nodes.

    Parameters
    ----------
    config
        The ``compute`` section.
    n
        Number of nodes (length of ``speeds`` when given).
    seed
        Experiment seed.
    """

    def __init__(self, config: ComputeConfig, n: int, seed: int) -> None:
        self.config = config
        self.seed = seed
        if config.speeds is not None:
            speeds = torch.tensor(config.speeds, dtype=torch.float64)
        elif config.speed_spread > 0:
            z = rng.normal(rng.node_keys(seed, "node_speed", torch.arange(n), 0), 1, torch.float64)
            speeds = torch.exp(config.speed_spread * z.squeeze(-1))
        else:
            speeds = torch.ones(n, dtype=torch.float64)
        self.step_seconds = config.step_time_s / speeds  # [n]

    def seconds(self, nodes: torch.Tensor, steps: int, t: int) -> torch.Tensor:
        """Simulated seconds (float64 ``[k]``) for ``steps`` local steps of ``nodes`` in round t."""
        sec = self.step_seconds[nodes] * float(steps)
        c = self.config
        if c.straggler_prob > 0 and c.straggler_slowdown != 1:
            keys = rng.node_keys(self.seed, "straggler", nodes, t)
            slow = rng.bernoulli(keys, 1, c.straggler_prob)
            sec = torch.where(slow.squeeze(-1), sec * c.straggler_slowdown, sec)
        return sec

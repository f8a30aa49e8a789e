"""Compute-time model: simulated seconds spent on local work, by kind.

A node ``i`` doing ``k`` units of work of kind ``c`` (a counter kind:
:mod:`fedopt.network.counters`) in round ``t`` spends

    k * cost_c / speed_i * slowdown_{i,t}

simulated seconds, where ``cost_c`` is ``compute.cost_s[c]``. A gradient costs
``compute.step_time_s`` unless ``cost_s`` names ``gradients``; every other kind costs
nothing unless ``cost_s`` names it, so runs that do not set ``cost_s`` keep their times.
``speed_i`` is fixed per node: given explicitly, or drawn once as
``exp(speed_spread * N(0,1))`` (log-normal, median 1). ``slowdown_{i,t}`` is
``straggler_slowdown`` with probability ``straggler_prob`` (drawn per node and round,
keyed by the seed) and 1 otherwise. Wall-clock time is never used.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, field_validator, model_validator

from fedopt import rng
from fedopt.fields import Section
from fedopt.network.counters import check_kind


class ComputeConfig(Section):
    """The ``compute`` section: simulated time per unit of work and node speeds."""

    step_time_s: float = Field(
        0.01, ge=0, description="seconds per local step (one gradient) at speed 1"
    )
    cost_s: dict[str, float] = Field(
        default_factory=dict,
        description="seconds per unit of each counted kind at speed 1 (gradients, "
        "per_sample_gradients, queries, forwards, backwards, merges); unnamed kinds: "
        "gradients cost step_time_s, the others 0",
    )
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

    @field_validator("cost_s")
    @classmethod
    def _costs(cls, v: dict[str, float]) -> dict[str, float]:
        for kind, sec in v.items():
            check_kind(kind)
            if not (sec >= 0 and math.isfinite(sec)):
                raise ValueError(
                    f"cost_s.{kind}: seconds per unit must be finite and >= 0, got {sec}"
                )
        return v

    @model_validator(mode="after")
    def _one_gradient_cost(self) -> ComputeConfig:
        given = "step_time_s" in self.model_fields_set
        if given and "gradients" in self.cost_s and self.cost_s["gradients"] != self.step_time_s:
            raise ValueError(
                f"step_time_s={self.step_time_s} and cost_s.gradients="
                f"{self.cost_s['gradients']} both set the cost of a gradient; give only one"
            )
        return self

    def cost(self, kind: str) -> float:
        """Seconds per unit of ``kind`` at speed 1."""
        if kind in self.cost_s:
            return self.cost_s[kind]
        return self.step_time_s if kind == "gradients" else 0.0


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
        self.speeds = speeds
        self.step_seconds = config.cost("gradients") / speeds  # [n]
        self._unit_seconds = {"gradients": self.step_seconds}

    def unit_seconds(self, kind: str) -> torch.Tensor:
        """``[n]`` seconds of one unit of ``kind`` per node (before straggling)."""
        per = self._unit_seconds.get(kind)
        if per is None:
            per = self._unit_seconds[kind] = self.config.cost(check_kind(kind)) / self.speeds
        return per

    def seconds(
        self, nodes: torch.Tensor, steps: int, t: int, kind: str = "gradients"
    ) -> torch.Tensor:
        """Simulated seconds (float64 ``[k]``): ``steps`` units of ``kind`` on ``nodes`` in round t.

        The straggler draw is keyed by (node, round), so every kind charged to a node in
        one round is slowed down alike.
        """
        sec = self.unit_seconds(kind)[nodes] * float(steps)
        c = self.config
        if c.straggler_prob > 0 and c.straggler_slowdown != 1:
            keys = rng.node_keys(self.seed, "straggler", nodes, t)
            slow = rng.bernoulli(keys, 1, c.straggler_prob)
            sec = torch.where(slow.squeeze(-1), sec * c.straggler_slowdown, sec)
        return sec

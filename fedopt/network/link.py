"""Link model: per-edge latency, bandwidth and loss turn bytes into delivery times.

A message of ``b`` bytes on edge ``e`` takes

    delay_e(b) = attempts * (latency_e + b / bandwidth_e)

simulated seconds, where ``attempts >= 1`` is the number of transmissions: on a link
with loss probability ``p_e`` each attempt is lost independently with probability
``p_e`` and resent at once (stop-and-wait retransmission), so ``attempts - 1`` is
geometric. Loss here only costs time and bytes; messages the algorithm never
receives are the fault schedule's business.

Per-edge values come from the topology's edge attributes where set, otherwise from
this section's defaults.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from fedopt import rng
from fedopt.fields import COUNT_MAX, Section
from fedopt.network.meter import HEADER_BYTES


class NetworkConfig(Section):
    """The ``network`` section: default link parameters and the message header."""

    latency_s: float = Field(0.001, ge=0, description="one-way latency per message (s)")
    bandwidth_Bps: float = Field(
        1.25e8,
        gt=0,
        allow_inf_nan=True,
        description="link bandwidth (bytes/s); inf: no transmission delay (latency only)",
    )
    loss: float = Field(0.0, ge=0, lt=1, description="probability an attempt is lost")
    header_bytes: int | Literal["measured"] = Field(
        HEADER_BYTES,
        description="fixed bytes per message; 'measured': calibrated at compile time from "
        "the gRPC framing on loopback (fedopt.transport.calibrate)",
    )

    @field_validator("header_bytes", mode="before")
    @classmethod
    def _header_word(cls, v: Any) -> Any:
        if isinstance(v, str) and v != "measured":
            raise ValueError("Input should be a number of bytes or 'measured'")
        return v

    @field_validator("header_bytes")
    @classmethod
    def _header_range(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v > COUNT_MAX:
            raise ValueError(f"Input should be less than or equal to {COUNT_MAX}")
        if isinstance(v, int) and v < 0:
            raise ValueError("Input should be greater than or equal to 0")
        return v


class LinkModel:
    """Per-edge latency, bandwidth and loss as tensors aligned with the edge list.

    Parameters
    ----------
    config
        Defaults for edges whose attributes the topology does not set.
    edge_attrs
        ``TopologyPlan.edge_attrs``: float64 arrays with NaN where unset.
    num_edges
        Number of directed edges.
    seed
        Experiment seed (loss draws are keyed by edge id and exchange counter).
    """

    def __init__(
        self,
        config: NetworkConfig,
        edge_attrs: dict[str, np.ndarray],
        num_edges: int,
        seed: int,
    ) -> None:
        def column(name: str, default: float) -> torch.Tensor:
            values = np.full(num_edges, default, dtype=np.float64)
            given = edge_attrs.get(name)
            if given is not None:
                values = np.where(np.isnan(given), values, given)
            return torch.from_numpy(values)

        self.latency = column("latency_s", config.latency_s)
        self.bandwidth = column("bandwidth_Bps", config.bandwidth_Bps)
        self.loss = column("loss", config.loss)
        self.lossy = bool((self.loss > 0).any())
        self.seed = seed

    def attempts(self, edge_ids: torch.Tensor, exchange: int) -> torch.Tensor | None:
        """Transmissions per message (``None`` when no edge is lossy).

        ``attempts = 1 + floor(log(u) / log(p))`` with ``u`` uniform in (0, 1], keyed by
        (seed, "link_loss", edge id, exchange counter).
        """
        if not self.lossy:
            return None
        p = self.loss[edge_ids]
        keys = rng.node_keys(self.seed, "link_loss", edge_ids, exchange)
        u = 1.0 - rng.uniform(keys, 1, torch.float64).squeeze(-1)
        extra = torch.where(p > 0, torch.floor(torch.log(u) / torch.log(p.clamp_min(1e-300))), 0.0)
        return (1 + extra.clamp_min(0)).to(torch.int64)

    def delay(
        self,
        edge_ids: torch.Tensor,
        nbytes: int | torch.Tensor,
        attempts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Delivery time (float64 seconds) of an ``nbytes`` message on each edge.

        ``nbytes`` is one size for every message or an int64 tensor of one per message.
        """
        size = nbytes.to(torch.float64) if isinstance(nbytes, torch.Tensor) else float(nbytes)
        d = self.latency[edge_ids] + size / self.bandwidth[edge_ids]
        return d if attempts is None else d * attempts.to(torch.float64)

    def describe(self) -> dict[str, float]:
        """Summary of the link parameters over edges."""
        if self.latency.numel() == 0:
            return {}
        return {
            "latency_s_max": float(self.latency.max()),
            "bandwidth_Bps_min": float(self.bandwidth.min()),
            "loss_max": float(self.loss.max()),
        }

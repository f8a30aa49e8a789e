"""Test plug-in: D-SGD that also charges queries and a custom kind, keeps a ledger, metrics.

``counting_dsgd`` runs D-SGD and then, every round, charges each data node 2
``queries`` and 1 ``hvp_calls`` (a kind this plug-in registers); it keeps a
:class:`CountingLedger` (node-rounds, exact integers, and the last round, a max) and
reports two metrics: the mean node norm and the max absolute coordinate.
``counting_dsgd_nodes`` is the same with ``evaluation = "node_models"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from fedopt.algorithms.base import ALGORITHMS, State
from fedopt.algorithms.dsgd import DSGD, DSGDConfig
from fedopt.network.counters import register_kind

register_kind("hvp_calls")


@dataclass
class CountingLedger:
    """Node-rounds done (summed over workers) and the last round seen (max)."""

    node_rounds: int = 0
    last_round: int = -1

    def merge(self, other: CountingLedger) -> CountingLedger:
        return CountingLedger(
            self.node_rounds + other.node_rounds, max(self.last_round, other.last_round)
        )

    def to_record(self) -> dict[str, Any]:
        return {"node_rounds": self.node_rounds, "last_round": self.last_round}


class CountingConfig(DSGDConfig):
    name: Literal["counting_dsgd"] = "counting_dsgd"  # type: ignore[assignment]


class CountingNodesConfig(DSGDConfig):
    name: Literal["counting_dsgd_nodes"] = "counting_dsgd_nodes"  # type: ignore[assignment]


@ALGORITHMS.register("counting_dsgd")
class CountingDSGD(DSGD):
    Config = CountingConfig
    metric_reductions: ClassVar[dict[str, str]] = {"x_max_abs": "max"}

    def init_state(self) -> State:
        self.ctx.ledgers["counting"] = CountingLedger()
        return super().init_state()

    def round(self, state: State, t: int) -> None:
        super().round(state, t)
        ctx = self.ctx
        rows = torch.arange(len(ctx.data_rows))
        ctx.comm.compute(rows, 2, t, kind="queries")
        ctx.comm.compute(rows, 1, t, kind="hvp_calls")
        old = ctx.ledgers["counting"]
        ctx.ledgers["counting"] = old.merge(CountingLedger(len(rows), t))

    def metrics(self, state: State) -> dict[str, torch.Tensor]:
        x = state["x"].double()
        return {
            "x_norm": torch.linalg.vector_norm(x, dim=1),
            "x_max_abs": x.abs().amax(dim=1),
        }


@ALGORITHMS.register("counting_dsgd_nodes")
class CountingDSGDNodes(CountingDSGD):
    Config = CountingNodesConfig
    evaluation = "node_models"

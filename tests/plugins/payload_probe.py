"""Test plug-in: gossip whose metered payload is not the moved tensor (tests only).

Each round every node exchanges its row with its neighbours twice:

* ``neighbours`` (kind ``nbr``), metered as a seed (1 x int64) plus 7 fp16 scalars
  (22 bytes + header per message); the new state is the canonical weighted sum of
  the neighbourhood;
* ``mix`` (kind ``model``), metered with per-sender sizes ``3 j + 1`` bytes for sender
  ``j``; with ``check_equal`` the round asserts that ``mix`` equals the neighbourhood
  sum bit for bit (fault-free runs).
"""

from __future__ import annotations

from typing import Literal

import torch

from fedopt.algorithms.base import ALGORITHMS, Algorithm, AlgorithmConfig, State
from fedopt.engine.payload import Payload


class PayloadProbeConfig(AlgorithmConfig):
    name: Literal["payload_probe"] = "payload_probe"
    lr: float = 0.1
    check_equal: bool = True


@ALGORITHMS.register("payload_probe")
class PayloadProbe(Algorithm):
    Config = PayloadProbeConfig
    requires = frozenset({"connected"})
    roles = ("gossip", "client")

    def init_state(self) -> State:
        ctx = self.ctx
        x = ctx.oracle.init_params(ctx.data_rows)
        return {"x": x.to(device=ctx.device, dtype=ctx.dtype).contiguous()}

    def round(self, state: State, t: int) -> None:
        ctx = self.ctx
        x = state["x"]
        g = ctx.oracle.grad(x, ctx.data_rows, t)
        ctx.comm.compute(torch.arange(len(ctx.data_rows)), 1, t)
        x = x - self.config.lr * g
        seed_and_coeffs = Payload.fields({"seed": (1, torch.int64), "coeffs": (7, torch.float16)})
        nb = ctx.comm.neighbours(x, t, "nbr", payload=seed_and_coeffs)
        y = nb.weighted_sum(x)
        sizes = Payload.per_sender(3 * ctx.hosted + 1, ctx.hosted)
        mixed = ctx.comm.mix(x, t, "model", payload=sizes)
        if self.config.check_equal and not torch.equal(mixed, y):
            raise AssertionError("neighbours + weighted_sum differs from mix")
        state["x"] = y

    def output(self, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ctx.hosted, state["x"]

    @classmethod
    def analytic_traffic(cls, config: AlgorithmConfig, plan: object, rounds: int) -> int:
        return 2 * rounds * len(plan.topology.edges)  # type: ignore[attr-defined]

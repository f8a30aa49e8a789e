"""The server's model of a star algorithm: ``w [1, d]`` on the server's worker only.

FedZO and its finite-difference relatives, Ferret, FedKSeed and FedMeZO keep one model,
at the server; clients receive it every round and hold nothing between rounds. The
state, the output and the row count of such an algorithm are the same:

    w_0 = x_0 (data rank 0's initial draw), reported as the server's one row.
"""

from __future__ import annotations

import torch

from fedopt.algorithms.base import AlgorithmConfig, State, WorkerContext


class ServerModel:
    """Mixin (before :class:`~fedopt.algorithms.base.Algorithm`): state ``{"w": [1, d]}``
    on the worker that hosts the server (``self.server``, its node id, or None)."""

    ctx: WorkerContext
    server: int | None

    def init_state(self) -> State:
        """The server's model starts at data rank 0's initial draw (``x_0``)."""
        ctx = self.ctx
        if self.server is None or ctx.initial_params is None:
            return {}
        w = ctx.initial_params(0).to(device=ctx.device, dtype=ctx.dtype)
        return {"w": w.reshape(1, -1).clone()}

    def output(self, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        """``([server id], w)`` on the server's worker; empty elsewhere."""
        if self.server is None:
            return torch.empty(0, dtype=torch.int64), torch.empty(0, 0, dtype=self.ctx.dtype)
        return torch.tensor([self.server]), state["w"]

    @classmethod
    def output_rows(cls, config: AlgorithmConfig, n: int) -> int:
        """One reported row: the server's model."""
        return 1

"""SCAFFOLD with forward-difference gradients, types I and II (FZooS paper App. 11).

The loop of :class:`~fedopt.algorithms.fedzo.ZeroOrderStar` (broadcast, ``T`` local
steps of a fresh Adam, ``p_i``-weighted average) with SCAFFOLD's control variates
(Karimireddy et al., ICML 2020) built from FD estimates ``Delta``. From round 2 on
(there is no control variate in round 1, spec ``fzoos.md`` §2.7) client ``i`` steps
along ``Delta_i(x) + c - c_i``:

* **type I** (``scaffold_zo1``, the paper's "option I"): ``c_i = Delta_i(x_{r-1})``, a
  fresh estimate at the new global point (``Q + 1`` extra queries per client per
  round), sent up (``d`` floats, kind ``control``); the server sends back
  ``c = sum_i p_i c_i / sum_i p_i`` (``d`` floats, kind ``control``). Per round from
  round 2: 4 messages per client, ``(T + 1)(Q + 1)`` queries per client;
* **type II** (``scaffold_zo2``, "option II"): ``c_i = (1/T) sum_s Delta_i(x_{i,r-1,s})``,
  the mean of the client's own estimates of the previous round, sent up with its
  model (kind ``update``: ``model`` + ``control``, ``2d`` floats); the server's average
  ``c`` travels down with ``x_{r-1}`` (kind ``model+control``, ``2d`` floats; round 1
  sends ``x_0`` alone, kind ``model``). No extra queries, 2 messages per client per
  round.

With ``p_i = 1/N`` the server's average is the spec's ``(1/N) sum_j``.
"""

from __future__ import annotations

from typing import Literal

import torch

from fedopt.algorithms.base import ALGORITHMS, AlgorithmConfig, State, WorkerContext
from fedopt.algorithms.fedzo import ZeroOrderConfig, ZeroOrderStar
from fedopt.engine.payload import Payload


class ScaffoldZO1Config(ZeroOrderConfig):
    """Hyperparameters of SCAFFOLD-ZO type I."""

    name: Literal["scaffold_zo1"] = "scaffold_zo1"


class ScaffoldZO2Config(ZeroOrderConfig):
    """Hyperparameters of SCAFFOLD-ZO type II."""

    name: Literal["scaffold_zo2"] = "scaffold_zo2"


@ALGORITHMS.register("scaffold_zo1")
class ScaffoldZO1(ZeroOrderStar):
    """SCAFFOLD-ZO type I: a fresh FD estimate at ``x_{r-1}`` as control variate."""

    Config = ScaffoldZO1Config
    control_queries = True

    def control(self, state: State, t: int, w: torch.Tensor) -> torch.Tensor | None:
        """``c - Delta_i(x_{r-1})`` from round 2 on: one FD estimate, up and down."""
        if t == 0:
            return None
        ctx = self.ctx
        k, d = len(self.mine), w.numel()
        own = self.estimate(w.expand(k, d), t, slot=0)
        weights = ctx.oracle.weights[self.rows].to(own.dtype)
        sums = ctx.comm.gather_sum(
            own, weights, self.ids, self.client_ids, self.server_id, "control"
        )
        c = None
        if self.server is not None and sums is not None:
            weighted, total = sums
            c = weighted / total if float(total) > 0 else torch.zeros_like(weighted)
        c = ctx.comm.broadcast(c, self.server_id, self.ids, "control").reshape(-1)
        return c - own

    @classmethod
    def analytic_traffic(cls, config: AlgorithmConfig, plan: object, rounds: int) -> int:
        clients = len(plan.topology.role_nodes("client"))  # type: ignore[attr-defined]
        return 2 * clients * rounds + 2 * clients * max(0, rounds - 1)


@ALGORITHMS.register("scaffold_zo2")
class ScaffoldZO2(ZeroOrderStar):
    """SCAFFOLD-ZO type II: the mean of last round's own estimates as control variate.

    State beyond ``w``: ``c`` (``[1, d]``, the server's average control) and ``ci``
    (``[k, d]``, each hosted client's own mean estimate of the previous round).
    """

    Config = ScaffoldZO2Config

    def __init__(self, config: ScaffoldZO2Config, ctx: WorkerContext) -> None:
        super().__init__(config, ctx)
        self._c: torch.Tensor | None = None

    def init_state(self) -> State:
        ctx = self.ctx
        state = super().init_state()
        d = ctx.oracle.dim
        state["ci"] = torch.zeros((len(self.mine), d), dtype=ctx.dtype, device=ctx.device)
        if self.server is not None:
            state["c"] = torch.zeros((1, d), dtype=ctx.dtype, device=ctx.device)
        return state

    def receive(self, state: State, t: int) -> torch.Tensor:
        """``x_{r-1}`` (round 1) or ``[x_{r-1}, c]`` (later) from the server."""
        if t == 0:
            self._c = None
            return super().receive(state, t)
        ctx = self.ctx
        value = None
        if self.server is not None:
            value = torch.cat([state["w"][0], state["c"][0]])
        d = ctx.oracle.dim
        payload = Payload.fields({"model": (d, ctx.dtype), "control": (d, ctx.dtype)})
        both = ctx.comm.broadcast(value, self.server_id, self.ids, "model+control", payload)
        both = both.reshape(-1)
        self._c = both[d:]
        return both[:d]

    def control(self, state: State, t: int, w: torch.Tensor) -> torch.Tensor | None:
        """``c - c_i`` from round 2 on."""
        if t == 0 or self._c is None:
            return None
        return self._c - state["ci"]

    def send(
        self, state: State, t: int, X: torch.Tensor, mean_estimate: torch.Tensor
    ) -> torch.Tensor | None:
        """``[x_i, c_i]`` up; the server keeps ``c = sum_i p_i c_i / sum_i p_i``."""
        ctx = self.ctx
        state["ci"].copy_(mean_estimate)
        d = X.shape[1]
        weights = ctx.oracle.weights[self.rows].to(X.dtype)
        payload = Payload.fields({"model": (d, X.dtype), "control": (d, X.dtype)})
        rows = torch.cat([X, mean_estimate], dim=1)
        sums = ctx.comm.gather_sum(
            rows, weights, self.ids, self.client_ids, self.server_id, "update", payload
        )
        if self.server is None or sums is None:
            return None
        weighted, total = sums
        if not float(total) > 0:
            return None
        state["c"][0].copy_(weighted[d:] / total)
        return weighted[:d] / total

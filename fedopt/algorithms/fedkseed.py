"""FedKSeed and FedMeZO: two-point zeroth-order local steps on neural models.

Both run over a star with ``m = round(C N)`` sampled clients per round, ``T`` local
steps per client, and need the loss on a step's minibatch (capability
``batch_values``). Local step ``s`` of client ``i`` in round ``t`` (MeZO's
two-point estimate on one minibatch, ``b = t T + s``)::

    g = (f_i(x + eps z; b) - f_i(x - eps z; b)) / (2 eps),      x <- x - lr g z

with ``z ~ N(0, I_d)`` (two forward passes, counted as ``forwards``).

* **FedKSeed** (Qin et al., "Federated Full-Parameter Tuning of Billion-Sized Language
  Models with Communication Cost under 18 Kilobytes", ICML 2024; spec ``ferret.md``
  section 3.7): ``z`` is one of ``K`` candidate directions fixed for the run, keyed by
  (seed, "fedkseed/pool", k), the index drawn uniformly per step (keyed by
  (seed, "fedkseed/pick", client, b)). The client keeps a table of ``K`` scalars,
  ``a_k = sum of the g of the steps that drew k``, and uploads it; the server averages
  the tables, ``abar = sum_i p_i a_i / sum_i p_i``, and everyone replays
  ``w <- w - lr sum_k abar_k z_k``. Since ``x_T = w - lr sum_k a_k z_k`` exactly, the
  replay of the averaged table is the average of the clients' models. Messages: up the
  ``K``-scalar table, down the previous round's averaged table (round 0: the seed).
* **FedMeZO** (FedZO's structure, Fang et al., IEEE TSP 2022, with MeZO steps on
  neural models): ``z`` fresh per step, keyed by (seed, "fedmezo/z", client, b);
  clients send their models in full and the server takes their weighted average
  (``d`` floats each way).

``accounting: paper`` counts 2 bytes per scalar (the paper's App. C.2), else the
scalars travel in ``wire_dtype`` (default float32) and are rounded to it. Directions are
Box-Muller normals of :func:`fedopt.rng.normal` (float transforms: reproducible per
device). Generated direction entries are counted as ``basis_entries``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from fedopt import rng
from fedopt.algorithms.base import (
    ALGORITHMS,
    Algorithm,
    AlgorithmConfig,
    Constant,
    State,
    WorkerContext,
)
from fedopt.algorithms.fedavg import sample_clients, sampled_count
from fedopt.algorithms.ferret import WIRE, check_sampling_and_accounting
from fedopt.algorithms.server_model import ServerModel
from fedopt.engine.payload import Payload
from fedopt.fields import COUNT_MAX
from fedopt.problems.capabilities import Capability

POOL = "fedkseed/pool"
PICK = "fedkseed/pick"
FRESH = "fedmezo/z"


class TwoPointConfig(AlgorithmConfig):
    """Hyperparameters shared by FedKSeed and FedMeZO."""

    lr: float = Field(3e-7, gt=0, description="client learning rate of the ZO steps")
    eps: float = Field(5e-4, gt=0, description="perturbation scale of the two-point estimate")
    local_steps: int = Field(200, ge=1, le=COUNT_MAX, description="T: ZO steps per round")
    client_fraction: float = Field(0.05, gt=0, le=1, description="fraction C sampled per round")
    weighting: Literal["uniform", "samples"] = Field("uniform", description="aggregation weights")
    accounting: Literal["true_size", "paper"] = Field(
        "true_size", description="meter the scalars in wire_dtype, or 2 B per scalar"
    )
    wire_dtype: Literal["float64", "float32", "float16", "bfloat16"] | None = Field(
        None, description="scalars on the wire (default float32; paper accounting float16)"
    )

    @property
    def wire(self) -> torch.dtype:
        if self.wire_dtype is not None:
            return WIRE[self.wire_dtype]
        return torch.float16 if self.accounting == "paper" else torch.float32


class FedKSeedConfig(TwoPointConfig):
    """Hyperparameters of FedKSeed (defaults: the paper's)."""

    name: Literal["fedkseed"] = "fedkseed"
    K: int = Field(4096, ge=1, le=COUNT_MAX, description="candidate seeds fixed for the run")


class FedMeZOConfig(TwoPointConfig):
    """Hyperparameters of FedMeZO (FedZO with MeZO steps, full model deltas)."""

    name: Literal["fedmezo"] = "fedmezo"


class TwoPointStar(ServerModel, Algorithm):
    """The shared loop (state ``w``: ``[1, dim]`` on the server)."""

    requires = frozenset({"star", Capability.BATCH_VALUES})
    roles = ("server", "client")
    state_tensors = 5

    @classmethod
    def check_plan(cls, config: AlgorithmConfig, plan: object) -> None:
        cfg: TwoPointConfig = config  # type: ignore[assignment]
        check_sampling_and_accounting(cfg, plan)

    def __init__(self, config: TwoPointConfig, ctx: WorkerContext) -> None:
        super().__init__(config, ctx)
        if ctx.server_id is None or ctx.clients is None:
            raise ValueError(f"{config.name} needs a topology with a server and clients")
        servers = [int(ctx.hosted[i]) for i in ctx.hosted_with_role("server")]
        self.server = servers[0] if servers else None
        self.server_local = ctx.hosted_with_role("server")
        self.server_id = ctx.server_id
        self.client_ids = ctx.clients
        self.m = sampled_count(config.client_fraction, len(self.client_ids))

    def derived_constants(self) -> dict[str, Constant]:
        return {"sampled_clients": self.m, "forwards_per_client_round": 2 * self.config.local_steps}

    @classmethod
    def analytic_traffic(cls, config: AlgorithmConfig, plan: object, rounds: int) -> int:
        clients = len(plan.topology.role_nodes("client"))  # type: ignore[attr-defined]
        return 2 * sampled_count(config.client_fraction, clients) * rounds  # type: ignore[attr-defined]

    def directions(self, ids: torch.Tensor, b: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z [k, d], pool index [k] or -1)`` of step ``b`` for the clients ``ids``."""
        raise NotImplementedError

    def local(
        self, w: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor, t: int
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """``T`` two-point steps from ``w``: the models and each step's (index, g)."""
        cfg, ctx = self.config, self.ctx
        d = w.numel()
        X = w.expand(len(ids), d).clone()
        steps = []
        for s in range(cfg.local_steps):
            b = t * cfg.local_steps + s
            z, idx = self.directions(ids, b, d)
            z = z.to(X.dtype)
            up = ctx.oracle.batch_value(X + cfg.eps * z, rows, b)  # type: ignore[attr-defined]
            down = ctx.oracle.batch_value(X - cfg.eps * z, rows, b)  # type: ignore[attr-defined]
            g = (up - down) / (2 * cfg.eps)
            X.sub_((cfg.lr * g).to(X.dtype).unsqueeze(1) * z)
            steps.append((idx, g))
        mine = torch.nonzero(torch.isin(ctx.hosted, ids)).squeeze(1)
        ctx.comm.compute(mine, 2 * cfg.local_steps, t, "forwards")
        ctx.comm.compute(mine, cfg.local_steps * d, t, "basis_entries")
        return X, steps

    def weights(self, rows: torch.Tensor) -> torch.Tensor:
        if self.config.weighting == "samples":
            return self.ctx.oracle.num_samples[rows].to(torch.float64)
        return torch.ones(len(rows), dtype=torch.float64)


@ALGORITHMS.register("fedkseed")
class FedKSeed(TwoPointStar):
    """FedKSeed: ZO steps along K fixed candidate directions, K-scalar tables sent."""

    Config = FedKSeedConfig

    def directions(self, ids: torch.Tensor, b: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
        K = self.config.K
        idx = rng.randint(rng.node_keys(self.ctx.seed, PICK, ids, b), 1, K)[:, 0]
        return self.pool_directions(idx, d), idx

    def pool_directions(self, idx: torch.Tensor, d: int) -> torch.Tensor:
        """``z_k`` of the pool indices ``idx``: ``[len(idx), d]`` float64."""
        keys = rng.node_keys(self.ctx.seed, POOL, idx, 0)
        return rng.normal(keys, d, torch.float64)

    def payload(self, t: int | None = None) -> Payload:
        cfg = self.config
        if t == 0:
            return Payload.fields({"seed": (1, torch.int64)})
        dtype = torch.float16 if cfg.accounting == "paper" else cfg.wire
        return Payload.fields({"table": (cfg.K, dtype)})

    def replay(self, table: torch.Tensor, d: int) -> tuple[torch.Tensor, int]:
        """``sum_k table_k z_k`` over the non-zero entries (``[d]`` float64, entries)."""
        used = torch.nonzero(table).squeeze(1)
        out = torch.zeros(d, dtype=torch.float64)
        for a in range(0, len(used), 64):
            sel = used[a : a + 64]
            out.add_(table[sel] @ self.pool_directions(sel, d))
        return out, len(used) * d

    def round(self, state: State, t: int) -> None:
        cfg, ctx = self.config, self.ctx
        sampled = sample_clients(ctx.seed, self.client_ids, cfg.client_fraction, t)
        mine = torch.nonzero(torch.isin(ctx.hosted, sampled)).squeeze(1)
        ids, rows = ctx.hosted[mine], ctx.data_rows[mine]
        w = ctx.comm.broadcast(state.get("w"), self.server_id, ids, "model", self.payload(t))
        w = w.reshape(-1)
        _, steps = self.local(w, ids, rows, t)
        tables = torch.zeros(len(ids), cfg.K, dtype=torch.float64)
        for idx, g in steps:
            tables.index_put_((torch.arange(len(ids)), idx), g.to(torch.float64), accumulate=True)
        tables = tables.to(cfg.wire).to(torch.float64)
        sums = ctx.comm.gather_sum(
            tables, self.weights(rows), ids, sampled, self.server_id, "table", self.payload()
        )
        if self.server is None or sums is None or float(sums[1]) <= 0:
            return
        step, entries = self.replay(sums[0] / sums[1], w.numel())
        ctx.comm.compute(self.server_local, entries, t, "basis_entries")
        g = state["w"][0]
        g.sub_(step.to(g.dtype), alpha=cfg.lr)


@ALGORITHMS.register("fedmezo")
class FedMeZO(TwoPointStar):
    """FedMeZO: ZO steps along fresh keyed directions, models averaged in full."""

    Config = FedMeZOConfig

    def directions(self, ids: torch.Tensor, b: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
        keys = rng.node_keys(self.ctx.seed, FRESH, ids, b)
        return rng.normal(keys, d, torch.float64), torch.full((len(ids),), -1)

    def round(self, state: State, t: int) -> None:
        cfg, ctx = self.config, self.ctx
        sampled = sample_clients(ctx.seed, self.client_ids, cfg.client_fraction, t)
        mine = torch.nonzero(torch.isin(ctx.hosted, sampled)).squeeze(1)
        ids, rows = ctx.hosted[mine], ctx.data_rows[mine]
        w = ctx.comm.broadcast(state.get("w"), self.server_id, ids, "model").reshape(-1)
        models, _ = self.local(w, ids, rows, t)
        d = w.numel()
        payload = Payload.fields({"model": (d, models.dtype)})
        sums = ctx.comm.gather_sum(
            models, self.weights(rows).to(models.dtype), ids, sampled, self.server_id,
            "update", payload,
        )  # fmt: skip
        if self.server is None or sums is None or float(sums[1]) <= 0:
            return
        g = state["w"][0]
        g.copy_(sums[0] / sums[1])

"""Federated Averaging (McMahan et al., AISTATS 2017) over a star: one server, N clients.

Round ``t``:

1. the server samples ``m = max(1, round(C * N))`` clients uniformly without
   replacement (``C = client_fraction``; keyed by (seed, "client_sample", t));
2. it sends the global model ``w`` to each sampled client (``m`` messages of ``dim``
   floats);
3. each sampled client ``k`` starts from ``w`` and takes ``local_steps`` SGD steps:
   ``w_k <- w_k - lr * g_k(w_k)``;
4. each sends back ``w_k`` and, with sample weighting, its sample count ``n_k``
   (``m`` messages of ``dim`` (+1) floats);
5. the server applies its ``aggregator`` (any rule of :mod:`fedopt.robust.aggregators`).

With the default ``mean`` and no Byzantine clients, the mean is summed on the way
(each client's message is its model and, with sample weighting, its count ``n_k``)::

    w <- w + server_lr * (sum_k n_k w_k / sum_k n_k - w)     (n_k = 1: uniform weighting)

With any other rule (median, trimmed mean, geometric median, Krum, multi-Krum, centered
clipping, ...) or Byzantine clients (the ``byzantine`` section), the server gathers the
updates ``w_k - w`` and applies the rule to them, unweighted::

    w <- w + server_lr * Agg_f({w_k - w} over the updates received)

Which path runs is the rule's property (:attr:`Aggregator.summable`), not a flag of
FedAvg. Byzantine clients hold no data;
the sampled ones send what their attack makes of the honest updates of the round
(omniscient, kind ``byzantine``), so attacks act on updates (pseudo-gradients).

Clients are trained in cache-sized chunks; the aggregate is summed in the canonical
order of :mod:`fedopt.engine.reduce`, so results do not depend on placement.

Running BatchNorm statistics (a problem with per-node buffers, ``buf_dim > 0``; see
:mod:`fedopt.algorithms.buffers`): the server keeps its buffer row ``b`` next to ``w``;
step 2 sends ``(w, b)``, each client trains from them (its running statistics move
with every local step), step 4 sends ``(w_k, b_k)`` and the server applies the same
rule to both, ``b <- b + server_lr * (sum_k n_k b_k / sum_k n_k - b)`` (the mean of
the running means, the mean of the running variances). With ``bn_reset`` the
statistics do not travel with the models; after the aggregation the server sends
the new ``w`` to the sampled clients (kind ``bn_reset``), each recomputes the
statistics of ``w`` on its own samples (the BN reset, charged as ``forwards``) and
sends them back (kind ``bn_stats``), and ``b`` becomes their weighted mean.
Robust rules and Byzantine clients do not take buffers (refused).
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
from fedopt.algorithms.buffers import (
    buffer_dim,
    charge_reset,
    initial_buffers,
    model_payload,
    pack,
)
from fedopt.engine.payload import Payload
from fedopt.errors import ConfigError
from fedopt.fields import COUNT_MAX, Number
from fedopt.robust import make_aggregator, make_attack, make_drift
from fedopt.robust.aggregators import rule_constants


class FedAvgConfig(AlgorithmConfig):
    """Hyperparameters of FedAvg."""

    name: Literal["fedavg"] = "fedavg"
    lr: float = Field(0.1, gt=0, description="client learning rate")
    local_steps: int = Field(5, ge=1, le=COUNT_MAX, description="local SGD steps per round")
    client_fraction: float = Field(1.0, gt=0, le=1, description="fraction C sampled per round")
    weighting: Literal["samples", "uniform"] = Field("samples", description="aggregation weights")
    server_lr: float = Field(1.0, gt=0, description="server step on the averaged update")
    aggregator: str = Field("mean", description="server rule on the updates (mean or robust)")
    aggregator_params: dict[str, Number] = Field(
        default_factory=dict, description="the rule's hyperparameters (e.g. tau, m_keep)"
    )
    f: int | None = Field(
        None,
        ge=0,
        le=COUNT_MAX,
        description="faults the rule tolerates (default: Byzantine clients)",
    )
    bn_reset: bool = Field(
        False,
        description="recompute the global model's BatchNorm running statistics on the "
        "sampled clients' data after every aggregation instead of averaging them "
        "(problem.batchnorm: running)",
    )


def sampled_count(fraction: float, clients: int) -> int:
    """``m = max(1, round(C N))`` clients per round (Python's rounding); all when ``C >= 1``."""
    return clients if fraction >= 1.0 else max(1, round(fraction * clients))


def sample_clients(seed: int, clients: torch.Tensor, fraction: float, t: int) -> torch.Tensor:
    """Sorted global ids of the clients sampled in round ``t`` (identical on every worker)."""
    if fraction >= 1.0:
        return clients
    m = sampled_count(fraction, len(clients))
    u = rng.bits(rng.node_keys(seed, "client_sample", clients, t), 1).squeeze(1)
    picked = torch.argsort(u, stable=True)[:m]
    return torch.sort(clients[picked]).values


@ALGORITHMS.register("fedavg")
class FedAvg(Algorithm):
    """FedAvg with node-batched client training (state ``w``: ``[1, dim]`` on the server)."""

    Config = FedAvgConfig
    requires = frozenset({"star"})
    roles = ("server", "client")
    supports_byzantine = True
    moves_buffers = True
    state_tensors = 4  # the clients' models, their updates, the gathered and attacked ones

    @classmethod
    def check_plan(cls, config: AlgorithmConfig, plan: object) -> None:
        byz = plan.config.byzantine  # type: ignore[attr-defined]
        n = plan.topology.n  # type: ignore[attr-defined]
        f_actual = len(byz.ids(n)) if byz is not None else 0
        if byz is not None and make_attack(byz.attack.name, **byz.attack.params()).needs_flipped:
            raise ConfigError(
                "byzantine.attack: label_flip acts on peer-to-peer models; use it with a "
                "robust peer-to-peer algorithm (monna, nna, ...), not fedavg"
            )
        f = config.f if config.f is not None else f_actual
        rule = make_aggregator(config.aggregator, f=f, **config.aggregator_params)
        buf_dim = getattr(plan, "buf_dim", 0)
        if config.bn_reset and not buf_dim:
            raise ConfigError(
                "algorithm.bn_reset: true recomputes BatchNorm running statistics, but "
                f"problem {plan.config.problem.name!r} keeps none; set "  # type: ignore[attr-defined]
                "problem.batchnorm: running (with a BatchNorm model), or bn_reset: false"
            )
        if buf_dim and not (rule.summable and f_actual == 0):
            raise ConfigError(
                f"algorithm.aggregator: fedavg averages the clients' BatchNorm running "
                f"statistics with the mean only, but the server applies {config.aggregator!r}"
                f"{' against Byzantine clients' if f_actual else ''}; use aggregator: mean "
                "without a byzantine section, or problem.batchnorm: batch_stats"
            )
        if rule.summable and f_actual == 0:
            return  # summed on the way: any number of updates will do
        clients = len(plan.topology.role_nodes("client"))  # type: ignore[attr-defined]
        m = sampled_count(config.client_fraction, clients)
        try:
            rule.check(m)
        except ConfigError as exc:
            raise ConfigError(
                f"algorithm.aggregator: the server aggregates the m={m} updates of the sampled "
                f"clients; {exc}"
            ) from None

    def __init__(self, config: FedAvgConfig, ctx: WorkerContext) -> None:
        super().__init__(config, ctx)
        if ctx.server_id is None or ctx.clients is None:
            raise ValueError("fedavg needs a topology with a server and clients")
        self.attack = None
        self.byzantine = torch.zeros(0, dtype=torch.int64)
        byz = ctx.byzantine
        if byz is not None:
            self.byzantine = torch.tensor(byz.ids(ctx.num_nodes), dtype=torch.int64)
            self.attack = make_attack(byz.attack.name, **byz.attack.params())
        f = config.f if config.f is not None else len(self.byzantine)
        self.rule = make_aggregator(config.aggregator, f=f, **config.aggregator_params)
        # the mean without adversaries is summed on the way; other rules gather the updates
        self.summed = self.rule.summable and byz is None
        servers = [int(ctx.hosted[i]) for i in ctx.hosted_with_role("server")]
        self.server = servers[0] if servers else None  # hosted here?
        self.server_id = ctx.server_id
        self.client_local = ctx.hosted_with_role("client")
        self.client_ids = ctx.clients
        self._buf: torch.Tensor | None = None
        self.buf_dim = buffer_dim(ctx.oracle)
        # the statistics ride with the models unless they are recomputed (bn_reset)
        self.travel = bool(self.buf_dim) and not config.bn_reset

    def derived_constants(self) -> dict[str, Constant]:
        """Clients sampled per round; the server's rule, its f and parameters."""
        clients = len(self.client_ids)
        out: dict[str, Constant] = {
            "clients": clients,
            "sampled_clients": sampled_count(self.config.client_fraction, clients),
            "byzantine": len(self.byzantine),
        }
        out.update(rule_constants(self.rule))
        return out

    def init_state(self) -> State:
        """The global model starts at data rank 0's initial draw (on the server only)."""
        ctx = self.ctx
        if self.server is None or ctx.initial_params is None:
            return {}
        w = ctx.initial_params(0).to(device=ctx.device, dtype=ctx.dtype)
        state = {"w": w.reshape(1, -1).clone()}
        if self.buf_dim:
            state["w_buf"] = initial_buffers(ctx.oracle, 1, ctx.dtype, ctx.device)
        return state

    def round(self, state: State, t: int) -> None:
        cfg, ctx = self.config, self.ctx
        sampled = sample_clients(ctx.seed, self.client_ids, cfg.client_fraction, t)
        mine = torch.nonzero(torch.isin(ctx.hosted, sampled)).squeeze(1)  # hosted sampled
        bd = self.buf_dim
        if self.travel:  # the model and its running statistics, one message
            wb = pack(state["w"], state["w_buf"]) if "w" in state else None
            d = ctx.oracle.dim
            wb = ctx.comm.broadcast(
                wb, self.server_id, ctx.hosted[mine], "model", model_payload(d, bd, ctx.dtype)
            ).reshape(-1)
            w, w_buf = wb[:d], wb[d:]
        else:
            w = ctx.comm.broadcast(state.get("w"), self.server_id, ctx.hosted[mine], "model")
            w = w.reshape(-1)
        d = w.numel()
        if not self.summed:
            self._gathered_round(state, t, w, sampled, mine)
            return
        rows = ctx.data_rows[mine]
        by_samples = cfg.weighting == "samples"
        if by_samples:
            weights = ctx.oracle.num_samples[rows].to(ctx.dtype)
        else:
            weights = torch.ones(len(rows), dtype=ctx.dtype)
        if self._buf is None or self._buf.shape != (len(rows), d):
            self._buf = torch.empty((len(rows), d), dtype=ctx.dtype, device=ctx.device)
        if self.travel:  # clients start from the server's statistics
            ctx.oracle.set_buffers(rows, w_buf.expand(len(rows), bd))  # type: ignore[attr-defined]
        models = self._train(w, rows, t, self._buf)
        ctx.comm.compute(mine, cfg.local_steps, t)
        # a client's message carries its model and, with sample weighting, its count
        count = weights.dtype if by_samples else None
        payload = model_payload(d, bd if self.travel else 0, models.dtype, count)
        if self.travel:  # ... and its running statistics
            models = pack(models, ctx.oracle.get_buffers(rows))  # type: ignore[attr-defined]
        sums = ctx.comm.gather_sum(
            models,
            weights,
            ctx.hosted[mine],
            sampled,
            self.server_id,
            "update",
            payload,
        )
        if self.server is not None and sums is not None:
            weighted, total_weight = sums
            if float(total_weight) > 0:  # under faults, every update may be lost
                g = state["w"][0]
                g.add_(weighted[:d] / total_weight - g, alpha=cfg.server_lr)
                if self.travel:  # the same step on the statistics
                    gb = state["w_buf"][0]
                    gb.add_(weighted[d:] / total_weight - gb, alpha=cfg.server_lr)
        if cfg.bn_reset:
            self._reset_round(state, t, sampled, mine, rows, weights)

    def _reset_round(
        self,
        state: State,
        t: int,
        sampled: torch.Tensor,
        mine: torch.Tensor,
        rows: torch.Tensor,
        weights: torch.Tensor,
    ) -> None:
        """BN reset of the aggregated model: the sampled clients recompute its statistics
        on their own samples; the server takes their weighted mean."""
        ctx = self.ctx
        w = ctx.comm.broadcast(state.get("w"), self.server_id, ctx.hosted[mine], "bn_reset")
        w = w.reshape(1, -1).expand(len(rows), -1).contiguous()
        stats, passes = ctx.oracle.reset_buffers(w, rows)  # type: ignore[attr-defined]
        charge_reset(ctx.comm, mine, passes, t)
        fields = {"buffers": (self.buf_dim, stats.dtype)}
        if self.config.weighting == "samples":
            fields["count"] = (1, weights.dtype)
        sums = ctx.comm.gather_sum(
            stats.to(ctx.dtype),
            weights,
            ctx.hosted[mine],
            sampled,
            self.server_id,
            "bn_stats",
            Payload.fields(fields),
        )
        if self.server is not None and sums is not None:
            weighted, total_weight = sums
            if float(total_weight) > 0:
                state["w_buf"][0] = weighted / total_weight

    def _train(
        self, w: torch.Tensor, rows: torch.Tensor, t: int, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Local SGD from ``w`` for the clients ``rows`` (data rows): their models.

        Clients train in cache-sized chunks, into ``out`` when given (a reused buffer).
        """
        cfg, ctx = self.config, self.ctx
        d = w.numel()
        models = out
        if models is None:
            models = torch.empty((len(rows), d), dtype=ctx.dtype, device=ctx.device)
        for a in range(0, len(rows), ctx.chunk_size):
            e = min(a + ctx.chunk_size, len(rows))
            chunk = models[a:e]
            chunk.copy_(w.expand(e - a, d))
            for s in range(cfg.local_steps):
                ctx.oracle.sgd_step_(chunk, rows[a:e], t * cfg.local_steps + s, cfg.lr)
        return models

    def _gathered_round(
        self, state: State, t: int, w: torch.Tensor, sampled: torch.Tensor, mine: torch.Tensor
    ) -> None:
        """Updates ``w_k - w`` gathered row by row; the server applies its rule to them."""
        cfg, ctx = self.config, self.ctx
        honest = mine[ctx.data_rows[mine] >= 0]
        models = self._train(w, ctx.data_rows[honest], t)
        ctx.comm.compute(honest, cfg.local_steps, t)
        got = ctx.comm.gather(models - w, ctx.hosted[honest], self.server_id, "update")
        if self.server is None or got is None:
            return
        updates, _ = got
        byz = sampled[torch.isin(sampled, self.byzantine)]
        if len(byz):  # what the sampled Byzantine clients send the server
            ctx.comm.forged(byz, torch.full_like(byz, self.server_id), "byzantine", w)
        if len(updates) == 0:
            return
        received = updates
        if len(byz) and self.attack is not None:
            drift = make_drift(self.rule, updates, len(byz)) if self.attack.needs_drift else None
            bad = self.attack(updates, byz, seed=ctx.seed, round=t, drift=drift)
            received = torch.cat([updates, bad.to(updates.dtype)])
        if len(received) < self.rule.min_inputs(self.rule.f):
            return  # too few updates arrived (faults) for the rule: keep w this round
        step = self.rule.aggregate(received.unsqueeze(0))[0]
        state["w"][0].add_(step.to(state["w"].dtype), alpha=cfg.server_lr)

    def output(self, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        if self.server is None:
            return torch.empty(0, dtype=torch.int64), torch.empty(0, 0, dtype=self.ctx.dtype)
        return torch.tensor([self.server]), state["w"]

    def output_buffers(self, state: State) -> torch.Tensor | None:
        """The server's running statistics ``[1, buf_dim]`` (``[0, buf_dim]`` elsewhere)."""
        if not self.buf_dim:
            return None
        if self.server is None:
            return torch.empty(0, self.buf_dim, dtype=self.ctx.dtype)
        return state["w_buf"]

    @classmethod
    def output_rows(cls, config: AlgorithmConfig, n: int) -> int:
        return 1  # the server's model

    @classmethod
    def analytic_traffic(cls, config: AlgorithmConfig, plan: object, rounds: int) -> int:
        clients = len(plan.topology.role_nodes("client"))  # type: ignore[attr-defined]
        return 2 * sampled_count(config.client_fraction, clients) * rounds

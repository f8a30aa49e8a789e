"""Distributed DP-SGD over a star (Abadi et al., CCS 2016, with the noise on the aggregate).

Round ``t``, with ``P`` clients, client ``p`` holding ``n_p`` samples and sampling rate
``q``::

    client p:  S_p = Poisson sample of its data (each sample in with probability q,
                     keyed by (seed, "dp_poisson", client, t))
               g_p = (1 / (q n_p)) sum_{i in S_p} clip_C( grad l(x_t; z_i^p) )
    server:    g   = (1/P) sum_p g_p + N(0, (z C / (P q n_min))^2 I)
               x_{t+1} = x_t - lr g

Every denominator is public and fixed (the *expected* batch size ``q n_p`` and ``P``),
so adding or removing one sample of one client moves ``g`` by at most
``C / (P q n_min)`` and the noise multiplier ``z`` is that of a Poisson-subsampled
Gaussian mechanism under add/remove-one adjacency. ``z`` is calibrated from
(epsilon, delta, q, R = stop.rounds) with dp-accounting's RDP accountant
(:func:`fedopt.privacy.calibration.dp_sgd_noise_multiplier`), or given directly as
``noise_multiplier`` (the spent epsilon is then reported, and refused when above
``epsilon``). The privacy ledger reports the epsilon spent so far in every record.

Messages: the model down and ``d`` floats up per client per round. Work: one
per-sample gradient per sampled sample (``per_sample_gradients``).
``threat_model: local`` makes each client add ``N(0, P s^2)`` instead (see
:mod:`fedopt.algorithms.private`).
"""

from __future__ import annotations

import math
from typing import Any, Literal

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
from fedopt.algorithms.private import (
    AUDIT_NOISE_SCALE_FIELD,
    DELTA_FIELD,
    EPSILON_FIELD,
    NOISE_FIELD,
    NOISE_SEED_FIELD,
    PLD_FIELD,
    ThreatModel,
    charge_per_sample,
    check_private_plan,
    clip_field,
    local_noise,
    mechanism_seed,
    sample_count_facts,
    server_noise,
)
from fedopt.engine.payload import Payload
from fedopt.problems.capabilities import Capability


class DpSgdConfig(AlgorithmConfig):
    """Hyperparameters of distributed DP-SGD."""

    name: Literal["dp_sgd"] = "dp_sgd"
    lr: float = Field(0.5, gt=0, le=1e6, description="step size of x <- x - lr g")
    epsilon: float = EPSILON_FIELD
    delta: float = DELTA_FIELD
    clip: float = clip_field(10.0, "C: per-sample gradient clip radius")
    sample_rate: float = Field(
        0.05, gt=0, le=1, description="q: probability that a sample is in a round's batch"
    )
    noise_multiplier: float | None = Field(
        None,
        ge=0,
        description="z (noise std / sensitivity of the average); default: calibrated from "
        "epsilon and delta",
    )
    threat_model: ThreatModel = NOISE_FIELD
    noise_seed: int | None = NOISE_SEED_FIELD
    pld: bool = PLD_FIELD
    audit_noise_scale: float = AUDIT_NOISE_SCALE_FIELD


def _spent_parts(z: float, rounds: int, q: float) -> list[Any]:
    from fedopt.privacy.accountant import GaussianRounds

    return [GaussianRounds(z, rounds, sample_rate=q)]


@ALGORITHMS.register("dp_sgd")
class DpSgd(Algorithm):
    """Distributed DP-SGD (server state ``x``: ``[1, dim]``)."""

    Config = DpSgdConfig
    requires = frozenset({"star", Capability.PER_SAMPLE_GRADIENTS})
    roles = ("server", "client")
    state_tensors = 4

    @classmethod
    def check_plan(cls, config: AlgorithmConfig, plan: object) -> None:
        check_private_plan(config.name, config, plan)

    @classmethod
    def plan_facts(cls, config: AlgorithmConfig, plan: object, oracle: Any) -> dict[str, Any]:
        """``n_min``, ``n_max``, ``P``, ``R`` and the noise multiplier ``z``."""
        assert isinstance(config, DpSgdConfig)
        rounds = check_private_plan(config.name, config, plan)
        facts: dict[str, Any] = {**sample_count_facts(oracle()), "rounds": rounds}
        z = config.noise_multiplier
        if not math.isfinite(config.epsilon):
            z = 0.0 if z is None else z
        elif z is None:
            from fedopt.privacy.calibration import dp_sgd_noise_multiplier

            z = dp_sgd_noise_multiplier(config.epsilon, config.delta, config.sample_rate, rounds)
        else:
            from fedopt.privacy.accountant import check_budget

            check_budget(
                _spent_parts(z, rounds, config.sample_rate),
                config.epsilon,
                config.delta,
                field="algorithm.noise_multiplier",
            )
        facts["noise_multiplier"] = float(z)
        return facts

    def __init__(self, config: AlgorithmConfig, ctx: WorkerContext) -> None:
        super().__init__(config, ctx)
        assert isinstance(config, DpSgdConfig)
        if ctx.server_id is None or ctx.clients is None:
            raise ValueError("dp_sgd needs a topology with a server and clients")
        self.server_id = ctx.server_id
        self.noise_seed = mechanism_seed(config, ctx.seed)
        servers = [int(ctx.hosted[i]) for i in ctx.hosted_with_role("server")]
        self.server = servers[0] if servers else None
        self.client_local = ctx.hosted_with_role("client")
        self.client_ids = ctx.clients
        self.workers = int(ctx.facts["workers"])
        self.n_min = int(ctx.facts["n_min"])
        self.n_max = int(ctx.facts["n_max"])
        self.z = float(ctx.facts["noise_multiplier"])
        q = config.sample_rate
        # noise std on the average: z times its add/remove sensitivity C / (P q n_min)
        self.std = self.z * config.clip / (self.workers * q * self.n_min) if self.z > 0 else 0.0
        self.drawn_std = self.std * config.audit_noise_scale  # 1 except in audits
        if self.server is not None:
            from fedopt.privacy.ledger import PrivacyLedger

            ctx.ledgers["privacy"] = PrivacyLedger(
                delta=config.delta,
                threat_model=config.threat_model,
                mechanisms={"step": self.z},  # z = 0 (no noise): epsilon inf
                sample_rate=q,
                workers=self.workers,
                with_pld=config.pld,
            )

    def derived_constants(self) -> dict[str, Constant]:
        """The noise multiplier, the noise std on the average and the sample counts."""
        out: dict[str, Constant] = {
            "noise_multiplier": self.z,
            "noise_std": self.std,
            "n_min": self.n_min,
            "workers": self.workers,
            "expected_batch_per_client": self.config.sample_rate * self.n_min,  # type: ignore[attr-defined]
        }
        if self.config.audit_noise_scale != 1.0:  # type: ignore[attr-defined]
            out["audit_noise_scale"] = self.config.audit_noise_scale  # type: ignore[attr-defined]
        return out

    def init_state(self) -> State:
        ctx = self.ctx
        if self.server is None or ctx.initial_params is None:
            return {}
        x0 = ctx.initial_params(0).to(device=ctx.device, dtype=ctx.dtype)
        return {"x": x0.reshape(1, -1).clone()}

    def round(self, state: State, t: int) -> None:
        cfg, ctx = self.config, self.ctx
        assert isinstance(cfg, DpSgdConfig)
        mine = self.client_local
        x = ctx.comm.broadcast(state.get("x"), self.server_id, ctx.hosted[mine], "model")
        x = x.reshape(1, -1)
        d = x.shape[1]
        if len(mine):
            rows = ctx.data_rows[mine]
            counts = ctx.oracle.num_samples[rows].to(torch.int64)
            keys = rng.node_keys(self.noise_seed, "dp_poisson", ctx.hosted[mine], t)
            mask = rng.bernoulli(keys, self.n_max, cfg.sample_rate)
            mask &= torch.arange(self.n_max).unsqueeze(0) < counts.unsqueeze(1)
            sums = ctx.oracle.clipped_grad_sum(
                x.expand(len(rows), d), rows, cfg.clip, mask=mask.to(torch.float64)
            )
            charge_per_sample(ctx.comm, mine, mask.sum(1), t)
            expected = cfg.sample_rate * counts.to(sums.dtype)
            msgs = sums / expected.unsqueeze(1)
            if cfg.threat_model == "local" and self.drawn_std > 0:
                std = self.drawn_std * math.sqrt(self.workers)
                msgs = msgs + local_noise(self.noise_seed, ctx.hosted[mine], t, d, std, msgs.dtype)
        else:
            msgs = torch.zeros(0, d, dtype=ctx.dtype, device=ctx.device)
        got = ctx.comm.gather_sum(
            msgs,
            torch.ones(len(msgs), dtype=msgs.dtype, device=msgs.device),
            ctx.hosted[mine],
            self.client_ids,
            self.server_id,
            "update",
            Payload.fields({"update": (d, msgs.dtype)}),
        )
        if self.server is None or got is None:
            return
        xs = state["x"]
        g = got[0].to(xs.dtype) / self.workers
        if cfg.threat_model == "central" and self.drawn_std > 0:
            g = g + server_noise(self.noise_seed, self.server_id, t, d, self.drawn_std, xs.dtype)
        xs[0].sub_(g, alpha=cfg.lr)
        ctx.ledgers["privacy"].spend("step")

    def output(self, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        if self.server is None:
            return torch.empty(0, dtype=torch.int64), torch.empty(0, 0, dtype=self.ctx.dtype)
        return torch.tensor([self.server]), state["x"]

    @classmethod
    def output_rows(cls, config: AlgorithmConfig, n: int) -> int:
        return 1

    @classmethod
    def analytic_traffic(cls, config: AlgorithmConfig, plan: object, rounds: int) -> int:
        clients = len(plan.topology.role_nodes("client"))  # type: ignore[attr-defined]
        return 2 * clients * rounds

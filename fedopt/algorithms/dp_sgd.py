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
    AlgorithmConfig,
    Constant,
    State,
    WorkerContext,
)
from fedopt.algorithms.private import (
    PrivateConfig,
    PrivateStar,
    charge_per_sample,
    check_private_plan,
    clip_field,
    sample_count_facts,
)


class DpSgdConfig(PrivateConfig):
    """Hyperparameters of distributed DP-SGD."""

    name: Literal["dp_sgd"] = "dp_sgd"
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


def _spent_parts(z: float, rounds: int, q: float) -> list[Any]:
    from fedopt.privacy.accountant import GaussianRounds

    return [GaussianRounds(z, rounds, sample_rate=q)]


@ALGORITHMS.register("dp_sgd")
class DpSgd(PrivateStar):
    """Distributed DP-SGD (server state ``x``: ``[1, dim]``)."""

    Config = DpSgdConfig
    state_tensors = 4

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
        self.n_min = int(ctx.facts["n_min"])
        self.n_max = int(ctx.facts["n_max"])
        self.z = float(ctx.facts["noise_multiplier"])
        q = config.sample_rate
        # noise std on the average: z times its add/remove sensitivity C / (P q n_min)
        self.std = self.z * config.clip / (self.workers * q * self.n_min) if self.z > 0 else 0.0
        self.drawn_std = self.std * config.audit_noise_scale  # 1 except in audits
        self.keep_ledger({"step": self.z}, sample_rate=q)

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
        x0 = self.initial_model()
        if self.server is None or x0 is None:
            return {}
        return {"x": x0.clone()}

    def round(self, state: State, t: int) -> None:
        cfg, ctx = self.config, self.ctx
        assert isinstance(cfg, DpSgdConfig)
        mine = self.client_local
        x = self.receive_model(state)
        d = x.shape[1]
        msgs = torch.zeros(0, d, dtype=ctx.dtype, device=ctx.device)
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
            msgs = self.client_noise(sums / expected.unsqueeze(1), t, self.drawn_std)
        total = self.send(msgs, d)
        if total is None:
            return
        xs = state["x"]
        g = self.noisy_mean(total, t, self.drawn_std, xs[0])
        xs[0].sub_(g, alpha=cfg.lr)
        ctx.ledgers["privacy"].spend("step")

"""DIFF2-GD and DP-GD: differentially private GD over a star (Murata & Suzuki, ICML 2023).

DIFF2 privatises the *difference* of consecutive gradients, whose per-sample
sensitivity shrinks with the step, and rebuilds the gradient recursively, restarting
it with a privatised full gradient every ``T = max(1, floor(tau R))`` rounds. With
``P`` clients (worker ``p`` holds ``n_p`` samples) and ``clip_c(g) = g min(1, c /
(||g|| + 1e-10))`` applied to each *per-sample* vector, round ``r`` is::

    restart round (r mod T == 0):
        client p:  g_p = (1/n_p) sum_i clip_C1( grad l(x_r; z_i^p) )
        server:    v   = (1/P) sum_p g_p + N(0, (C1 sigma1)^2 I)
    difference round:
        c_r = C2 ||x_r - x_{r-1}||                          (public: released iterates)
        client p:  h_p = (1/n_p) sum_i clip_c_r( grad l(x_r; z_i^p) - grad l(x_{r-1}; z_i^p) )
        server:    v   = v + (1/P) sum_p h_p + N(0, (c_r sigma2)^2 I)
    x_{r+1} = x_r - lr v

``sigma1``, ``sigma2`` and the Rényi order follow the paper's calibration for
(epsilon, delta) over ``R = stop.rounds`` rounds with ``ceil(R/T)`` restart rounds
(:func:`fedopt.privacy.calibration.diff2_calibration`); an independent accountant
(dp-accounting's RDP) must confirm the target at compile time, and the privacy ledger
reports the epsilon spent so far (RDP, and PLD at the end) in every record.

``T = 1`` (``tau = 0``) makes every round a restart round: that is **DP-GD**, the
paper's baseline (registered as ``dp_gd``). ``epsilon: inf`` with ``clip_grad`` and
``clip_diff`` infinite is noiseless full-batch GD (the recursion telescopes).

Messages per round: the server broadcasts ``x_r`` (``d`` floats to each client; each
client keeps ``x_{r-1}`` from the previous round), each client sends ``d`` floats.
Work: ``n_p`` per-sample gradients per client in restart rounds, ``2 n_p`` in
difference rounds (counted as ``per_sample_gradients``).

Every client takes part every round; the average divides by ``P`` and each client's
sum by ``n_p`` (fixed, public denominators), so a lost message (faults) lowers the
average but never the privacy. Noise: ``threat_model`` ``central`` adds it at the
server (purpose ``dp_noise``); ``local`` makes each client add ``N(0, P s^2)``
(pitfall D6), a weaker guarantee for individual messages that the ledger states.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

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
from fedopt.errors import ConfigError


class Diff2Config(PrivateConfig):
    """Hyperparameters of DIFF2-GD (defaults: the reference scripts' middle of the grid)."""

    name: Literal["diff2"] = "diff2"
    tau: float = Field(
        0.01, ge=0, le=1, description="restart period as a fraction of R: T = max(1, floor(tau R))"
    )
    clip_grad: float = clip_field(10.0, "C1: per-sample gradient clip radius (restart rounds)")
    clip_diff: float = clip_field(
        10.0, "C2: per-sample difference clip per unit step, c_r = C2 ||x_r - x_{r-1}||"
    )
    u: float = Field(1.25, gt=1, description="RDP split: restarts get 1/(2u) of the budget")


class DpGdConfig(PrivateConfig):
    """Hyperparameters of DP-GD (DIFF2 with ``T = 1``: every round is a restart round)."""

    name: Literal["dp_gd"] = "dp_gd"
    clip_grad: float = clip_field(10.0, "C: per-sample gradient clip radius")


def _period(config: AlgorithmConfig, rounds: int) -> int:
    from fedopt.privacy.calibration import period_from_tau

    tau = getattr(config, "tau", 0.0)
    return period_from_tau(tau, rounds)


def _calibration(config: AlgorithmConfig, rounds: int, facts: dict[str, Any]) -> Any:
    from fedopt.privacy.calibration import diff2_calibration

    return diff2_calibration(
        config.epsilon,  # type: ignore[attr-defined]
        config.delta,  # type: ignore[attr-defined]
        rounds,
        _period(config, rounds),
        facts["workers"],
        facts["n_min"],
        u=getattr(config, "u", 1.25),
    )


@ALGORITHMS.register("diff2")
class Diff2(PrivateStar):
    """DIFF2-GD on a star (server state ``x``, ``x_prev``, ``v``: ``[1, dim]`` each)."""

    Config: ClassVar[type[AlgorithmConfig]] = Diff2Config
    state_tensors = 6  # x and x_{r-1} per client chunk, their per-sample work, the message

    @classmethod
    def check_plan(cls, config: AlgorithmConfig, plan: object) -> None:
        """Refuse what breaks the recursion ``v_r = v_{r-1} + ...``: it needs every
        client every round, so no fault schedule (lossy links only cost time)."""
        check_private_plan(config.name, config, plan)
        faults = plan.config.faults  # type: ignore[attr-defined]
        if faults is not None and faults.any:
            raise ConfigError(
                f"faults: algorithm {config.name!r} needs every client every round (its "
                "gradient estimate v is rebuilt from every difference, so a crashed or cut-off "
                "client breaks it); remove the faults section, or use dp_sgd, which tolerates "
                "lost updates"
            )

    @classmethod
    def plan_facts(cls, config: AlgorithmConfig, plan: object, oracle: Any) -> dict[str, Any]:
        """``n_min``, ``n_max``, ``P``; the calibration checked by the accountant."""
        rounds = check_private_plan(config.name, config, plan)
        facts: dict[str, Any] = {**sample_count_facts(oracle()), "rounds": rounds}
        cal = _calibration(config, rounds, facts)
        if math.isfinite(config.epsilon):  # type: ignore[attr-defined]
            from fedopt.privacy.accountant import check_budget

            check_budget(
                cal.parts(),
                config.epsilon,  # type: ignore[attr-defined]
                config.delta,  # type: ignore[attr-defined]
                field="algorithm.epsilon",
            )
        return facts

    def __init__(self, config: AlgorithmConfig, ctx: WorkerContext) -> None:
        super().__init__(config, ctx)
        self.cal = _calibration(config, int(ctx.facts["rounds"]), dict(ctx.facts))
        self.period = self.cal.period
        self.clip_grad = float(config.clip_grad)  # type: ignore[attr-defined]
        self.clip_diff = float(getattr(config, "clip_diff", math.inf))
        self.sigma1 = float(self.cal.sigma1)
        self.sigma2 = float(self.cal.sigma2) if self.cal.sigma2 is not None else 0.0
        self.noise_scale = float(config.audit_noise_scale)  # type: ignore[attr-defined]
        self.keep_ledger(self.cal.mechanisms())

    def derived_constants(self) -> dict[str, Constant]:
        """``T``, the Rényi order, sigmas, noise multipliers and round counts."""
        cal = self.cal
        out: dict[str, Constant] = {
            "period_T": cal.period,
            "restart_rounds": cal.restart_rounds,
            "difference_rounds": cal.difference_rounds,
            "alpha": cal.alpha,
            "sigma1": cal.sigma1,
            "z1": cal.z1,
            "n_min": cal.n_min,
            "workers": cal.workers,
            "epsilon_closed_form": cal.epsilon_closed_form,
            "clip_grad": self.clip_grad,
        }
        if cal.sigma2 is not None:
            out.update(sigma2=cal.sigma2, z2=cal.z2, clip_diff=self.clip_diff)
        if self.noise_scale != 1.0:
            out["audit_noise_scale"] = self.noise_scale  # the ledger does not know
        return out

    def init_state(self) -> State:
        """Server: ``x = x_prev`` (data rank 0's initial draw), ``v = 0``; clients keep
        the last model they received (``seen``, one row per worker)."""
        state: State = {}
        x0 = self.initial_model()
        if x0 is None:
            return state
        if self.server is not None:
            state.update(x=x0.clone(), x_prev=x0.clone(), v=torch.zeros_like(x0))
        if len(self.client_local):
            state["seen"] = x0.clone()
        return state

    def _restart(self, t: int) -> bool:
        return t % self.period == 0

    def round(self, state: State, t: int) -> None:
        ctx = self.ctx
        mine = self.client_local
        x = self.receive_model(state)
        d = x.shape[1]
        restart = self._restart(t)
        msgs = torch.zeros(0, d, dtype=ctx.dtype, device=ctx.device)
        if len(mine):
            prev = state["seen"]
            radius, std = self._radius_and_std(x, prev, restart)
            rows = ctx.data_rows[mine]
            counts = ctx.oracle.num_samples[rows].to(torch.int64)
            X = x.expand(len(rows), d)
            if restart:
                sums = ctx.oracle.clipped_grad_sum(X, rows, radius)
            else:
                sums = ctx.oracle.clipped_grad_sum(X, rows, radius, X_prev=prev.expand_as(X))
            charge_per_sample(ctx.comm, mine, counts if restart else 2 * counts, t)
            msgs = sums / counts.to(sums.dtype).unsqueeze(1)  # exact means (pitfall D1)
            msgs = self.client_noise(msgs, t, std)
            state["seen"] = x.clone()
        total = self.send(msgs, d)
        if total is not None:
            self._server_step(state, t, total, restart)

    def _radius_and_std(
        self, x: torch.Tensor, prev: torch.Tensor, restart: bool
    ) -> tuple[float, float]:
        """Clip radius of the round and the noise std drawn for the average (the
        calibrated one times ``audit_noise_scale``)."""
        if restart:
            radius, sigma = self.clip_grad, self.sigma1
        else:
            step = float(torch.linalg.vector_norm((x - prev).to(torch.float64)))
            radius = self.clip_diff * step if step > 0 else 0.0  # D4: no step, no difference
            sigma = self.sigma2
        noisy = sigma > 0 and self.noise_scale > 0  # sigma 0: epsilon inf
        std = radius * sigma * self.noise_scale if noisy else 0.0
        return radius, std

    def _server_step(self, state: State, t: int, total: torch.Tensor, restart: bool) -> None:
        ctx = self.ctx
        x, v = state["x"], state["v"]
        _, std = self._radius_and_std(x, state["x_prev"], restart)
        mean = self.noisy_mean(total, t, std, x[0])
        if restart:
            v[0].copy_(mean)
        else:
            v[0].add_(mean)
        state["x_prev"].copy_(x)
        x[0].sub_(v[0], alpha=self.config.lr)  # type: ignore[attr-defined]
        ctx.ledgers["privacy"].spend("restart" if restart else "difference")


@ALGORITHMS.register("dp_gd")
class DpGd(Diff2):
    """DP-GD: :class:`Diff2` with ``T = 1`` (``c1 = 4`` in the calibration)."""

    Config: ClassVar[type[AlgorithmConfig]] = DpGdConfig

"""What the private algorithms share: the server-star checks, noise and exact means.

DIFF2, DP-GD and distributed DP-SGD (:mod:`fedopt.algorithms.diff2`,
:mod:`fedopt.algorithms.dp_sgd`) run on a star: every client computes a sum of
per-sample clipped vectors over its own data (``clipped_grad_sum`` of the
``per_sample_gradients`` capability), divides it by a *public* denominator (its sample
count ``n_p``, or an expected batch size) and sends it; the server averages the ``P``
messages with the fixed denominator ``P`` and adds Gaussian noise to the average. Both
denominators are fixed before any data are seen, so replacing one sample of one client
moves the average by at most ``2C / (P n_min)`` (pitfall D1 of the DIFF2 spec: never a
mean of batch means).

Noise is drawn from the keyed counter RNG under its own purposes (pitfall D7):
``"dp_noise"`` at the server (central threat model) or ``"dp_local_noise"`` at each
client (local: each adds ``N(0, P s^2)`` so that the average carries ``N(0, s^2)``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field

from fedopt import rng
from fedopt.algorithms.base import Algorithm, AlgorithmConfig, State, WorkerContext
from fedopt.engine.payload import Payload
from fedopt.errors import ConfigError
from fedopt.problems.capabilities import Capability
from fedopt.rng import SEED_MAX

ThreatModel = Literal["central", "local"]

NOISE_FIELD = Field(
    "central",
    description=(
        "where the DP noise is added: central (at the server, on the average; trusted "
        "server or secure aggregation) or local (each client adds N(0, P s^2), so the "
        "average carries the same noise; a single message is then only sqrt(P) times as "
        "noisy as the average needs, i.e. much less private)"
    ),
)

EPSILON_FIELD = Field(
    3.0,
    gt=0,
    allow_inf_nan=True,
    description="target epsilon of (epsilon, delta)-DP at the sample level; inf: no noise",
)
DELTA_FIELD = Field(1e-5, gt=0, lt=1, description="target delta of (epsilon, delta)-DP")
NOISE_SEED_FIELD = Field(
    None,
    ge=0,
    le=SEED_MAX,
    description="seed of the mechanism's randomness (DP noise, Poisson sampling); default: the "
    "experiment seed. Changing it redraws the noise on the same data (privacy audits)",
)

AUDIT_NOISE_SCALE_FIELD = Field(
    1.0,
    ge=0,
    description="for audits only (fedopt audit --noise-scale): multiplies the standard "
    "deviation of the noise actually drawn, while the ledger still claims the calibrated "
    "epsilon; any value but 1 breaks the privacy claim (a deliberately broken mechanism)",
)

PLD_FIELD = Field(
    True,
    description="also report the PLD accountant's (tighter) epsilon in every record "
    "(about 20 ms per record; the RDP epsilon is always reported)",
)


def mechanism_seed(config: Any, seed: int) -> int:
    """The seed of the DP noise and sampling: ``noise_seed``, else the experiment's."""
    own = getattr(config, "noise_seed", None)
    return int(seed if own is None else own)


def clip_field(default: float, what: str) -> Any:
    """A clip radius field: ``> 0``; ``inf`` turns clipping off (say so in the docs)."""
    return Field(default, gt=0, allow_inf_nan=True, description=f"{what}; inf: no clipping")


def check_private_plan(name: str, config: Any, plan: Any) -> int:
    """Refuse what the privacy argument cannot cover; return the number of rounds ``R``.

    The noise is calibrated for a fixed number of rounds (``stop.rounds``), every client
    takes part every round, and nobody is Byzantine.
    """
    cfg = plan.config
    rounds = cfg.stop.rounds
    if rounds is None:
        raise ConfigError(
            f"stop.rounds: algorithm {name!r} calibrates its noise for a fixed number of "
            "rounds R; set stop.rounds (sim_time_s alone leaves R unknown)"
        )
    if cfg.byzantine is not None:
        raise ConfigError(
            f"byzantine: algorithm {name!r} has no Byzantine-robust variant; remove the "
            "byzantine section"
        )
    if not len(plan.clients):
        raise ConfigError(f"topology: algorithm {name!r} needs clients holding data")
    return int(rounds)


def sample_count_facts(oracle: Any) -> dict[str, int]:
    """``n_min`` and ``n_max`` over every data node (compile-time plan facts)."""
    counts = oracle.num_samples
    return {"n_min": int(counts.min()), "n_max": int(counts.max()), "workers": len(counts)}


def server_noise(seed: int, server: int, t: int, dim: int, std: float, dtype: torch.dtype):
    """``N(0, std^2 I_dim)`` drawn at the server in round ``t`` (purpose ``dp_noise``)."""
    keys = rng.node_keys(seed, "dp_noise", torch.tensor([server], dtype=torch.int64), t)
    return rng.normal(keys, dim, torch.float64)[0].mul_(std).to(dtype)


def local_noise(
    seed: int, clients: torch.Tensor, t: int, dim: int, std: float, dtype: torch.dtype
) -> torch.Tensor:
    """``[k, dim]`` ``N(0, std^2)`` per client in round ``t`` (purpose ``dp_local_noise``)."""
    keys = rng.node_keys(seed, "dp_local_noise", clients, t)
    return rng.normal(keys, dim, torch.float64).mul_(std).to(dtype)


def charge_per_sample(comm: Any, rows: torch.Tensor, counts: torch.Tensor, t: int) -> None:
    """Charge each hosted row ``counts[i]`` per-sample gradients (grouped by count)."""
    for c in torch.unique(counts).tolist():
        if c > 0:
            comm.compute(rows[counts == c], int(c), t, "per_sample_gradients")


class PrivateConfig(AlgorithmConfig):
    """The fields every private algorithm shares: its step, privacy target, noise
    placement and randomness, accountant report and audit knob."""

    lr: float = Field(0.5, gt=0, le=1e6, description="step size of the server's x <- x - lr v")
    epsilon: float = EPSILON_FIELD
    delta: float = DELTA_FIELD
    threat_model: ThreatModel = NOISE_FIELD
    noise_seed: int | None = NOISE_SEED_FIELD
    pld: bool = PLD_FIELD
    audit_noise_scale: float = AUDIT_NOISE_SCALE_FIELD


class PrivateStar(Algorithm):
    """Base of the private algorithms over a star: who is who, the round's exchanges,
    the noise at the server or the clients, the ledger, and the server's model as output.

    A round is ``x = receive_model(state)`` (the server's ``x`` broadcast to the hosted
    clients), the clients' messages through :meth:`send` (summed in canonical order at
    the server), and :meth:`noisy_mean` there (the sum over ``P``, plus the server's noise
    in the central threat model). Subclasses keep the server's model in ``state["x"]``.
    """

    requires = frozenset({"star", Capability.PER_SAMPLE_GRADIENTS})
    roles = ("server", "client")

    @classmethod
    def check_plan(cls, config: AlgorithmConfig, plan: object) -> None:
        check_private_plan(config.name, config, plan)

    def __init__(self, config: AlgorithmConfig, ctx: WorkerContext) -> None:
        super().__init__(config, ctx)
        if ctx.server_id is None or ctx.clients is None:
            raise ValueError(f"{config.name} needs a topology with a server and clients")
        self.server_id = ctx.server_id
        self.noise_seed = mechanism_seed(config, ctx.seed)
        servers = [int(ctx.hosted[i]) for i in ctx.hosted_with_role("server")]
        self.server = servers[0] if servers else None  # hosted here?
        self.client_local = ctx.hosted_with_role("client")
        self.client_ids = ctx.clients
        self.workers = int(ctx.facts["workers"])
        self.local_threat = getattr(config, "threat_model", "central") == "local"

    def keep_ledger(self, mechanisms: dict[str, float], sample_rate: float = 1.0) -> None:
        """The privacy ledger, kept by the worker that hosts the server."""
        if self.server is None:
            return
        from fedopt.privacy.ledger import PrivacyLedger

        cfg = self.config
        self.ctx.ledgers["privacy"] = PrivacyLedger(
            delta=cfg.delta,  # type: ignore[attr-defined]
            threat_model=cfg.threat_model,  # type: ignore[attr-defined]
            mechanisms=mechanisms,  # z = 0 (no noise): epsilon inf
            sample_rate=sample_rate,
            workers=self.workers,
            with_pld=cfg.pld,  # type: ignore[attr-defined]
        )

    def initial_model(self) -> torch.Tensor | None:
        """``[1, dim]``: data rank 0's initial draw (None without one)."""
        ctx = self.ctx
        if ctx.initial_params is None:
            return None
        return ctx.initial_params(0).to(device=ctx.device, dtype=ctx.dtype).reshape(1, -1)

    def receive_model(self, state: State) -> torch.Tensor:
        """The server's ``x`` as every hosted client receives it: ``[1, dim]``."""
        ctx = self.ctx
        x = ctx.comm.broadcast(
            state.get("x"), self.server_id, ctx.hosted[self.client_local], "model"
        )
        return x.reshape(1, -1)

    def client_noise(self, msgs: torch.Tensor, t: int, std: float) -> torch.Tensor:
        """``msgs`` plus ``N(0, P std^2)`` per client in the local threat model (D6)."""
        if not self.local_threat or std <= 0:
            return msgs
        ids = self.ctx.hosted[self.client_local]
        noise = local_noise(
            self.noise_seed, ids, t, msgs.shape[1], std * math.sqrt(self.workers), msgs.dtype
        )
        return msgs + noise

    def send(self, msgs: torch.Tensor, d: int) -> torch.Tensor | None:
        """Each hosted client sends its row (``d`` floats); the sum at the server (None
        elsewhere), in canonical order."""
        ctx = self.ctx
        if not len(msgs):
            msgs = torch.zeros(0, d, dtype=ctx.dtype, device=ctx.device)
        got = ctx.comm.gather_sum(
            msgs,
            torch.ones(len(msgs), dtype=msgs.dtype, device=msgs.device),
            ctx.hosted[self.client_local],
            self.client_ids,
            self.server_id,
            "update",
            Payload.fields({"update": (d, msgs.dtype)}),
        )
        if self.server is None or got is None:
            return None
        return got[0]

    def noisy_mean(self, total: torch.Tensor, t: int, std: float, like: torch.Tensor):
        """``total / P`` (the fixed, public denominator) plus the server's ``N(0, std^2)``
        in the central threat model, in ``like``'s dtype."""
        mean = total.to(like.dtype) / self.workers
        if not self.local_threat and std > 0:
            mean = mean + server_noise(
                self.noise_seed, self.server_id, t, like.shape[-1], std, like.dtype
            )
        return mean

    def output(self, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        if self.server is None:
            return torch.empty(0, dtype=torch.int64), torch.empty(0, 0, dtype=self.ctx.dtype)
        return torch.tensor([self.server]), state["x"]

    @classmethod
    def output_rows(cls, config: AlgorithmConfig, n: int) -> int:
        return 1  # the server's model

    @classmethod
    def analytic_traffic(cls, config: AlgorithmConfig, plan: object, rounds: int) -> int:
        clients = len(plan.topology.role_nodes("client"))  # type: ignore[attr-defined]
        return 2 * clients * rounds

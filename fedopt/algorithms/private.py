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

from typing import Any, Literal

import torch
from pydantic import Field

from fedopt import rng
from fedopt.errors import ConfigError
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

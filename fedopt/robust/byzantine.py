"""The ``byzantine`` section: which nodes are Byzantine and how they attack.

Byzantine nodes hold no data, compute nothing honest, and each round send what their
attack (:mod:`fedopt.robust.attacks`) makes of the honest vectors of the round: they
are omniscient and collude. Only algorithms that model adversaries (``supports_byzantine``)
accept the section; they decide whether the attack acts on models (peer-to-peer) or on
updates (server-based). Example::

    byzantine:
      count: 5                      # the last 5 node ids (or nodes: [3, 7, ...])
      attack: {name: alie}          # line search on the factor; or {name: alie, factor: 1.5}
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, model_validator

from fedopt.errors import ConfigError
from fedopt.fields import COUNT_MAX, Section
from fedopt.robust.attacks import ATTACKS, make_attack


class AttackSpec(Section):
    """An attack name plus its parameters (checked against the attack's own fields)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str = Field(description="registered attack (see `fedopt list`)")

    def params(self) -> dict[str, Any]:
        """The attack's parameters (every key but ``name``)."""
        return dict(self.model_extra or {})


class ByzantineConfig(Section):
    """The ``byzantine`` section: the Byzantine node ids (or their count) and the attack."""

    nodes: list[int] | None = Field(None, min_length=1, description="Byzantine node ids")
    count: int | None = Field(
        None, ge=1, le=COUNT_MAX, description="f: the last f node ids are Byzantine"
    )
    attack: AttackSpec

    @model_validator(mode="after")
    def _one_choice(self) -> ByzantineConfig:
        if (self.nodes is None) == (self.count is None):
            raise ValueError("give exactly one of byzantine.nodes and byzantine.count")
        if self.nodes is not None and len(set(self.nodes)) != len(self.nodes):
            raise ValueError("byzantine.nodes lists a node twice; list each id once")
        return self

    def ids(self, n: int) -> list[int]:
        """Sorted Byzantine node ids in a topology of ``n`` nodes."""
        if self.nodes is not None:
            return sorted(self.nodes)
        return list(range(n - int(self.count or 0), n))


def check_byzantine(
    config: ByzantineConfig,
    n: int,
    algorithm: Any,
    algorithm_name: str,
    problem_class: Any,
    problem_name: str,
) -> list[int]:
    """Raise :class:`ConfigError` for what the run cannot have; return the ids."""
    if not getattr(algorithm, "supports_byzantine", False):
        raise ConfigError(
            f"byzantine: algorithm {algorithm_name!r} does not model Byzantine nodes; "
            "use a robust algorithm (monna, nna, mocwtm, bridge, mogm, gm, scc, p2p_mean) or "
            "fedavg with an aggregator, or remove the section"
        )
    if config.nodes is not None:
        bad = [i for i in config.nodes if not 0 <= i < n]
        if bad:
            raise ConfigError(
                f"byzantine.nodes: node id {bad[0]} is out of range; the topology has nodes "
                f"0..{n - 1}"
            )
    ids = config.ids(n)
    f = len(ids)
    if 2 * f >= n:
        raise ConfigError(
            f"byzantine: f={f} Byzantine nodes out of n={n}, but robust learning needs "
            f"f < n/2 (at most {(n - 1) // 2} here); lower byzantine.count or add nodes"
        )
    attack = make_attack(config.attack.name, **config.attack.params())
    if attack.needs_flipped and not getattr(problem_class.oracle_class, "has_labels", False):
        raise ConfigError(
            f"byzantine.attack: {config.attack.name!r} flips labels, but problem "
            f"{problem_name!r} has none; use a classification problem with class labels "
            "(digits_softmax, digits_mlp) or another attack"
        )
    return ids


__all__ = ["ATTACKS", "AttackSpec", "ByzantineConfig", "check_byzantine"]

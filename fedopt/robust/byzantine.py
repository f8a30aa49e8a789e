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

from collections.abc import Sequence
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


def id_ranges(ids: Sequence[int]) -> str:
    """Sorted ids written as ranges: ``[1, 2, 3, 5]`` -> ``"1..3, 5"``."""
    parts: list[str] = []
    ordered = sorted(ids)
    start = prev = None
    for i in [*ordered, None]:
        if start is not None and (i is None or i != prev + 1):
            parts.append(str(start) if start == prev else f"{start}..{prev}")
            start = None
        if i is not None and start is None:
            start = i
        prev = i
    return ", ".join(parts) or "none"


def check_byzantine(
    config: ByzantineConfig,
    roles: Sequence[str],
    algorithm: Any,
    algorithm_name: str,
    problem_class: Any,
    problem_name: str,
) -> list[int]:
    """Raise :class:`ConfigError` for what the run cannot have; return the ids.

    Only participants can be Byzantine: every node but the server (a Byzantine server is
    not modelled), and the bound ``f < n/2`` counts participants only.

    Parameters
    ----------
    config
        The ``byzantine`` section.
    roles
        Role of every node of the compiled topology (``server``, ``client``, ``gossip``).
    algorithm, algorithm_name
        The algorithm class (its ``supports_byzantine``) and its name, for messages.
    problem_class, problem_name
        The problem class (whether its oracle has labels) and its name.
    """
    n = len(roles)
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
    participants = [i for i, r in enumerate(roles) if r != "server"]
    ids = config.ids(n)
    servers = [i for i in ids if roles[i] == "server"]
    if servers:
        valid = id_ranges(participants)
        server = servers[0]
        if config.nodes is not None:
            raise ConfigError(
                f"byzantine.nodes: node {server} has role 'server', but only clients can be "
                f"Byzantine (a Byzantine server is not modelled); list client ids only "
                f"(valid ids: {valid})"
            )
        raise ConfigError(
            f"byzantine.count: {config.count} makes the last {config.count} node ids "
            f"{id_ranges(ids)} Byzantine, but node {server} has role 'server' and only "
            f"clients can be Byzantine (a Byzantine server is not modelled); list client ids "
            f"in byzantine.nodes instead (valid ids: {valid})"
        )
    f, m = len(ids), len(participants)
    if 2 * f >= m:
        who = "nodes" if m == n else f"clients (the server does not count; n={n} nodes)"
        k = (m - 1) // 2
        if k == 0:
            field = "byzantine.count" if config.count is not None else "byzantine.nodes"
            fix = "remove the byzantine section"
        elif config.count is not None:
            field, fix = "byzantine.count", f"set byzantine.count <= {k}"
        else:
            field, fix = "byzantine.nodes", f"list at most {k} ids in byzantine.nodes"
        raise ConfigError(
            f"{field}: f={f} Byzantine out of {m} {who}, but robust learning needs "
            f"f < n/2 over the participants (at most {k} here); {fix}, or add nodes"
        )
    attack = make_attack(config.attack.name, **config.attack.params())
    if attack.needs_flipped:
        from fedopt.problems.capabilities import Capability, require

        require(
            {Capability.LABELS},
            f"attack {config.attack.name!r}",
            problem_name,
            problem_class,
            field="byzantine.attack",
        )
    return ids


__all__ = ["ATTACKS", "AttackSpec", "ByzantineConfig", "check_byzantine", "id_ranges"]

"""The fault schedule: crashes, lost messages, failed links, partitions, partial receipt.

Declared in the experiment's ``faults`` section and applied by the engine to every
round algorithm, through the messaging seam (:class:`~fedopt.engine.comm.Comm`) and
the worker (crashed nodes are frozen):

* ``crashes``: nodes that stop in a window of rounds (``at_round`` to ``recover_round``)
  or of simulated time (``at_time_s`` to ``recover_time_s``; checked at the start of
  each round). A crashed node neither computes, sends nor receives; its state is kept
  as it was when it crashed and it resumes from there when it recovers.
* ``drop``: probability that a message is lost (per message, independent, keyed by
  ``(seed, "drop", edge id, exchange)``); an edge attribute ``drop`` in a graph file
  sets it per link.
* ``link_failures``: undirected links that carry nothing during a window.
* ``partitions``: during a window, only nodes in the same group can talk (nodes listed
  in no group form one more group).
* ``partial_receipt``: a receiver proceeds after the first ``k`` messages that arrive
  (by simulated arrival time, ties by sender id) and ignores the later ones.

Stragglers are the compute model's business (``compute.speeds``, ``speed_spread``,
``straggler_prob``, ``straggler_slowdown``). Every message that was sent is metered,
under its kind when used, ``<kind>:late`` when it arrived but was not used (partial
receipt) and ``<kind>:dropped`` when it never arrived. A receiver that misses a message
uses its own value in its place (gossip: the weight ``W_ij`` goes to ``W_ii``; server
aggregation: the sender's weight is zero), so rows stay stochastic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field, model_validator

from fedopt import rng
from fedopt.errors import ConfigError
from fedopt.fields import COUNT_MAX, Section


class Window(Section):
    """A time window in rounds (``from_round`` inclusive to ``to_round`` exclusive) or in
    simulated seconds (``from_time_s`` to ``to_time_s``); an open end lasts to the end."""

    from_round: int | None = Field(
        None, ge=0, le=COUNT_MAX, description="first round of the window"
    )
    to_round: int | None = Field(
        None, ge=1, le=COUNT_MAX, description="round at which the window ends"
    )
    from_time_s: float | None = Field(None, ge=0, description="start in simulated seconds")
    to_time_s: float | None = Field(None, gt=0, description="end in simulated seconds")

    @model_validator(mode="after")
    def _one_clock(self) -> Window:
        rounds = self.from_round is not None or self.to_round is not None
        times = self.from_time_s is not None or self.to_time_s is not None
        if rounds and times:
            raise ValueError("give the window in rounds or in simulated seconds, not both")
        if not rounds and not times:
            raise ValueError("give the window's start: from_round or from_time_s")
        lo, hi = (self.from_round, self.to_round) if rounds else (self.from_time_s, self.to_time_s)
        if lo is None:
            raise ValueError("give the window's start: from_round or from_time_s")
        if hi is not None and hi <= lo:
            raise ValueError(f"the window ends ({hi}) before it starts ({lo}); swap them")
        return self

    def active(self, t: int, time_s: float) -> bool:
        """Whether round ``t`` (starting at simulated ``time_s``) is inside the window."""
        if self.from_round is not None:
            return self.from_round <= t and (self.to_round is None or t < self.to_round)
        assert self.from_time_s is not None
        return self.from_time_s <= time_s and (self.to_time_s is None or time_s < self.to_time_s)

    def start(self) -> tuple[str, float]:
        """``(unit, value)`` of the window's start (for range checks)."""
        if self.from_round is not None:
            return "round", float(self.from_round)
        return "time", float(self.from_time_s or 0.0)


class CrashConfig(Window):
    """Nodes that crash during the window (and recover at its end)."""

    nodes: list[int] = Field(min_length=1, description="ids of the crashing nodes")


class LinkFailureConfig(Window):
    """Undirected links that carry nothing during the window."""

    links: list[tuple[int, int]] = Field(min_length=1, description="[[i, j], ...] node pairs")


class PartitionConfig(Window):
    """Groups of nodes that cannot talk to each other during the window."""

    groups: list[list[int]] = Field(min_length=1, description="disjoint lists of node ids")


class FaultsConfig(Section):
    """The ``faults`` section (every entry optional; empty means a fault-free run)."""

    crashes: list[CrashConfig] = Field(default_factory=list)
    drop: float = Field(0.0, ge=0, le=1, description="probability that a message is lost")
    link_failures: list[LinkFailureConfig] = Field(default_factory=list)
    partitions: list[PartitionConfig] = Field(default_factory=list)
    partial_receipt: int | None = Field(
        None, ge=1, le=COUNT_MAX, description="receivers use only the first k messages that arrive"
    )

    @property
    def any(self) -> bool:
        """Whether any fault is declared."""
        return bool(
            self.crashes
            or self.drop > 0
            or self.link_failures
            or self.partitions
            or self.partial_receipt is not None
        )


def check_faults(
    faults: FaultsConfig,
    n: int,
    edges: np.ndarray,
    edge_drop: np.ndarray | None,
    stop: Any,
    server_id: int | None,
) -> None:
    """Raise :class:`ConfigError` for node ids, links or times the run cannot have."""

    def node_ids(field: str, ids: list[int]) -> None:
        bad = [i for i in ids if not 0 <= i < n]
        if bad:
            raise ConfigError(
                f"{field}: node id {bad[0]} is out of range; the topology has nodes 0..{n - 1}"
            )

    def inside_run(field: str, w: Window) -> None:
        unit, value = w.start()
        if unit == "round" and stop.rounds is not None and value >= stop.rounds:
            raise ConfigError(
                f"{field}.from_round: {int(value)} is after the run's last round "
                f"(stop.rounds={stop.rounds}); use a round below {stop.rounds}"
            )
        if unit == "time" and stop.sim_time_s is not None and value >= stop.sim_time_s:
            raise ConfigError(
                f"{field}.from_time_s: {value:g} s is after the run ends "
                f"(stop.sim_time_s={stop.sim_time_s:g}); use an earlier time"
            )

    for k, c in enumerate(faults.crashes):
        node_ids(f"faults.crashes[{k}].nodes", c.nodes)
        inside_run(f"faults.crashes[{k}]", c)
        if server_id is not None and server_id in c.nodes:
            raise ConfigError(
                f"faults.crashes[{k}].nodes: node {server_id} is the server, which cannot "
                "crash here; crash clients instead"
            )
    known = {(int(a), int(b)) for a, b in np.asarray(edges).reshape(-1, 2)}
    for k, f in enumerate(faults.link_failures):
        inside_run(f"faults.link_failures[{k}]", f)
        for i, j in f.links:
            node_ids(f"faults.link_failures[{k}].links", [i, j])
            if (i, j) not in known and (j, i) not in known:
                raise ConfigError(
                    f"faults.link_failures[{k}].links: ({i}, {j}) is not an edge of the "
                    "topology; list existing links only"
                )
    for k, p in enumerate(faults.partitions):
        inside_run(f"faults.partitions[{k}]", p)
        seen: set[int] = set()
        for g in p.groups:
            node_ids(f"faults.partitions[{k}].groups", g)
            twice = seen.intersection(g)
            if twice:
                raise ConfigError(
                    f"faults.partitions[{k}].groups: node {min(twice)} is in two groups; "
                    "groups must be disjoint"
                )
            seen.update(g)
    if edge_drop is not None:
        given = edge_drop[~np.isnan(edge_drop)]
        if len(given) and ((given < 0) | (given > 1)).any():
            bad = float(given[(given < 0) | (given > 1)][0])
            raise ConfigError(
                f"topology: edge attribute drop={bad:g} is not a probability; use a value in [0, 1]"
            )


class FaultModel:
    """Which nodes are down and which messages arrive, round by round.

    Parameters
    ----------
    config
        The ``faults`` section (already checked by :func:`check_faults`).
    n
        Number of nodes.
    edges
        ``[E, 2]`` directed edges of the topology (edge ids index them).
    edge_drop
        Per-edge drop probability from the graph (NaN where unset), or None.
    seed
        Experiment seed.
    """

    def __init__(
        self,
        config: FaultsConfig,
        n: int,
        edges: np.ndarray,
        edge_drop: np.ndarray | None,
        seed: int,
    ) -> None:
        self.config = config
        self.n = n
        self.seed = seed
        self.edges = torch.from_numpy(np.asarray(edges, dtype=np.int64).reshape(-1, 2))
        drop = np.full(len(self.edges), config.drop, dtype=np.float64)
        if edge_drop is not None:
            drop = np.where(np.isnan(edge_drop), drop, edge_drop)
        self.drop = torch.from_numpy(drop)
        self.lossy = bool((self.drop > 0).any())
        self.down = torch.zeros(n, dtype=torch.bool)
        self._link_down: torch.Tensor | None = None
        self._group: torch.Tensor | None = None

    def begin_round(self, t: int, time_s: float) -> None:
        """Fix the crashed nodes, failed links and partition groups of round ``t``."""
        cfg = self.config
        self.down = torch.zeros(self.n, dtype=torch.bool)
        for c in cfg.crashes:
            if c.active(t, time_s):
                self.down[c.nodes] = True
        failed = [f for f in cfg.link_failures if f.active(t, time_s)]
        self._link_down = None
        if failed:
            down = torch.zeros((self.n, self.n), dtype=torch.bool)
            for f in failed:
                for i, j in f.links:
                    down[i, j] = down[j, i] = True
            self._link_down = down
        parts = [p for p in cfg.partitions if p.active(t, time_s)]
        self._group = None
        if parts:
            # nodes in different groups of any active partition cannot talk: encode each
            # node's membership as one label per partition and compare them all
            labels = torch.zeros((len(parts), self.n), dtype=torch.int64)
            for k, p in enumerate(parts):
                labels[k].fill_(len(p.groups))  # the unlisted nodes' group
                for g, members in enumerate(p.groups):
                    labels[k, members] = g
            self._group = labels

    def delivered(
        self, src: torch.Tensor, dst: torch.Tensor, eids: torch.Tensor, exchange: int
    ) -> torch.Tensor:
        """Whether each message ``src -> dst`` (sent by a live node) reaches ``dst``."""
        ok = ~self.down[dst]
        if self._link_down is not None:
            ok &= ~self._link_down[src, dst]
        if self._group is not None:
            ok &= (self._group[:, src] == self._group[:, dst]).all(0)
        if self.lossy and len(eids):
            keys = rng.node_keys(self.seed, "drop", eids, exchange)
            u = rng.uniform(keys, 1, torch.float64).squeeze(1)
            ok &= u >= self.drop[eids]
        return ok

    def first_k(self, dst: torch.Tensor, arrival: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        """Among messages (all delivered), those within the first ``k`` arrivals per receiver."""
        k = self.config.partial_receipt
        if k is None or len(dst) == 0:
            return torch.ones(len(dst), dtype=torch.bool)
        order = np.lexsort((src.numpy(), arrival.numpy(), dst.numpy()))
        d_sorted = dst.numpy()[order]
        starts = np.r_[0, np.flatnonzero(np.diff(d_sorted)) + 1]
        rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
        keep = np.empty(len(order), dtype=bool)
        keep[order] = rank < k
        return torch.from_numpy(keep)

"""A seeded stream of Poisson clock events: gradient steps on nodes, gossip on edges.

Every node ``i`` carries a Poisson clock of rate ``node_rate`` (a gradient step at each
arrival) and every undirected edge ``e`` a clock of rate ``edge_rate[e]`` (one gossip
exchange). The superposition is one Poisson process of total rate

    R = n * node_rate + sum_e edge_rate[e],

so inter-arrival times are ``Exp(R)`` and each arrival belongs to a node or an edge with
probability proportional to its rate. Events are drawn in blocks of ``block`` events;
block ``k`` uses counter-based random numbers keyed by (seed, "events", k), so the stream
is the same on every engine and can be regenerated from any block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedopt import rng


@dataclass(frozen=True)
class EventBlock:
    """Consecutive events in time order.

    ``kind`` is 0 for a gradient event at node ``a`` and 1 for a gossip event on edge
    ``(a, b)``; ``b`` is -1 for gradient events.
    """

    time: np.ndarray  # float64 [k]
    kind: np.ndarray  # int8 [k]
    a: np.ndarray  # int64 [k]
    b: np.ndarray  # int64 [k]
    first: int = 0  # global index of the first event (keys per-event randomness)


class PoissonEventStream:
    """Events of independent Poisson clocks on ``n`` nodes and the undirected ``edges``.

    Parameters
    ----------
    n
        Number of nodes.
    edges
        ``[E, 2]`` undirected edges (each listed once).
    node_rate
        Rate of every node's gradient clock (> 0, or 0 for gossip only).
    edge_rate
        Rate of each edge's clock: a scalar (uniform) or one value per edge.
    seed
        Experiment seed.
    block
        Events drawn per block.
    """

    def __init__(
        self,
        n: int,
        edges: np.ndarray,
        node_rate: float,
        edge_rate: float | np.ndarray,
        seed: int,
        block: int = 4096,
    ) -> None:
        edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
        rates = np.broadcast_to(np.asarray(edge_rate, dtype=np.float64), (len(edges),)).copy()
        if node_rate < 0 or (rates < 0).any():
            raise ValueError(
                f"rates must be >= 0, got node_rate={node_rate}, min edge rate "
                f"{rates.min(initial=0):g}"
            )
        self.n, self.edges, self.seed, self.block = n, edges, seed, block
        self.node_rate = float(node_rate)
        weights = np.concatenate([np.full(n, self.node_rate), rates])
        self.total_rate = float(weights.sum())
        if self.total_rate <= 0:
            raise ValueError("every rate is zero: no event would ever happen")
        self._cdf = np.cumsum(weights) / self.total_rate
        self._cdf[-1] = 1.0
        self._next_block = 0
        self._clock = 0.0

    def next_block(self) -> EventBlock:
        """The next ``block`` events, continuing in time from the previous block."""
        k = self._next_block
        keys = rng.node_keys(self.seed, "events", torch.tensor([k]), 0)
        u = rng.uniform(keys, 2 * self.block, torch.float64).numpy()[0]
        gaps = -np.log1p(-u[: self.block]) / self.total_rate  # Exp(R), u in [0, 1)
        times = self._clock + np.cumsum(gaps)
        who = np.searchsorted(self._cdf, u[self.block :], side="right")
        who = np.minimum(who, len(self._cdf) - 1)
        is_edge = who >= self.n
        e = np.where(is_edge, who - self.n, 0)
        a = np.where(is_edge, self.edges[e, 0] if len(self.edges) else 0, who)
        b = np.where(is_edge, self.edges[e, 1] if len(self.edges) else -1, -1)
        self._next_block += 1
        self._clock = float(times[-1])
        return EventBlock(
            times, is_edge.astype(np.int8), a.astype(np.int64), b.astype(np.int64), k * self.block
        )


class SwitchingEventStream:
    """Poisson clocks on a graph that switches every ``switch_every`` time units.

    Segment ``s`` (times ``[s T, (s + 1) T)``) uses ``edge_sets[s mod K]`` with the total
    gossip rate split evenly over that graph's edges. Poisson processes are memoryless,
    so restarting the clocks at each switch (a fresh stream keyed by (seed, segment))
    is exact. Same interface as :class:`PoissonEventStream`.
    """

    def __init__(
        self,
        n: int,
        edge_sets: list[np.ndarray],
        node_rate: float,
        edge_rate_total: float,
        switch_every: float,
        seed: int,
        block: int = 4096,
    ) -> None:
        if switch_every <= 0:
            raise ValueError(f"switch_every must be > 0, got {switch_every}")
        self.n, self.edge_sets, self.block = n, edge_sets, block
        self.node_rate, self.edge_rate_total = node_rate, edge_rate_total
        self.switch_every, self.seed = switch_every, seed
        self._segment = -1
        self._inner: PoissonEventStream | None = None
        self._streams: dict[int, PoissonEventStream] = {}
        self._count = 0

    def _start(self, segment: int) -> None:
        """Restart the clocks at a switch: graph ``segment mod K``, fresh random key."""
        k = segment % len(self.edge_sets)
        if k not in self._streams:  # one stream (rates, CDF) per graph, re-keyed per segment
            total = self.n * self.node_rate + self.edge_rate_total
            inner_block = max(8, int(2 * total * self.switch_every) + 1)
            edges = self.edge_sets[k]
            self._streams[k] = PoissonEventStream(
                self.n, edges, self.node_rate, self.edge_rate_total / len(edges), 0, inner_block
            )
        inner = self._streams[k]
        inner.seed = int(rng.numpy_seed(self.seed, "segment", segment))
        inner._next_block = 0
        inner._clock = segment * self.switch_every
        self._inner = inner
        self._segment = segment

    def next_block(self) -> EventBlock:
        """The next ``block`` events in time order (a block may span graph switches)."""
        if self._inner is None:
            self._start(0)
        parts: list[EventBlock] = []
        got = 0
        while got < self.block:
            end = (self._segment + 1) * self.switch_every
            blk = self._inner.next_block()  # type: ignore[union-attr]
            keep = int(np.searchsorted(blk.time, end, side="left"))
            if keep:
                parts.append(blk)
                got += keep
                parts[-1] = EventBlock(blk.time[:keep], blk.kind[:keep], blk.a[:keep], blk.b[:keep])
            if keep < len(blk.time):
                self._start(self._segment + 1)
        out = EventBlock(
            np.concatenate([p.time for p in parts]),
            np.concatenate([p.kind for p in parts]),
            np.concatenate([p.a for p in parts]),
            np.concatenate([p.b for p in parts]),
            self._count,
        )
        self._count += len(out.time)
        return out

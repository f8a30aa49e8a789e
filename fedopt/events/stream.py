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
from typing import Any

import numpy as np
import torch

from fedopt import rng
from fedopt.errors import ConfigError


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

    def state(self) -> dict[str, Any]:
        """Where the stream stands (next block, clock): :meth:`set_state` resumes there."""
        return {"next_block": self._next_block, "clock": self._clock}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state` of a stream built with the same arguments."""
        self._next_block = int(state["next_block"])
        self._clock = float(state["clock"])


class SwitchingEventStream:
    """Poisson clocks on a graph that switches every ``switch_every`` time units.

    Segment ``s`` (times ``[s T, (s + 1) T)``) uses ``edge_sets[s mod K]`` with the total
    gossip rate split evenly over that graph's edges. Poisson processes are memoryless,
    so restarting the clocks at each switch (fresh random numbers keyed by
    (seed, "segment", s)) is exact. The total rate is the same on every graph, so the
    arrival times of many segments are drawn at once (one ``[segments, draws]`` array)
    and only the choice of node or edge depends on each segment's graph: switches every
    fraction of an event cost no per-segment set-up. Same interface as
    :class:`PoissonEventStream`.
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
        self.n, self.block = n, block
        self.node_rate, self.edge_rate_total = node_rate, edge_rate_total
        self.switch_every, self.seed = switch_every, seed
        self.edge_sets = [np.asarray(e, dtype=np.int64).reshape(-1, 2) for e in edge_sets]
        # one PoissonEventStream per graph holds that graph's rates and CDF
        self._graphs = [
            PoissonEventStream(n, e, node_rate, edge_rate_total / len(e), seed, 1)
            for e in self.edge_sets
        ]
        self.total_rate = self._graphs[0].total_rate
        expected = self.total_rate * switch_every
        self._draws = max(8, int(2 * expected + 4 * expected**0.5) + 1)  # per segment
        self._segments = max(1, (2 * block) // self._draws)  # segments drawn together
        self._next_segment = 0
        self._buffer: list[np.ndarray] = []  # time, kind, a, b of drawn, unserved events
        self._count = 0

    def _choose(self, graph: int, u: np.ndarray) -> tuple[np.ndarray, ...]:
        """Node (gradient) or edge (gossip) of each event from its choice draw ``u``."""
        g = self._graphs[graph]
        who = np.minimum(np.searchsorted(g._cdf, u, side="right"), len(g._cdf) - 1)
        is_edge = who >= self.n
        e = np.where(is_edge, who - self.n, 0)
        a = np.where(is_edge, g.edges[e, 0], who)
        b = np.where(is_edge, g.edges[e, 1], -1)
        return is_edge.astype(np.int8), a.astype(np.int64), b.astype(np.int64)

    def _long_segment(self, segment: int, times: np.ndarray, u: np.ndarray) -> list[np.ndarray]:
        """Events of a segment with more arrivals than one row of draws (rare)."""
        end = (segment + 1) * self.switch_every
        B = self._draws
        t_parts, c_parts = [times], [u[B:]]
        j = 1
        while t_parts[-1][-1] < end:
            keys = rng.node_keys(self.seed, "segment_more", torch.tensor([segment]), j)
            v = rng.uniform(keys, 2 * B, torch.float64).numpy()[0]
            t_parts.append(t_parts[-1][-1] + np.cumsum(-np.log1p(-v[:B]) / self.total_rate))
            c_parts.append(v[B:])
            j += 1
        t, c = np.concatenate(t_parts), np.concatenate(c_parts)
        keep = t < end
        return [t[keep], *self._choose(segment % len(self.edge_sets), c[keep])]

    def _draw_segments(self) -> None:
        """Draw the events of the next ``_segments`` segments into the buffer."""
        S, B, T = self._segments, self._draws, self.switch_every
        seg = np.arange(self._next_segment, self._next_segment + S)
        self._next_segment += S
        keys = rng.node_keys(self.seed, "segment", torch.from_numpy(seg), 0)
        u = rng.uniform(keys, 2 * B, torch.float64).numpy()
        end = (seg + 1) * T
        times = (seg * T)[:, None] + np.cumsum(-np.log1p(-u[:, :B]) / self.total_rate, axis=1)
        keep = times < end[:, None]
        graph = seg % len(self.edge_sets)
        kind = np.zeros(times.shape, dtype=np.int8)
        a = np.zeros(times.shape, dtype=np.int64)
        b = np.full(times.shape, -1, dtype=np.int64)
        for k in np.unique(graph):
            rows = np.flatnonzero(graph == k)
            kind[rows], a[rows], b[rows] = self._choose(int(k), u[rows, B:])
        parts: list[list[np.ndarray]] = [list(self._buffer)] if self._buffer else []
        long_rows = np.flatnonzero(keep[:, -1])  # every draw inside: the segment goes on
        lo = 0
        for r in [*long_rows.tolist(), S]:
            if r > lo:  # ordinary segments lo..r-1, flattened in time order
                m = keep[lo:r]
                parts.append([times[lo:r][m], kind[lo:r][m], a[lo:r][m], b[lo:r][m]])
            if r < S:
                parts.append(self._long_segment(int(seg[r]), times[r], u[r]))
            lo = r + 1
        self._buffer = [np.concatenate([p[i] for p in parts]) for i in range(4)]

    def next_block(self) -> EventBlock:
        """The next ``block`` events in time order (a block may span graph switches)."""
        while not self._buffer or len(self._buffer[0]) < self.block:
            self._draw_segments()
        time, kind, a, b = (q[: self.block] for q in self._buffer)
        self._buffer = [q[self.block :] for q in self._buffer]
        out = EventBlock(time, kind, a, b, self._count)
        self._count += len(time)
        return out

    def state(self) -> dict[str, Any]:
        """Where the stream stands (segments drawn, unserved events): see :meth:`set_state`."""
        return {
            "next_segment": self._next_segment,
            "buffer": [q.copy() for q in self._buffer],
            "count": self._count,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state` of a stream built with the same arguments."""
        self._next_segment = int(state["next_segment"])
        self._buffer = [np.array(q) for q in state["buffer"]]
        self._count = int(state["count"])


def edge_rate_attribute(topo: Any, algorithm: str) -> np.ndarray | None:
    """Relative gossip rates of the undirected edges from the graph's ``rate`` attribute.

    None when no edge sets it. Every edge must then carry a positive ``rate``.
    """
    given = topo.edge_attrs.get("rate")
    if given is None:
        return None
    e = np.asarray(topo.edges)
    rate = given[e[:, 0] < e[:, 1]]
    if np.isnan(rate).any() or (rate <= 0).any():
        raise ConfigError(
            f"topology: {algorithm} reads per-edge gossip rates from the edge attribute "
            "'rate', which must be set and > 0 on every edge (or on none, for uniform rates)"
        )
    return rate


def refuse_edge_rates(topo: Any, algorithm: str) -> None:
    """Methods whose constants assume uniform edge clocks refuse a ``rate`` attribute."""
    if topo.edge_attrs.get("rate") is not None:
        raise ConfigError(
            f"topology: {algorithm} prescribes its own uniform edge rates (its constants "
            "assume them), but the graph sets a 'rate' edge attribute; remove it"
        )

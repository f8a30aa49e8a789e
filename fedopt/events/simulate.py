"""Drive node state with a Poisson event stream, batch by disjoint batch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from fedopt.events.batching import disjoint_batches, level_batches
from fedopt.events.dadao import DadaoNodes
from fedopt.events.stream import EventBlock, PoissonEventStream


@dataclass
class EventCounts:
    """Events applied so far and the trajectory of a monitored error."""

    time: float = 0.0
    gradients: int = 0
    communications: int = 0
    history: list[tuple[float, int, int, float]] = field(default_factory=list)


@dataclass
class BlockResult:
    """What one block of events did: counts, and the gossip pairs (for metering)."""

    gradients: int
    communications: int
    edge_i: torch.Tensor
    edge_j: torch.Tensor
    end_time: float


def apply_block(
    nodes: DadaoNodes,
    blk: EventBlock,
    keep: int,
    grad: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
) -> BlockResult:
    """Apply the first ``keep`` events of ``blk`` exactly, level by level.

    ``grad(nodes, x, event_ids)`` returns the local gradients; ``event_ids`` are the
    global indices of the gradient events (to key minibatches per event).
    """
    a_all, b_all = blk.a[:keep], blk.b[:keep]
    pairs_i, pairs_j = [], []
    grads = comms = 0
    for idx in level_batches(a_all, b_all, nodes.S.shape[0]):
        times = torch.from_numpy(blk.time[idx])
        kind = blk.kind[idx]
        a = torch.from_numpy(blk.a[idx])
        b = torch.from_numpy(blk.b[idx])
        gm, cm = torch.from_numpy(kind == 0), torch.from_numpy(kind == 1)
        ids = torch.from_numpy(idx[kind == 0] + blk.first)

        def grad_at(rows: torch.Tensor, X: torch.Tensor, ids: torch.Tensor = ids) -> torch.Tensor:
            return grad(rows, X, ids)

        nodes.apply(a[gm], times[gm], a[cm], b[cm], times[cm], grad_at)
        grads += int(gm.sum())
        comms += int(cm.sum())
        pairs_i.append(a[cm])
        pairs_j.append(b[cm])
    empty = torch.zeros(0, dtype=torch.int64)
    return BlockResult(
        grads,
        comms,
        torch.cat(pairs_i) if pairs_i else empty,
        torch.cat(pairs_j) if pairs_j else empty,
        float(blk.time[keep - 1]) if keep else 0.0,
    )


def run_dadao(
    nodes: DadaoNodes,
    stream: PoissonEventStream,
    grad: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    error: Callable[[torch.Tensor], float],
    *,
    until_time: float | None = None,
    until_error: float | None = None,
    max_events: int = 10_000_000,
    check_every: int = 32,
    level_schedule: bool = False,
) -> EventCounts:
    """Apply events in time order until a stop rule holds.

    ``grad(nodes, x)`` returns the local gradients at ``x`` for those nodes; ``error``
    maps the primal iterates ``[n, dim]`` to the monitored error, recorded (with time
    and event counts) about every ``check_every`` events and at the end.

    ``level_schedule`` applies each block of events by dependency level (large exact
    batches, fastest); the state is then consistent only at block ends, where the error
    is checked. Otherwise events go in greedy time-ordered disjoint runs, checked every
    ``check_every`` events (fine-grained histories, as the paper's plots need).
    """
    out = EventCounts()
    seen = 0
    next_check = 0
    while seen < max_events:
        blk = stream.next_block()
        if until_time is not None and blk.time[0] > until_time:
            break
        keep = len(blk.time)
        if until_time is not None:
            keep = int(np.searchsorted(blk.time, until_time, side="right"))
        # exact: levels of pairwise-disjoint events, each node's events in time order
        batches = (
            level_batches(blk.a[:keep], blk.b[:keep], stream.n)
            if level_schedule
            else [
                np.arange(s, e) for s, e in disjoint_batches(blk.a[:keep], blk.b[:keep], stream.n)
            ]
        )
        for idx in batches:
            times = torch.from_numpy(blk.time[idx])
            kind = blk.kind[idx]
            a = torch.from_numpy(blk.a[idx])
            b = torch.from_numpy(blk.b[idx])
            g, c = kind == 0, kind == 1
            gm, cm = torch.from_numpy(g), torch.from_numpy(c)
            nodes.apply(a[gm], times[gm], a[cm], b[cm], times[cm], grad)
            out.gradients += int(g.sum())
            out.communications += int(c.sum())
            out.time = max(out.time, float(times.max()))
            seen += len(idx)
            if seen >= next_check and not level_schedule:
                err = error(nodes.x)
                out.history.append((out.time, out.gradients, out.communications, err))
                next_check = seen + check_every
                if until_error is not None and err <= until_error:
                    return out
        if level_schedule:  # the state is exact at block ends: check there
            err = error(nodes.x)
            out.time = float(blk.time[keep - 1])
            out.history.append((out.time, out.gradients, out.communications, err))
            if until_error is not None and err <= until_error:
                return out
        if keep < len(blk.time):
            break
    out.history.append((out.time, out.gradients, out.communications, error(nodes.x)))
    return out


def edge_arrays(edges: np.ndarray) -> np.ndarray:
    """Undirected edges ``(i < j)`` from a directed edge list with both directions."""
    e = np.asarray(edges)
    return e[e[:, 0] < e[:, 1]]

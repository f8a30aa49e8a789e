"""One worker of the event schedule: a shard of event-algorithm nodes and the shared stream.

Every worker builds the same event stream from the seed (blocks are keyed by
``(seed, "events", block)``), so no event list ever travels. Each block is applied
level by level (:class:`~fedopt.events.simulate.SortedBlock`: events of a level touch
pairwise distinct nodes, and each node meets its events in time order):

* a worker hosting every node applies whole blocks with
  :func:`~fedopt.events.simulate.apply_block` (the fast path of the local engine);
* a worker hosting a shard applies, in each level, the gradient events of its nodes and
  the edge events with at least one hosted endpoint. For an edge whose other endpoint
  lives on another worker, the two workers first swap the current state rows of their
  endpoints (one transport message per worker pair and level); both then compute the
  edge event with the same inputs and the same operations, and each keeps its own
  node's result. So every node gets the bits it gets on one worker, for any algorithm
  whose node state is ``S [n, slots, dim]`` with last-event times ``t [n]``.

Metering is logical and independent of placement: an edge event ``(i, j)`` sends two
messages of ``dim`` float64 (``i -> j`` and ``j -> i``; kind ``EventSetup.message``, such
as ``y+z`` for DADAO), each metered by the worker
hosting its receiver. Each edge event is counted (as a communication, and for its
dual-gradient computations if the algorithm declares some) by the worker hosting ``i``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from fedopt.algorithms import ALGORITHMS
from fedopt.algorithms.base import Constant, EventSetup, plain_constants
from fedopt.engine.plan import Plan
from fedopt.events import PoissonEventStream
from fedopt.events.batching import dependency_levels
from fedopt.events.simulate import SortedBlock, apply_block, edge_arrays
from fedopt.events.stream import EventBlock, SwitchingEventStream
from fedopt.network.meter import Meter
from fedopt.problems import PROBLEMS
from fedopt.problems.base import Oracle


class Transport(Protocol):
    """Keyed point-to-point payloads between workers (see ``ray_engine.mailbox``)."""

    def send(self, dst_rank: int, key: Any, payload: Any) -> None: ...

    def wait(self, key: Any, sources: list[int], what: str) -> dict[int, Any]: ...


@dataclass
class StepResult:
    """What one block did on one worker."""

    events: int  # events of the block that were applied (the same on every worker)
    cut: bool  # the block was cut by ``stop.sim_time_s``
    end_time: float  # time of the last applied event
    gradients: int  # gradient computations counted by this worker
    communications: int  # edge events counted by this worker


def build_event_oracle(plan: Plan) -> Oracle:
    """The oracle of every node (event problems are small; each worker holds all data)."""
    cfg = plan.config
    n = plan.topology.n
    return PROBLEMS.get(cfg.problem.name).build(
        cfg.problem,
        seed=cfg.seed,
        data_ranks=torch.arange(n),
        num_data_nodes=n,
        device=torch.device("cpu"),
    )


def build_stream(plan: Plan, setup: EventSetup) -> PoissonEventStream | SwitchingEventStream:
    """The seeded event stream of ``plan`` (switching graphs for time-varying setups)."""
    cfg, topo = plan.config, plan.topology
    if setup.edge_sets is not None and setup.switch_every is not None:
        return SwitchingEventStream(
            topo.n,
            setup.edge_sets,
            setup.node_rate,
            setup.edge_rate_total,
            setup.switch_every,
            cfg.seed,
            cfg.engine.event_block,
        )
    if topo.is_time_varying:  # refused at compile time by the algorithm's check_plan
        raise RuntimeError(
            f"{cfg.algorithm.name!r} gave no graph sequence for the time-varying topology "
            f"{topo.name!r}; its check_plan must refuse time-varying topologies"
        )
    edges = edge_arrays(topo.edges)
    rates: float | np.ndarray = setup.edge_rate_total / len(edges)
    if setup.edge_weights is not None:  # per-edge clocks, the same total rate
        w = np.asarray(setup.edge_weights, dtype=np.float64)
        rates = setup.edge_rate_total * w / w.sum()
    return PoissonEventStream(
        topo.n, edges, setup.node_rate, rates, cfg.seed, cfg.engine.event_block
    )


class EventWorker:
    """Hosts ``hosted`` nodes of an event-schedule algorithm and applies the stream to them.

    Parameters
    ----------
    plan
        The compiled experiment.
    hosted
        Sorted global ids of the hosted nodes.
    owner
        ``[n]`` rank of the worker hosting each node (None: this worker hosts all).
    rank
        This worker's index.
    transport
        Swaps state rows with other workers (None when hosting all nodes).
    meter_enabled
        False only to measure the metering overhead.
    """

    def __init__(
        self,
        plan: Plan,
        hosted: np.ndarray,
        owner: np.ndarray | None = None,
        rank: int = 0,
        transport: Transport | None = None,
        meter_enabled: bool = True,
    ) -> None:
        cfg, topo = plan.config, plan.topology
        self.plan = plan
        self.n = topo.n
        self.oracle = build_event_oracle(plan)
        self.setup = ALGORITHMS.get(cfg.algorithm.name).build_events(
            cfg.algorithm, plan, self.oracle
        )
        self.nodes = self.setup.nodes
        self.grad = self.setup.grad
        self.grads_per_edge = int(getattr(self.setup, "grads_per_edge_event", 0))
        self.stream = build_stream(plan, self.setup)
        self.hosted = np.array(hosted, dtype=np.int64)  # a writable copy
        self.whole = len(self.hosted) == self.n
        self.hosted_mask = torch.zeros(self.n, dtype=torch.bool)
        self.hosted_mask[torch.from_numpy(self.hosted)] = True
        self.owner = owner if owner is not None else np.zeros(self.n, dtype=np.int64)
        self.rank = rank
        self.transport = transport
        self.meter = Meter(len(topo.edges), cfg.network.header_bytes, enabled=meter_enabled)
        self.nbytes = self.meter.message_bytes(self.oracle.dim, torch.float64)
        self.blocks = 0
        self._pending: EventBlock | None = None  # the rest of a block cut at a time limit

    # -- one block ----------------------------------------------------------------
    def step(self, until_time: float | None) -> StepResult:
        """Apply the next block of events, cut at ``until_time`` when given.

        Events after the cut stay pending for the next call, so cutting at evaluation
        ticks does not change the stream (nor, since levels are exact, the bits).
        """
        blk = self._pending if self._pending is not None else self.stream.next_block()
        self._pending = None
        keep = len(blk.time)
        if until_time is not None:
            keep = int(np.searchsorted(blk.time, until_time, side="right"))
            if keep < len(blk.time):  # the events after the limit come next time
                self._pending = EventBlock(
                    blk.time[keep:], blk.kind[keep:], blk.a[keep:], blk.b[keep:], blk.first + keep
                )
        self.blocks += 1
        end = float(blk.time[keep - 1]) if keep else 0.0
        if self.whole:
            res = apply_block(self.nodes, blk, keep, self.grad)
            if len(res.edge_i):
                src = torch.cat([res.edge_i, res.edge_j]).numpy()
                dst = torch.cat([res.edge_j, res.edge_i]).numpy()
                self._meter(src, dst)
            grads = res.gradients + self.grads_per_edge * res.communications
            return StepResult(keep, keep < len(blk.time), end, grads, res.communications)
        levels = dependency_levels(blk.a[:keep], blk.b[:keep], self.n) - 1
        block = SortedBlock(blk, keep, levels)
        grads = comms = 0
        for level, span in enumerate(block.spans):
            g, c = self._apply_level(block, span, key=(self.blocks, level))
            grads += g
            comms += c
        return StepResult(keep, keep < len(blk.time), end, grads, comms)

    def _apply_level(
        self, block: SortedBlock, span: tuple[int, int, int], key: tuple[int, int]
    ) -> tuple[int, int]:
        """Apply the events of one level (``span`` of ``block``) that touch hosted nodes."""
        s, m, e = span
        hosted = self.hosted_mask
        ga, ea, eb = block.a[s:m], block.a[m:e], block.b[m:e]
        hg, ha, hb = hosted[ga], hosted[ea], hosted[eb]
        em = ha | hb
        cross = em & (ha != hb)
        if bool(cross.any()):
            self._swap_rows(ea[cross].numpy(), eb[cross].numpy(), ha[cross].numpy(), key)
        ids = block.ids[s:m][hg]

        def grad_at(rows: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
            return self.grad(rows, X, ids)

        times = block.time
        self.nodes.apply(ga[hg], times[s:m][hg], ea[em], eb[em], times[m:e][em], grad_at)
        if bool(em.any()):  # messages whose receiver is hosted here
            src = torch.cat([ea[hb], eb[ha]]).numpy()
            dst = torch.cat([eb[hb], ea[ha]]).numpy()
            self._meter(src, dst)
        mine = int(ha.sum())  # each edge event is counted by the worker hosting its i
        return int(hg.sum()) + self.grads_per_edge * mine, mine

    def _swap_rows(self, a: np.ndarray, b: np.ndarray, a_hosted: np.ndarray, key: Any) -> None:
        """Exchange the state rows of cross-worker edge endpoints with their owners."""
        if self.transport is None:
            raise RuntimeError("an edge crosses workers but this worker has no transport")
        mine = np.where(a_hosted, a, b)
        theirs = np.where(a_hosted, b, a)
        peer = self.owner[theirs]
        ranks = sorted(set(peer.tolist()))
        S, t = self.nodes.S, self.nodes.t
        for p in ranks:
            rows = torch.from_numpy(np.unique(mine[peer == p]))
            self.transport.send(p, key, (rows, S[rows].clone(), t[rows].clone()))
        for rows, s_rows, t_rows in self.transport.wait(key, ranks, "event states").values():
            S[rows] = s_rows
            t[rows] = t_rows

    def _meter(self, src: np.ndarray, dst: np.ndarray) -> None:
        eids = torch.from_numpy(self.plan.topology.edge_index(src, dst))
        self.meter.record(eids, self.nbytes, self.setup.message)

    # -- checkpoints -----------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything that evolves: node states ``S`` and times ``t``, the stream, the
        pending rest of a cut block, the block count and the meter.

        The stream is counter-based, so restoring this and stepping on reproduces the
        run bit for bit.
        """
        m = self.meter
        return {
            "hosted": self.hosted.copy(),
            "S": self.nodes.S.clone(),
            "t": self.nodes.t.clone(),
            "stream": self.stream.state(),
            "pending": self._pending,
            "blocks": self.blocks,
            "edge_messages": m.edge_messages.clone(),
            "edge_bytes": m.edge_bytes.clone(),
            "totals": copy.deepcopy(m.totals),
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Load a :meth:`snapshot` taken by a worker hosting the same nodes."""
        if not np.array_equal(snap["hosted"], self.hosted):
            raise ValueError("restore: the snapshot was taken by a worker hosting other nodes")
        self.nodes.S.copy_(snap["S"])
        self.nodes.t.copy_(snap["t"])
        self.stream.set_state(snap["stream"])
        self._pending = snap["pending"]
        self.blocks = int(snap["blocks"])
        m = self.meter
        m.edge_messages.copy_(snap["edge_messages"])
        m.edge_bytes.copy_(snap["edge_bytes"])
        m.totals = copy.deepcopy(snap["totals"])

    # -- reads ---------------------------------------------------------------------
    def hosted_x(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, x rows)`` of the hosted nodes (their current primal iterates)."""
        ids = torch.from_numpy(self.hosted)
        x = self.nodes.x
        return ids, (x if self.whole else x[ids]).clone()

    def derived_constants(self) -> dict[str, Constant]:
        """Constants the algorithm derived (rates, mu, L, ...): ``EventSetup.facts``."""
        return plain_constants(self.setup.facts)


GradFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

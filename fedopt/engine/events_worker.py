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

Data are local: a worker builds the oracle of its hosted nodes only, plus, for an
algorithm whose edge events call the oracle at both endpoints
(``EventAlgorithm.edge_oracles``, the continuized method), its nodes' graph neighbours
(:func:`oracle_nodes`). Facts about every node (worst-case ``mu`` and ``L``, graph
constants) come from ``plan.facts``, computed once at compile time. What every worker
does hold for all ``n`` nodes is the node-state table ``S [n, slots, dim]`` (float64,
indexed by global id; rows of other workers' nodes are the copies swapped in before
each cross-worker edge event) and the event stream of the current block (at most
``engine.event_block`` events, which every worker needs to cut the same dependency
levels). Evaluation adds per-worker partial sums (:meth:`EventWorker.evaluate`,
:meth:`EventWorker.optimum_stats`) in data-rank order, as the round schedule does.

Work is counted by kind in the worker's :class:`~fedopt.network.counters.Counters`:
gradient events and the declared gradients of edge events as ``gradients``, anything
else the algorithm charges through ``EventContext.count``; with the algorithm's metrics
(``EventSetup.metrics``) and ledgers (``EventContext.ledgers``) they reach the records
through :meth:`EventWorker.accounts`, and are part of the worker's snapshot.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from fedopt.algorithms import ALGORITHMS
from fedopt.algorithms.base import Constant, EventContext, EventSetup, plain_constants
from fedopt.engine.plan import Plan
from fedopt.engine.records import Accounts
from fedopt.engine.worker import EvalPartial
from fedopt.events import PoissonEventStream
from fedopt.events.batching import dependency_levels
from fedopt.events.node_oracle import NodeOracle
from fedopt.events.simulate import SortedBlock, apply_block, edge_arrays
from fedopt.events.stream import EventBlock, SwitchingEventStream
from fedopt.network.counters import Counters
from fedopt.network.meter import Meter
from fedopt.problems import PROBLEMS
from fedopt.problems.base import OptimumStats, Oracle


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
    gradients: int  # gradients counted by this worker in the block (its counters' increase)
    communications: int  # edge events counted by this worker


def oracle_nodes(plan: Plan, hosted: np.ndarray, edge_oracles: bool) -> np.ndarray:
    """Sorted ids of the nodes whose oracle a worker hosting ``hosted`` builds.

    The hosted nodes; with ``edge_oracles`` also every graph neighbour of one of them
    (over every graph of a time-varying topology: ``topology.edges`` is their union),
    since such a worker computes each edge event touching its nodes at both endpoints.
    """
    n = plan.topology.n
    if len(hosted) == n or not edge_oracles:
        return np.asarray(hosted, dtype=np.int64)
    edges = plan.topology.edges
    near = edges[np.isin(edges[:, 0], hosted), 1]
    return np.union1d(hosted, near).astype(np.int64)


def build_node_oracle(plan: Plan, nodes: np.ndarray) -> NodeOracle:
    """The oracle of the data nodes ``nodes`` (their data rank is their id), on the CPU."""
    cfg = plan.config
    ids = torch.from_numpy(np.asarray(nodes, dtype=np.int64))
    oracle: Oracle = PROBLEMS.get(cfg.problem.name).build(
        cfg.problem,
        seed=cfg.seed,
        data_ranks=ids,
        num_data_nodes=plan.topology.n,
        device=torch.device("cpu"),
    )
    return NodeOracle(oracle, ids, plan.topology.n)


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
        self.hosted = np.array(hosted, dtype=np.int64)  # a writable copy
        self.whole = len(self.hosted) == self.n
        algo = ALGORITHMS.get(cfg.algorithm.name)
        if algo.evaluation != "average_model":
            raise TypeError(
                f"{cfg.algorithm.name}: evaluation = {algo.evaluation!r}, but the event "
                "schedule evaluates the average model only; use 'average_model'"
            )
        self.node_oracle = build_node_oracle(
            plan, oracle_nodes(plan, self.hosted, bool(getattr(algo, "edge_oracles", False)))
        )
        self.oracle = self.node_oracle.oracle
        self.counters = Counters()
        self.ctx = EventContext(
            hosted=torch.from_numpy(self.hosted.copy()),
            oracle=self.node_oracle,
            num_nodes=self.n,
            seed=cfg.seed,
            facts=plan.facts,
            counters=self.counters,
        )
        self.setup = algo.build_events(cfg.algorithm, plan, self.ctx)
        self.nodes = self.setup.nodes
        self.grad = self.setup.grad
        self.grads_per_edge = int(getattr(self.setup, "grads_per_edge_event", 0))
        if self.grads_per_edge and not getattr(algo, "edge_oracles", False):
            raise TypeError(
                f"{cfg.algorithm.name}: its edge events compute {self.grads_per_edge} "
                "gradients (EventSetup.grads_per_edge_event), so a worker needs its "
                "neighbours' oracles; set edge_oracles = True on the algorithm class"
            )
        self.stream = build_stream(plan, self.setup)
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
        before = self.counters["gradients"]
        if self.whole:
            res = apply_block(self.nodes, blk, keep, self.grad)
            if len(res.edge_i):
                src = torch.cat([res.edge_i, res.edge_j]).numpy()
                dst = torch.cat([res.edge_j, res.edge_i]).numpy()
                self._meter(src, dst)
            grads, comms = (
                res.gradients + self.grads_per_edge * res.communications,
                res.communications,
            )
        else:
            levels = dependency_levels(blk.a[:keep], blk.b[:keep], self.n) - 1
            block = SortedBlock(blk, keep, levels)
            grads = comms = 0
            for level, span in enumerate(block.spans):
                g, c = self._apply_level(block, span, key=(self.blocks, level))
                grads += g
                comms += c
        self.counters.add("gradients", grads)
        grads = self.counters["gradients"] - before  # with what the algorithm charged
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
            "counters": self.counters.as_dict(),
            "ledgers": copy.deepcopy(self.ctx.ledgers),
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
        self.counters = self.ctx.counters = Counters(snap.get("counters", {}))
        self.ctx.ledgers.clear()
        self.ctx.ledgers.update(copy.deepcopy(snap.get("ledgers", {})))

    # -- reads ---------------------------------------------------------------------
    def hosted_x(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, x rows)`` of the hosted nodes (their current primal iterates)."""
        ids = torch.from_numpy(self.hosted)
        if self.whole:
            return ids, self.nodes.x.clone()
        rows = getattr(self.nodes, "x_rows", None)
        return ids, (rows(ids) if rows is not None else self.nodes.x[ids]).clone()

    def evaluate(self, xbar: torch.Tensor) -> EvalPartial:
        """``f_i(x_bar)`` and ``p_i`` of the hosted nodes, by data rank (= node id).

        The driver sums every worker's values in rank order: ``loss = sum_i p_i f_i``
        (and, with ``eval.grad_norm``, the terms ``p_i grad f_i(x_bar)``).
        """
        o = self.oracle
        x = xbar.to(o.dtype)
        ids = torch.from_numpy(self.hosted)
        if self.whole:
            rows, weights = torch.arange(self.n), o.weights
        else:
            rows = self.node_oracle.rows(ids)
            weights = o.weights[rows]
        X = x.unsqueeze(0).expand(len(rows), -1)
        values = o.value(X, rows)
        grads = None
        if self.plan.config.eval.grad_norm:  # p_i grad f_i(x_bar), summed by the driver
            grads = o.full_grad(X, rows).to(torch.float64) * weights.to(torch.float64)[:, None]
        return EvalPartial(ids, values.to(torch.float64), weights, 0.0, 0.0, {}, grads)

    def optimum_stats(self) -> OptimumStats | None:
        """The closed-form optimum's statistics of the hosted nodes (None if unknown)."""
        stats = self.oracle.optimum_stats()
        if stats is None or self.whole or len(self.node_oracle.nodes) == len(self.hosted):
            return stats
        keep = torch.isin(stats.ranks, torch.from_numpy(self.hosted))
        return OptimumStats(stats.ranks[keep], stats.H[keep], stats.g[keep])

    def accounts(self) -> Accounts:
        """Counters, ledgers (copies) and per-node metrics (``EventSetup.metrics``)."""
        ids = torch.from_numpy(self.hosted.copy())
        rows: dict[str, torch.Tensor] = {}
        if self.setup.metrics is not None:
            for name, values in self.setup.metrics(ids).items():
                v = torch.as_tensor(values).detach().to("cpu", torch.float64)
                if v.shape != (len(ids),):
                    raise ValueError(
                        f"{self.plan.config.algorithm.name}: metric {name!r} has shape "
                        f"{tuple(v.shape)}; give one value per hosted node, shape ({len(ids)},)"
                    )
                rows[name] = v
        return Accounts(
            first_node=int(ids[0]) if len(ids) else -1,
            counters=Counters(self.counters.as_dict()),
            ledgers=copy.deepcopy(self.ctx.ledgers),
            node_ids=ids,
            metrics=rows,
        )

    def derived_constants(self) -> dict[str, Constant]:
        """Constants the algorithm derived (rates, mu, L, ...): ``EventSetup.facts``."""
        return plain_constants(self.setup.facts)


GradFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

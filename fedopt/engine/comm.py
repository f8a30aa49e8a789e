"""The messaging seam: every byte that crosses nodes goes through a :class:`Comm`.

A ``Comm`` offers the three collective patterns the algorithms need, each metered
message by message and each advancing the receivers' simulated clocks by the link
model's delivery times:

* :meth:`Comm.mix`: gossip, ``Y_i = sum_j W_t[i, j] X_j``; node ``j`` sends ``X_j`` to
  every ``i`` with ``W_t[i, j] != 0``.
* :meth:`Comm.broadcast`: one node sends the same payload to a set of nodes.
* :meth:`Comm.gather_sum`: a set of nodes send payloads to one node, which uses their
  weighted sum. The sum is formed in the canonical order of :mod:`fedopt.engine.reduce`
  (the transport carries block sums); the meter counts one message per sender.

Time: each node has a clock (float64 seconds). Local work adds compute time
(:meth:`Comm.compute`); a message sent at the sender's clock arrives after the link
delay, and a receiver's clock becomes the max of its clock and its last arrival.

:class:`LocalComm` is the in-process implementation (all nodes on one worker); a
distributed engine provides its own ``Comm`` with the same methods, so algorithms do
not change.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch

from fedopt.engine.mixer import Mixer, degree_cap
from fedopt.engine.reduce import BlockPartials, block_partials, combine_partials
from fedopt.network.compute_time import ComputeTimeModel
from fedopt.network.counters import Counters
from fedopt.network.faults import FaultModel
from fedopt.network.link import LinkModel
from fedopt.network.meter import Meter
from fedopt.topology.base import TopologyPlan


class Comm(ABC):
    """Metered, timed messaging for the nodes hosted on one worker.

    Attributes
    ----------
    hosted
        ``[k]`` int64 sorted global ids of the hosted nodes.
    clock
        ``[k]`` float64 simulated time of each hosted node.
    meter
        Message counters of the messages this worker meters.
    link, compute_model
        Link and compute-time models.
    counters
        Work of the hosted nodes counted by kind (:meth:`compute` charges it).
    exchange
        Number of exchanges so far; keys the link-loss draws, so every worker must
        call the collectives in the same order (they run the same algorithm code).
    """

    hosted: torch.Tensor
    topology: TopologyPlan
    clock: torch.Tensor
    meter: Meter
    link: LinkModel
    compute_model: ComputeTimeModel
    exchange: int = 0
    block: int = 1024
    faults: FaultModel | None = None
    missed: torch.Tensor | None = None  # nodes that missed a broadcast this round
    round_start: float = 0.0  # simulated time at which the current round started
    counters: Counters  # work counted by kind (set by the worker; see Comm.compute)

    @abstractmethod
    def mix(
        self, X: torch.Tensor, t: int, kind: str = "model", matrix: sp.spmatrix | None = None
    ) -> torch.Tensor:
        """Gossip step ``W_t X`` for the hosted rows (``X``: ``[k, dim]``).

        ``matrix`` replaces ``W_t`` by another ``n x n`` operator supported on the
        graph's edges plus the diagonal (such as a scaled Laplacian); node ``j`` sends
        ``X_j`` to every ``i`` with ``matrix[i, j] != 0``. Keep the object alive between
        calls: compiled gather plans are cached by its identity.
        """

    @abstractmethod
    def broadcast(
        self, value: torch.Tensor | None, src: int, dst: torch.Tensor, kind: str
    ) -> torch.Tensor:
        """Send ``value`` from global node ``src`` to the hosted nodes ``dst`` (global ids).

        ``value`` is given on the worker hosting ``src`` (None elsewhere); every worker
        gets it back.
        """

    @abstractmethod
    def gather_sum(
        self,
        rows: torch.Tensor,
        weights: torch.Tensor,
        senders: torch.Tensor,
        positions: torch.Tensor,
        total: int,
        dst: int,
        kind: str,
        numel: int,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Deliver ``(sum_i w_i rows_i, sum_i w_i)`` over every sender to node ``dst``.

        ``rows`` (``[m, dim]``), ``weights`` (``[m]``) and ``senders`` (global ids,
        ``[m]``) describe this worker's senders; ``positions`` (sorted, ``[m]``) are
        their indices among all ``total`` senders of every worker, which fix the
        canonical summation order. Each sender sends one message of ``numel`` elements.
        Returns the sums on the worker hosting ``dst``, None elsewhere.
        """

    def begin_round(self, t: int) -> None:
        """Start round ``t``: fix the fault schedule's state for it (clocks are at the barrier)."""
        if self.faults is not None:  # time windows use the round's (global) start time
            self.faults.begin_round(t, self.round_start)
            self.missed = torch.zeros(self.topology.n, dtype=torch.bool)

    @abstractmethod
    def gather(
        self, rows: torch.Tensor, senders: torch.Tensor, dst: int, kind: str
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Deliver each sender's row to node ``dst`` (one message each, metered).

        ``rows`` (``[m, d]``) are this worker's senders' rows (global ids ``senders``,
        sorted). Returns ``(rows, sender ids)`` of every delivered message, sorted by
        sender id, on the worker hosting ``dst``; None elsewhere. Under the fault schedule
        lost and late (partial receipt) messages are left out.
        """

    @abstractmethod
    def all_gather(
        self, rows: torch.Tensor, senders: torch.Tensor, everyone: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every worker gets the rows of every sender: ``(rows [len(everyone), d], clocks)``.

        ``rows`` are this worker's senders' rows (global ids ``senders``, sorted);
        ``everyone`` (sorted) lists the senders of all workers, which fixes the row order
        of the result. Nothing is metered here: the algorithm meters the logical
        messages it models (:meth:`meter_messages`), since who uses what is its business.
        """

    def meter_messages(
        self,
        src: torch.Tensor,
        dst: torch.Tensor,
        send_times: torch.Tensor,
        numel: int,
        dtype: torch.dtype,
        kind: str,
        advance_clock: bool = True,
    ) -> None:
        """Meter messages ``src -> dst`` (``dst`` hosted here) sent at ``send_times``.

        With ``advance_clock`` the receivers' clocks move to their latest arrival (a
        message the receiver waits for); otherwise only bytes and counts are recorded.
        """
        if len(dst) == 0:
            return
        eids = self.edge_ids(src, dst)
        nbytes = self.meter.message_bytes(numel, dtype)
        local = self.local_index(dst) if advance_clock else torch.zeros(0, dtype=torch.int64)
        self._deliver(send_times, local, eids, nbytes, kind)

    def compute(
        self, local_rows: torch.Tensor, steps: int, t: int, kind: str = "gradients"
    ) -> None:
        """Charge ``steps`` units of work of ``kind`` to each hosted node in ``local_rows``.

        Each node-unit is counted in :attr:`counters` (``<kind>_total``; by default one
        gradient per node-step, ``gradients_total``) and costs ``compute.cost_s[kind]``
        seconds of the node's clock (:mod:`fedopt.network.compute_time`). Nodes that are
        down (fault schedule) are skipped: a crashed node computes nothing.
        """
        if self.faults is not None and len(local_rows):  # crashed nodes compute nothing
            local_rows = local_rows[~self.faults.down[self.hosted[local_rows]]]
        if steps > 0 and len(local_rows):
            seconds = self.compute_model.seconds(self.hosted[local_rows], steps, t, kind)
            self.clock.index_add_(0, local_rows, seconds)
            self.counters.add(kind, steps * len(local_rows))

    def barrier(self, time: float) -> None:
        """End of a synchronous round: every hosted clock moves to ``time``."""
        self.clock.fill_(time)

    def partials(
        self, rows: torch.Tensor, weights: torch.Tensor, positions: torch.Tensor, total: int
    ) -> tuple[BlockPartials, BlockPartials]:
        """This worker's canonical partials of ``sum w_i rows_i`` and of ``sum w_i``."""
        w = weights.to(rows.dtype)
        return (
            block_partials(rows, positions, total, w, self.block),
            block_partials(w.unsqueeze(1), positions, total, None, self.block),
        )

    @staticmethod
    def combine(
        parts: list[tuple[BlockPartials, BlockPartials]], like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Merge every worker's partials into ``(weighted sum, weight total)``."""
        return (
            combine_partials([p[0] for p in parts], like[0] if like.ndim == 2 else like),
            combine_partials([p[1] for p in parts], like.new_zeros(1)),
        )

    def edge_ids(self, src: torch.Tensor | int, dst: torch.Tensor | int) -> torch.Tensor:
        """Edge ids of the messages ``src -> dst`` (either side may be one node id)."""
        s = torch.as_tensor(src, dtype=torch.int64)
        d = torch.as_tensor(dst, dtype=torch.int64)
        s, d = torch.broadcast_tensors(s.reshape(-1), d.reshape(-1))
        return torch.from_numpy(self.topology.edge_index(s.numpy(), d.numpy()))

    def local_index(self, ids: torch.Tensor) -> torch.Tensor:
        """Positions in ``hosted`` of hosted global ids."""
        return torch.searchsorted(self.hosted, ids.to(torch.int64))

    def _deliver(
        self,
        send_times: torch.Tensor,
        dst_local: torch.Tensor,
        eids: torch.Tensor,
        nbytes: int,
        kind: str,
        meter: bool = True,
    ) -> torch.Tensor:
        """Meter messages on edges ``eids`` sent at ``send_times``; return their arrivals.

        Receivers ``dst_local`` hosted here (may be empty when the receiver is remote)
        move their clocks to their latest arrival.
        """
        if len(eids) == 0:
            return torch.zeros(0, dtype=torch.float64)
        attempts = self.link.attempts(eids, self.exchange)
        if meter:
            self.meter.record(eids, nbytes, kind, attempts)
        arrival = send_times + self.link.delay(eids, nbytes, attempts)
        if len(dst_local):
            self.clock.scatter_reduce_(0, dst_local, arrival, reduce="amax", include_self=True)
        return arrival

    def _deliver_used(
        self,
        src: torch.Tensor,
        dst: torch.Tensor,
        send_times: torch.Tensor,
        dst_local: torch.Tensor | None,
        eids: torch.Tensor,
        nbytes: int,
        kind: str,
        first_k: bool = True,
        select: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_deliver`, with the fault schedule if any: ``(used mask, arrival times)``.

        Without faults every message is used. Under the fault schedule, crashed senders
        (and senders that missed this round's broadcast) send nothing.
        Sent messages are metered as ``kind`` when used, ``kind:late`` when they arrive
        after the receiver's first ``k`` (``first_k``; ``select(dst, arrival, src)`` picks
        them when this worker does not see all of a receiver's messages), ``kind:dropped``
        when lost.
        Receivers hosted here (``dst_local``) move their clocks to their latest *used*
        arrival.
        """
        if self.faults is None:
            local = dst_local if dst_local is not None else torch.zeros(0, dtype=torch.int64)
            arrival = self._deliver(send_times, local, eids, nbytes, kind)
            return torch.ones(len(eids), dtype=torch.bool), arrival
        f = self.faults
        attempts = self.link.attempts(eids, self.exchange)
        arrival = send_times + self.link.delay(eids, nbytes, attempts)
        sent = ~f.down[src]
        if self.missed is not None:
            sent &= ~self.missed[src]
        arrived = sent & f.delivered(src, dst, eids, self.exchange)
        used = arrived.clone()
        if first_k:
            pick = select or self.faults.first_k
            used[arrived] = pick(dst[arrived], arrival[arrived], src[arrived])
        for mask, suffix in ((used, ""), (arrived & ~used, ":late"), (sent & ~arrived, ":dropped")):
            if mask.any():
                a = attempts[mask] if attempts is not None else None
                self.meter.record(eids[mask], nbytes, kind + suffix, a)
        if dst_local is not None and used.any():
            self.clock.scatter_reduce_(
                0, dst_local[used], arrival[used], reduce="amax", include_self=True
            )
        return used, arrival

    def _note_missed(self, dst: torch.Tensor, used: torch.Tensor) -> None:
        """Receivers of a broadcast that did not get it cannot send an update this round."""
        if self.missed is not None and not bool(used.all()):
            self.missed[dst[~used]] = True

    @staticmethod
    def _missing_to_self(
        Y: torch.Tensor,
        X: torch.Tensor,
        src_rows: torch.Tensor,
        dst_rows: torch.Tensor,
        weights: torch.Tensor,
    ) -> None:
        """``Y_i -= W_ij (X_j - X_i)`` for every missing message ``j -> i``: the receiver
        uses its own value in place of the neighbour's, so ``W_ij`` moves to ``W_ii``."""
        if len(src_rows):
            diff = X.index_select(0, src_rows) - X.index_select(0, dst_rows)
            Y.index_add_(0, dst_rows, diff.mul_(weights.to(X.dtype).unsqueeze(1)), alpha=-1)


class LocalComm(Comm):
    """All nodes on one worker: payloads never move; metering and time are exact.

    Parameters
    ----------
    topology
        Compiled topology (edge list, ``W_t``).
    link
        Link model aligned with ``topology.edges``.
    compute_model
        Compute-time model.
    meter
        Where messages are counted.
    dtype, device
        Of the parameter tensors.
    """

    def __init__(
        self,
        topology: TopologyPlan,
        link: LinkModel,
        compute_model: ComputeTimeModel,
        meter: Meter,
        dtype: torch.dtype,
        device: torch.device,
        block: int = 1024,
    ) -> None:
        self.topology = topology
        self.block = block
        self.link = link
        self.compute_model = compute_model
        self.meter = meter
        self.dtype = dtype
        self.device = device
        self.hosted = torch.arange(topology.n)
        self.clock = torch.zeros(topology.n, dtype=torch.float64)
        self.exchange = 0
        self._mixers: dict[int, tuple[Mixer, torch.Tensor, ...]] = {}

    # -- gossip ---------------------------------------------------------------------
    def _mixer(
        self, t: int, matrix: sp.spmatrix | None = None
    ) -> tuple[Mixer, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        W = self.topology.mixing_at(t) if matrix is None else matrix
        key = id(W)
        cached = self._mixers.get(key)
        if cached is None:
            coo = W.tocoo()
            off = coo.row != coo.col
            dst, src = coo.row[off].astype(np.int64), coo.col[off].astype(np.int64)
            order = np.lexsort((dst, src))
            src, dst, w = src[order], dst[order], coo.data[off][order]
            eids = self.topology.edge_index(src, dst)
            cached = (
                Mixer(W, degree_cap(W), self.dtype, self.device),
                torch.from_numpy(src),
                torch.from_numpy(dst),
                torch.from_numpy(eids),
                torch.from_numpy(w.astype(np.float64)),
            )
            if not self.topology.is_time_varying or matrix is not None:
                self._mixers[key] = cached
        return cached

    def mix(
        self, X: torch.Tensor, t: int, kind: str = "model", matrix: sp.spmatrix | None = None
    ) -> torch.Tensor:
        mixer, src, dst, eids, w = self._mixer(t, matrix)
        self.exchange += 1
        nbytes = self.meter.message_bytes(X.shape[1], X.dtype)
        used, _ = self._deliver_used(src, dst, self.clock[src], dst, eids, nbytes, kind)
        Y = mixer(X)
        if not bool(used.all()):
            self._missing_to_self(Y, X, src[~used], dst[~used], w[~used])
        return Y

    def all_gather(
        self, rows: torch.Tensor, senders: torch.Tensor, everyone: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.exchange += 1
        return rows, self.clock[senders.to(torch.int64)]

    def gather(
        self, rows: torch.Tensor, senders: torch.Tensor, dst: int, kind: str
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        self.exchange += 1
        srcs = senders.to(torch.int64)
        dsts = torch.full_like(srcs, int(dst))
        eids = self.edge_ids(srcs, int(dst))
        nbytes = self.meter.message_bytes(rows.shape[1], rows.dtype)
        used, _ = self._deliver_used(srcs, dsts, self.clock[srcs], dsts, eids, nbytes, kind)
        if bool(used.all()):
            return rows, srcs
        return rows[used.to(rows.device)], srcs[used]

    # -- server patterns ------------------------------------------------------------
    def broadcast(
        self, value: torch.Tensor | None, src: int, dst: torch.Tensor, kind: str
    ) -> torch.Tensor:
        if value is None:
            raise ValueError("broadcast: the local engine hosts the source; value is required")
        self.exchange += 1
        dst = dst.to(torch.int64)
        eids = self.edge_ids(int(src), dst)
        nbytes = self.meter.message_bytes(value.numel(), value.dtype)
        srcs = torch.full_like(dst, int(src))
        used, _ = self._deliver_used(srcs, dst, self.clock[srcs], dst, eids, nbytes, kind, False)
        self._note_missed(dst, used)
        return value

    def gather_sum(
        self,
        rows: torch.Tensor,
        weights: torch.Tensor,
        senders: torch.Tensor,
        positions: torch.Tensor,
        total: int,
        dst: int,
        kind: str,
        numel: int,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        self.exchange += 1
        srcs = senders.to(torch.int64)
        eids = self.edge_ids(srcs, int(dst))
        nbytes = self.meter.message_bytes(numel, rows.dtype)
        dsts = torch.full_like(srcs, int(dst))
        used, _ = self._deliver_used(srcs, dsts, self.clock[srcs], dsts, eids, nbytes, kind)
        if not bool(used.all()):
            weights = weights * used.to(weights.dtype)
        parts = self.partials(rows, weights, positions, total)
        return self.combine([parts], rows)

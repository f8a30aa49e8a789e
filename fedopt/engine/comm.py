"""The messaging seam: every byte that crosses nodes goes through a :class:`Comm`.

A ``Comm`` offers the three collective patterns the algorithms need, each metered
message by message and each advancing the receivers' simulated clocks by the link
model's delivery times:

* :meth:`Comm.mix`: gossip, ``Y_i = sum_j W_t[i, j] X_j``; node ``j`` sends ``X_j`` to
  every ``i`` with ``W_t[i, j] != 0``.
* :meth:`Comm.neighbours`: the same messages, but each receiver gets its neighbours'
  rows with their sources and weights (:class:`Neighbourhood`) instead of their sum;
  ``mix`` is this pattern followed by the canonical weighted sum
  (:meth:`Neighbourhood.weighted_sum`).
* :meth:`Comm.broadcast`: one node sends the same payload to a set of nodes.
* :meth:`Comm.gather_sum`: a set of nodes send payloads to one node, which uses their
  weighted sum. The sum is formed in the canonical order of :mod:`fedopt.engine.reduce`
  (the transport carries block sums); the meter counts one message per sender.
* :meth:`Comm.gather` and :meth:`Comm.all_gather`: rows to one node, or to everyone.

Every collective takes ``payload`` (:class:`~fedopt.engine.payload.Payload`): the
logical message each sender sends, when it is not the moved tensor (``None``: one row
of it). Operators other than ``W_t`` are registered once
(:meth:`Comm.register_operator`) and passed by handle.

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
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from fedopt.engine.mixer import Mixer, degree_cap
from fedopt.engine.payload import Payload, resolve
from fedopt.engine.reduce import BlockPartials, block_partials, combine_partials
from fedopt.errors import ConfigError, EngineError
from fedopt.network.compute_time import ComputeTimeModel
from fedopt.network.counters import Counters
from fedopt.network.faults import FaultModel
from fedopt.network.link import LinkModel
from fedopt.network.meter import Meter
from fedopt.topology.base import TopologyPlan

Bytes = int | torch.Tensor  # wire bytes of every message, or one per message


@dataclass(frozen=True)
class OperatorHandle:
    """A gossip operator registered with :meth:`Comm.register_operator`.

    Attributes
    ----------
    index
        Registration number (the same on every worker: they register in the same order).
    name
        What the operator is, for messages.
    """

    index: int
    name: str


@dataclass
class Neighbourhood:
    """What each hosted receiver got in one neighbour exchange (:meth:`Comm.neighbours`).

    Messages are sorted by receiver, then by sender id (the canonical order); messages
    lost or ignored under the fault schedule are left out, and their weight moves to
    the receiver's own row (``self_weight``), as in :meth:`Comm.mix`.

    Attributes
    ----------
    rows
        ``[E, dim]`` the sender's row of each delivered message.
    src, dst
        ``[E]`` int64 global sender and receiver ids.
    weight
        ``[E]`` float64 operator entry ``W[dst, src]``.
    receivers
        ``[k]`` int64 global ids of the hosted receivers (``Comm.hosted``).
    self_weight
        ``[k]`` float64 weight of each receiver's own row: ``W[i, i]`` plus the weights
        of its missing messages.
    cap
        Degree cap of the full operator (keeps the reduction's kernel placement-free).
    has_self
        ``[k]`` bool: whether the receiver's own row takes part in the sum (a stored
        diagonal entry or a missing message).
    weight_dtype
        Dtype the weights are rounded to before the sum (the comm's parameter dtype,
        as in :meth:`Comm.mix`).
    """

    rows: torch.Tensor
    src: torch.Tensor
    dst: torch.Tensor
    weight: torch.Tensor
    receivers: torch.Tensor
    self_weight: torch.Tensor
    cap: int
    has_self: torch.Tensor
    weight_dtype: torch.dtype = torch.float64

    def weighted_sum(self, own: torch.Tensor) -> torch.Tensor:
        """``Y_i = w_ii own_i + sum_e weight_e rows_e`` over receiver ``i``'s messages.

        ``own`` is ``[k, dim]`` (the receivers' own rows). Terms are taken in global
        sender order with the receiver's own row at its id, by the kernel of
        :class:`~fedopt.engine.mixer.Mixer`: without faults the result equals
        :meth:`Comm.mix` bit for bit. Under faults ``mix`` subtracts each missing
        message's term after the full product while this sum folds its weight into
        ``w_ii``, so the two agree to rounding only (a few ulps).
        """
        k, m = len(self.receivers), len(self.src)
        dst_local = torch.searchsorted(self.receivers, self.dst).numpy()
        mine = np.flatnonzero(self.has_self.numpy())
        # slots: messages (rows k + e) and own rows (row r) of receivers that use them
        owner = np.concatenate([dst_local, mine])
        sender = np.concatenate([self.src.numpy(), self.receivers.numpy()[mine]])
        slot_rows = np.concatenate([k + np.arange(m), mine])
        weights = np.concatenate([self.weight.numpy(), self.self_weight.numpy()[mine]])
        order = np.lexsort((sender, owner))
        indptr = np.r_[0, np.cumsum(np.bincount(owner, minlength=k))]
        mixer = Mixer.from_slots(
            indptr, slot_rows[order], weights[order], self.cap, self.weight_dtype, own.device
        )
        return mixer(torch.cat([own, self.rows.to(own.device)]) if m else own)


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
    dtype: torch.dtype
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

    # -- operators -------------------------------------------------------------------
    def register_operator(self, matrix: sp.spmatrix, name: str = "operator") -> OperatorHandle:
        """Register an ``n x n`` gossip operator; pass the handle to :meth:`mix`.

        The operator must be supported on the graph's edges plus the diagonal (such as
        a scaled Laplacian): node ``j`` sends ``X_j`` to every ``i`` with
        ``matrix[i, j] != 0``. Every worker registers the same operators in the same
        order, so handles agree across workers.

        Raises
        ------
        ConfigError
            For a wrong shape or an entry off the graph's edges.
        """
        n = self.topology.n
        W = sp.csr_matrix(matrix)
        if W.shape != (n, n):
            raise ConfigError(
                f"{name}: the operator is {W.shape[0]} x {W.shape[1]}, but the topology has "
                f"n={n} nodes; give an n x n matrix"
            )
        coo = W.tocoo()
        off = coo.row != coo.col
        try:
            self.topology.edge_index(coo.col[off], coo.row[off])
        except ValueError:
            raise ConfigError(
                f"{name}: the operator has entries off the graph's edges; it may only be "
                "nonzero on edges and the diagonal"
            ) from None
        if not hasattr(self, "_operators"):
            self._operators: list[sp.csr_matrix] = []
        self._operators.append(W)
        return OperatorHandle(len(self._operators) - 1, name)

    def operator(self, t: int, op: OperatorHandle | None) -> tuple[sp.csr_matrix, object | None]:
        """``(matrix, cache key)`` of ``op``, or of ``W_t`` (key None if time-varying)."""
        if op is None:
            if self.topology.is_time_varying:
                return self.topology.mixing_at(t), None
            return self.topology.mixing_at(t), "W"
        ops = getattr(self, "_operators", [])
        if not isinstance(op, OperatorHandle) or not 0 <= op.index < len(ops):
            raise EngineError(f"mix: {op!r} is not an operator registered with this comm")
        return ops[op.index], op.index

    @abstractmethod
    def mix(
        self,
        X: torch.Tensor,
        t: int,
        kind: str = "model",
        op: OperatorHandle | None = None,
        payload: Payload | None = None,
    ) -> torch.Tensor:
        """Gossip step ``W_t X`` for the hosted rows (``X``: ``[k, dim]``).

        ``op`` replaces ``W_t`` by a registered operator (:meth:`register_operator`).
        Each message is metered with ``payload`` (default: one row of ``X``).
        """

    @abstractmethod
    def neighbours(
        self,
        X: torch.Tensor,
        t: int,
        kind: str = "model",
        op: OperatorHandle | None = None,
        payload: Payload | None = None,
    ) -> Neighbourhood:
        """The messages of :meth:`mix` (metered and timed the same), not their sum.

        Each hosted receiver gets the rows of its in-neighbours of ``W_t`` (or ``op``)
        with their sources and weights; lost messages are left out and their weight
        moves to the receiver's own row.
        """

    @abstractmethod
    def broadcast(
        self,
        value: torch.Tensor | None,
        src: int,
        dst: torch.Tensor,
        kind: str,
        payload: Payload | None = None,
    ) -> torch.Tensor:
        """Send ``value`` from global node ``src`` to the hosted nodes ``dst`` (global ids).

        ``value`` is given on the worker hosting ``src`` (None elsewhere); every worker
        gets it back. ``payload`` (default: all of ``value``) must be given alike on every
        worker.
        """

    @abstractmethod
    def gather_sum(
        self,
        rows: torch.Tensor,
        weights: torch.Tensor,
        senders: torch.Tensor,
        everyone: torch.Tensor,
        dst: int,
        kind: str,
        payload: Payload | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Deliver ``(sum_i w_i rows_i, sum_i w_i)`` over every sender to node ``dst``.

        ``rows`` (``[m, dim]``), ``weights`` (``[m]``) and ``senders`` (sorted global
        ids, ``[m]``) describe this worker's senders; ``everyone`` (sorted) lists the
        senders of every worker. The comm places each sender in ``everyone``, which fixes
        the canonical summation order. Each sender sends one message of ``payload``
        (default: one row). Returns the sums on the worker hosting ``dst``, None
        elsewhere.
        """

    @staticmethod
    def positions(senders: torch.Tensor, everyone: torch.Tensor) -> torch.Tensor:
        """Canonical positions of ``senders`` among ``everyone`` (both sorted global ids)."""
        every = everyone.to(torch.int64).cpu()
        s = senders.to(torch.int64).cpu()
        pos = torch.searchsorted(every, s)
        if len(s) and (
            int(pos.max()) >= len(every)
            or not bool((every[pos.clamp_max(len(every) - 1)] == s).all())
        ):
            raise EngineError("gather_sum: a sender is not listed in everyone; list every sender")
        return pos

    def begin_round(self, t: int) -> None:
        """Start round ``t``: fix the fault schedule's state for it (clocks are at the barrier)."""
        if self.faults is not None:  # time windows use the round's (global) start time
            self.faults.begin_round(t, self.round_start)
            self.missed = torch.zeros(self.topology.n, dtype=torch.bool)

    @abstractmethod
    def gather(
        self,
        rows: torch.Tensor,
        senders: torch.Tensor,
        dst: int,
        kind: str,
        payload: Payload | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Deliver each sender's row to node ``dst`` (one message each, metered).

        ``rows`` (``[m, d]``) are this worker's senders' rows (global ids ``senders``,
        sorted). Returns ``(rows, sender ids)`` of every delivered message, sorted by
        sender id, on the worker hosting ``dst``; None elsewhere. Under the fault schedule
        lost and late (partial receipt) messages are left out.
        """

    @abstractmethod
    def all_gather(
        self,
        rows: torch.Tensor,
        senders: torch.Tensor,
        everyone: torch.Tensor,
        kind: str | None = None,
        payload: Payload | None = None,
        uses: torch.Tensor | None = None,
        listeners: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every worker gets the rows of every sender: ``(rows [len(everyone), d], clocks)``.

        ``rows`` are this worker's senders' rows (global ids ``senders``, sorted);
        ``everyone`` (sorted) lists the senders of all workers, which fixes the row order
        of the result; ``clocks`` are the senders' clocks at the call (their send times).

        Without ``kind`` nothing is metered: the rows are the simulation's view (what an
        omniscient adversary reads, say). With ``kind`` every member of ``everyone``
        sends its row to every other member and to every listener, and each worker
        meters the messages its hosted nodes receive (:meth:`_meter_all_gather`):

        * ``uses`` (``[len(senders), len(everyone)]`` bool; default all) marks, for each
          receiver ``senders[r]``, the messages it waits for: metered as ``kind``, its
          clock moving to their latest arrival; the others arrive too late to be used
          (``kind:late``, metered, not waited for);
        * ``listeners`` (sorted global ids outside ``everyone``, the same on every worker)
          receive every message without waiting for it (``kind``; clocks unchanged).

        Each message is ``payload`` (default: one row of ``rows``). Link-loss draws are
        keyed by this call's exchange number.
        """

    def _meter_all_gather(
        self,
        receivers: torch.Tensor,
        everyone: torch.Tensor,
        clocks: torch.Tensor,
        kind: str,
        payload: Payload | None,
        uses: torch.Tensor | None,
        listeners: torch.Tensor | None,
        numel: int,
        dtype: torch.dtype,
    ) -> None:
        """Meter the messages of one :meth:`all_gather` that hosted nodes receive.

        In this order: the used messages of the receivers (``kind``, waited for), their
        late ones (``kind:late``), then every message to a hosted listener (``kind``, not
        waited for); each sent at its sender's clock ``clocks[s]``.
        """
        every = everyone.to(torch.int64).cpu()
        h, r = len(every), len(receivers)
        if r:
            src = every.unsqueeze(0).expand(r, -1)
            dst = receivers.to(torch.int64).cpu().unsqueeze(1).expand(-1, h)
            other = src != dst
            if uses is None:
                used = other
            else:
                used = uses.to(torch.bool).cpu()
                if used.shape != (r, h):
                    raise EngineError(
                        f"all_gather: uses has shape {tuple(used.shape)}; give one row per "
                        f"sender of this worker and one column per member: ({r}, {h})"
                    )
                used = used & other
            sent_at = clocks.unsqueeze(0).expand(r, -1)
            for mask, label, wait in ((used, kind, True), (other & ~used, f"{kind}:late", False)):
                self.meter_messages(
                    src[mask], dst[mask], sent_at[mask], numel, dtype, label, wait, payload
                )
        if listeners is not None and len(listeners):
            lis = listeners.to(torch.int64).cpu()
            b = lis[torch.isin(lis, self.hosted)]
            if len(b):
                src = every.repeat(len(b))
                dst = b.repeat_interleave(h)
                self.meter_messages(
                    src, dst, clocks.repeat(len(b)), numel, dtype, kind, False, payload
                )

    def meter_messages(
        self,
        src: torch.Tensor,
        dst: torch.Tensor,
        send_times: torch.Tensor,
        numel: int,
        dtype: torch.dtype,
        kind: str,
        advance_clock: bool = True,
        payload: Payload | None = None,
    ) -> None:
        """Meter messages ``src -> dst`` (``dst`` hosted here) sent at ``send_times``.

        With ``advance_clock`` the receivers' clocks move to their latest arrival (a
        message the receiver waits for); otherwise only bytes and counts are recorded.
        Each message is ``numel`` elements of ``dtype``, or ``payload`` when given.
        The collectives meter through this; algorithms do not call it.
        """
        if len(dst) == 0:
            return
        eids = self.edge_ids(src, dst)
        nbytes = self.wire_bytes(payload, src, numel, dtype)
        local = self.local_index(dst) if advance_clock else torch.zeros(0, dtype=torch.int64)
        self._deliver(send_times, local, eids, nbytes, kind)

    def forged(
        self,
        src: torch.Tensor,
        dst: torch.Tensor,
        kind: str,
        like: torch.Tensor,
        payload: Payload | None = None,
        sent_at: float | None = None,
    ) -> None:
        """Messages ``src -> dst`` whose content the simulation forges at the receiver.

        Omniscient Byzantine senders are simulated where their messages are used, so no
        row moves; the messages are still metered (``payload``, default one row of
        ``like``), sent at ``sent_at`` (default: each receiver's clock; ``dst`` hosted
        here), and waited for.
        """
        if len(dst) == 0:
            return
        src, dst = src.to(torch.int64), dst.to(torch.int64)
        if sent_at is None:
            now = self.clock[self.local_index(dst)]
        else:
            now = torch.full((len(dst),), float(sent_at), dtype=torch.float64)
        numel = like.shape[-1] if like.ndim else 1
        self.meter_messages(src, dst, now, numel, like.dtype, kind, payload=payload)

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

    def wire_bytes(
        self, payload: Payload | None, senders: torch.Tensor, numel: int, dtype: torch.dtype
    ) -> Bytes:
        """Wire bytes of each message of ``senders`` (int when all alike).

        ``payload`` None: ``numel`` elements of ``dtype`` (the moved tensor's row).
        """
        if payload is None:  # the meter's own formula, so default counts stay as they were
            return self.meter.message_bytes(numel, dtype)
        return resolve(payload, senders, numel, dtype, self.meter.header_bytes)

    def local_index(self, ids: torch.Tensor) -> torch.Tensor:
        """Positions in ``hosted`` of hosted global ids."""
        return torch.searchsorted(self.hosted, ids.to(torch.int64))

    def _deliver(
        self,
        send_times: torch.Tensor,
        dst_local: torch.Tensor,
        eids: torch.Tensor,
        nbytes: Bytes,
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
        nbytes: Bytes,
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
                b = nbytes[mask] if isinstance(nbytes, torch.Tensor) else nbytes
                self.meter.record(eids[mask], b, kind + suffix, a)
        if dst_local is not None and used.any():
            self.clock.scatter_reduce_(
                0, dst_local[used], arrival[used], reduce="amax", include_self=True
            )
        return used, arrival

    @staticmethod
    def _gossip_plan(
        W: sp.csr_matrix, hosted: np.ndarray, edge_index: Callable[..., np.ndarray]
    ) -> dict[str, object]:
        """The messages ``j -> i`` (``i`` hosted, ``W[i, j] != 0``, ``i != j``) of one
        operator, sender-sorted, with the receivers' diagonal entries."""
        coo = sp.csr_matrix(W).tocoo()
        row, col = coo.row.astype(np.int64), coo.col.astype(np.int64)
        mine = np.isin(row, hosted)
        off = mine & (row != col)
        order = np.lexsort((row[off], col[off]))
        src, dst, w = col[off][order], row[off][order], coo.data[off][order]
        dst_local = np.searchsorted(hosted, dst)
        diag = np.zeros(len(hosted), dtype=np.float64)
        stored = np.zeros(len(hosted), dtype=bool)
        on = mine & (row == col)
        at = np.searchsorted(hosted, row[on])
        diag[at] = coo.data[on]
        stored[at] = True
        return {
            "src": torch.from_numpy(src),
            "dst": torch.from_numpy(dst),
            "dst_local": torch.from_numpy(dst_local),
            "eids": torch.from_numpy(edge_index(src, dst)),
            "w": torch.from_numpy(w.astype(np.float64)),
            "by_dst": torch.from_numpy(np.lexsort((src, dst))),
            "diag": torch.from_numpy(diag),
            "diag_stored": torch.from_numpy(stored),
            "cap": degree_cap(W),
        }

    def _neighbourhood(
        self, plan: dict, X_ext: torch.Tensor, src_ext: torch.Tensor, used: torch.Tensor
    ) -> Neighbourhood:
        """The delivered messages of a gossip plan, receiver-sorted (rows from ``X_ext``)."""
        by_dst = plan["by_dst"]
        sel = by_dst[used[by_dst]]
        miss = ~used
        self_weight = plan["diag"].clone()
        if bool(miss.any()):
            self_weight.index_add_(0, plan["dst_local"][miss], plan["w"][miss])
        has_self = plan["diag_stored"].clone()
        has_self[plan["dst_local"][miss]] = True
        return Neighbourhood(
            rows=X_ext.index_select(0, src_ext[sel].to(X_ext.device)),
            src=plan["src"][sel],
            dst=plan["dst"][sel],
            weight=plan["w"][sel],
            receivers=self.hosted,
            self_weight=self_weight,
            cap=plan["cap"],
            has_self=has_self,
            weight_dtype=self.dtype,
        )

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
        self._plans: dict[object, dict] = {}

    # -- gossip ---------------------------------------------------------------------
    def _plan(self, t: int, op: OperatorHandle | None) -> dict:
        W, key = self.operator(t, op)
        plan = self._plans.get(key) if key is not None else None
        if plan is None:
            plan = self._gossip_plan(W, self.hosted.numpy(), self.topology.edge_index)
            plan["mixer"] = Mixer(W, degree_cap(W), self.dtype, self.device)
            if key is not None:
                self._plans[key] = plan
        return plan

    def _exchange_rows(
        self, X: torch.Tensor, t: int, kind: str, op: OperatorHandle | None, payload: Payload | None
    ) -> tuple[dict, torch.Tensor]:
        """Meter and time one gossip exchange: ``(plan, used mask)``."""
        plan = self._plan(t, op)
        self.exchange += 1
        src, dst = plan["src"], plan["dst"]
        nbytes = self.wire_bytes(payload, src, X.shape[1], X.dtype)
        used, _ = self._deliver_used(src, dst, self.clock[src], dst, plan["eids"], nbytes, kind)
        return plan, used

    def mix(
        self,
        X: torch.Tensor,
        t: int,
        kind: str = "model",
        op: OperatorHandle | None = None,
        payload: Payload | None = None,
    ) -> torch.Tensor:
        plan, used = self._exchange_rows(X, t, kind, op, payload)
        Y = plan["mixer"](X)
        if not bool(used.all()):
            src, dst, w = plan["src"], plan["dst"], plan["w"]
            self._missing_to_self(Y, X, src[~used], dst[~used], w[~used])
        return Y

    def neighbours(
        self,
        X: torch.Tensor,
        t: int,
        kind: str = "model",
        op: OperatorHandle | None = None,
        payload: Payload | None = None,
    ) -> Neighbourhood:
        plan, used = self._exchange_rows(X, t, kind, op, payload)
        return self._neighbourhood(plan, X, plan["src"], used)

    def all_gather(
        self,
        rows: torch.Tensor,
        senders: torch.Tensor,
        everyone: torch.Tensor,
        kind: str | None = None,
        payload: Payload | None = None,
        uses: torch.Tensor | None = None,
        listeners: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.exchange += 1
        senders = senders.to(torch.int64)
        clocks = self.clock[senders]  # a copy: the send times, before any arrival
        if kind is not None:
            self._meter_all_gather(
                senders, everyone, clocks, kind, payload, uses, listeners, rows.shape[1], rows.dtype
            )
        return rows, clocks

    def gather(
        self,
        rows: torch.Tensor,
        senders: torch.Tensor,
        dst: int,
        kind: str,
        payload: Payload | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        self.exchange += 1
        srcs = senders.to(torch.int64)
        dsts = torch.full_like(srcs, int(dst))
        eids = self.edge_ids(srcs, int(dst))
        nbytes = self.wire_bytes(payload, srcs, rows.shape[1], rows.dtype)
        used, _ = self._deliver_used(srcs, dsts, self.clock[srcs], dsts, eids, nbytes, kind)
        if bool(used.all()):
            return rows, srcs
        return rows[used.to(rows.device)], srcs[used]

    # -- server patterns ------------------------------------------------------------
    def broadcast(
        self,
        value: torch.Tensor | None,
        src: int,
        dst: torch.Tensor,
        kind: str,
        payload: Payload | None = None,
    ) -> torch.Tensor:
        if value is None:
            raise ValueError("broadcast: the local engine hosts the source; value is required")
        self.exchange += 1
        dst = dst.to(torch.int64)
        eids = self.edge_ids(int(src), dst)
        srcs = torch.full_like(dst, int(src))
        nbytes = self.wire_bytes(payload, srcs, value.numel(), value.dtype)
        used, _ = self._deliver_used(srcs, dst, self.clock[srcs], dst, eids, nbytes, kind, False)
        self._note_missed(dst, used)
        return value

    def gather_sum(
        self,
        rows: torch.Tensor,
        weights: torch.Tensor,
        senders: torch.Tensor,
        everyone: torch.Tensor,
        dst: int,
        kind: str,
        payload: Payload | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        self.exchange += 1
        srcs = senders.to(torch.int64)
        positions = self.positions(srcs, everyone)
        eids = self.edge_ids(srcs, int(dst))
        nbytes = self.wire_bytes(payload, srcs, rows.shape[1], rows.dtype)
        dsts = torch.full_like(srcs, int(dst))
        used, _ = self._deliver_used(srcs, dsts, self.clock[srcs], dsts, eids, nbytes, kind)
        if not bool(used.all()):
            weights = weights * used.to(weights.dtype)
        parts = self.partials(rows, weights, positions, len(everyone))
        return self.combine([parts], rows)

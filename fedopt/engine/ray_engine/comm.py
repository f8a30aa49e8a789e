"""Messaging between actors: each actor's :class:`RayComm` talks to its peers directly.

Payloads travel actor to actor through the mailbox's transport (``engine.transport``:
``peer.deliver.remote(key, src, payload)`` through Ray's object store, or a gRPC stream
to the peer's server), batched per actor pair per exchange: the driver never relays
them. A receiver blocks on a condition variable until every expected
sender has delivered (no polling), with a timeout that names the missing actors
(:mod:`~fedopt.engine.ray_engine.mailbox`).

Per exchange:

* ``mix``: every actor sends its peers exactly the rows (and clocks, and payload sizes
  when they differ per sender) of the nodes those peers need (the halo); the receiver
  mixes ``[own rows; halo rows]`` with a :class:`~fedopt.engine.mixer.Mixer` whose
  slots follow global ids, so each row gets the same bits as on the local engine.
  Receivers meter the messages. ``neighbours`` moves the same halo and returns the
  rows instead of their sum.
* ``broadcast``: the source's actor sends the value to every peer; receivers meter.
* ``gather_sum``: every actor sends its canonical block partials (and its latest
  arrival time) to the destination's actor, which combines them; senders meter.
* ``all_gather``: every actor sends its senders' rows and clocks to every peer;
  receivers meter (when a ``kind`` is given).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from fedopt.engine.comm import Comm, Neighbourhood, OperatorHandle
from fedopt.engine.mixer import Mixer, degree_cap
from fedopt.engine.payload import Payload, wire_bytes
from fedopt.engine.ray_engine.mailbox import Mailbox
from fedopt.network.compute_time import ComputeTimeModel
from fedopt.network.link import LinkModel
from fedopt.network.meter import Meter
from fedopt.topology.base import TopologyPlan


class RayComm(Comm):
    """The messaging seam for one actor of the Ray engine.

    Parameters
    ----------
    rank
        This actor's index.
    shards
        Sorted node ids hosted by every actor (``shards[rank]`` are this actor's).
    topology, link, compute_model, meter, dtype, device, block
        As for :class:`~fedopt.engine.comm.LocalComm`.
    timeout_s
        Longest wait for a peer's payload.
    """

    def __init__(
        self,
        rank: int,
        shards: list[np.ndarray],
        timeout_s: float,
        topology: TopologyPlan,
        link: LinkModel,
        compute_model: ComputeTimeModel,
        meter: Meter,
        dtype: torch.dtype,
        device: torch.device,
        block: int,
    ) -> None:
        self.rank = rank
        self.shards = shards
        self.timeout_s = timeout_s
        self.topology = topology
        self.link = link
        self.compute_model = compute_model
        self.meter = meter
        self.dtype = dtype
        self.device = device
        self.block = block
        self.hosted = torch.from_numpy(shards[rank])
        self.clock = torch.zeros(len(self.hosted), dtype=torch.float64)
        self.exchange = 0
        owner = np.empty(topology.n, dtype=np.int64)
        for r, s in enumerate(shards):
            owner[s] = r
        self.owner = owner
        self.mailbox = Mailbox(rank, shards, timeout_s)
        self._mix_cache: dict[object, dict[str, Any]] = {}

    # -- transport ---------------------------------------------------------------
    def set_peers(self, handles: list[Any]) -> None:
        """Actor handles of every worker, indexed by rank."""
        self.mailbox.set_peers(handles)

    def deliver(self, key: int, src: int, payload: Any) -> None:
        """Called (on another thread of the actor) when peer ``src`` sends ``payload``."""
        self.mailbox.deliver(key, src, payload)

    def _send(self, dst_rank: int, key: int, payload: Any) -> None:
        self.mailbox.send(dst_rank, key, payload)

    def _wait(self, key: int, sources: list[int], what: str) -> dict[int, Any]:
        return self.mailbox.wait(key, sources, what)

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device) if t.device != self.device else t

    # -- gossip ------------------------------------------------------------------
    def _mix_plan(self, t: int, op: OperatorHandle | None = None) -> dict[str, Any]:
        W, key = self.operator(t, op)
        cached = self._mix_cache.get(key) if key is not None else None
        if cached is not None:
            return cached
        me = self.rank
        coo = W.tocoo()
        row, col = coo.row.astype(np.int64), coo.col.astype(np.int64)
        src_rank, dst_rank = self.owner[col], self.owner[row]
        cross = (src_rank != dst_rank) & (row != col)
        sends: dict[int, torch.Tensor] = {}
        recvs: dict[int, np.ndarray] = {}
        for p in range(len(self.shards)):
            if p == me:
                continue
            out = np.unique(col[cross & (src_rank == me) & (dst_rank == p)])
            if len(out):
                sends[p] = torch.from_numpy(np.searchsorted(self.shards[me], out))
            inc = np.unique(col[cross & (src_rank == p) & (dst_rank == me)])
            if len(inc):
                recvs[p] = inc
        hosted = self.shards[me]
        halo = np.concatenate([recvs[p] for p in sorted(recvs)]) if recvs else np.zeros(0, int)
        col_map = np.full(self.topology.n, -1, dtype=np.int64)
        col_map[hosted] = np.arange(len(hosted))
        col_map[halo] = len(hosted) + np.arange(len(halo))
        plan = self._gossip_plan(W, hosted, self.topology.edge_index)
        plan.update(
            mixer=Mixer(sp.csr_matrix(W)[hosted], degree_cap(W), self.dtype, self.device, col_map),
            sends=sends,
            recv_ranks=sorted(recvs),
            src_ext=torch.from_numpy(col_map[plan["src"].numpy()]),
        )
        if key is not None:
            self._mix_cache[key] = plan
        return plan

    def _exchange_rows(
        self, X: torch.Tensor, t: int, kind: str, op: OperatorHandle | None, payload: Payload | None
    ) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
        """Move the halo, meter and time one gossip exchange: ``(plan, X_ext, used)``."""
        plan = self._mix_plan(t, op)
        self.exchange += 1
        key = self.exchange
        per_sender = payload is not None and payload.static is None
        for p, idx in plan["sends"].items():
            sizes = payload.sizes(self.hosted[idx]) if per_sender else None  # type: ignore[union-attr]
            self._send(p, key, (X[idx].cpu(), self.clock[idx].clone(), sizes))
        got = self._wait(key, plan["recv_ranks"], "gossip rows")
        parts = [X] + [self._to_device(got[p][0]) for p in plan["recv_ranks"]]
        clocks = [self.clock] + [got[p][1] for p in plan["recv_ranks"]]
        X_ext = torch.cat(parts) if len(parts) > 1 else X
        clock_ext = torch.cat(clocks) if len(clocks) > 1 else self.clock.clone()
        src_ext, dst_local, eids = plan["src_ext"], plan["dst_local"], plan["eids"]
        if per_sender:
            assert payload is not None
            k = len(self.hosted)
            sizes_ext = torch.zeros(len(clock_ext), dtype=torch.int64)
            own = src_ext < k
            sizes_ext[src_ext[own]] = payload.sizes(plan["src"][own])
            halo = [got[p][2] for p in plan["recv_ranks"]]  # in the order the rows came
            if halo:
                sizes_ext[k:] = torch.cat(halo)
            header = self.meter.header_bytes
            nbytes: int | torch.Tensor = wire_bytes(sizes_ext[src_ext], header, payload.name)
        else:
            nbytes = self.wire_bytes(payload, plan["src"], X.shape[1], X.dtype)
        used, _ = self._deliver_used(
            plan["src"], plan["dst"], clock_ext[src_ext], dst_local, eids, nbytes, kind
        )
        return plan, X_ext, used

    def mix(
        self,
        X: torch.Tensor,
        t: int,
        kind: str = "model",
        op: OperatorHandle | None = None,
        payload: Payload | None = None,
    ) -> torch.Tensor:
        plan, X_ext, used = self._exchange_rows(X, t, kind, op, payload)
        Y = plan["mixer"](X_ext)
        if not bool(used.all()):
            miss = ~used
            src_ext, dst_local = plan["src_ext"], plan["dst_local"]
            self._missing_to_self(Y, X_ext, src_ext[miss], dst_local[miss], plan["w"][miss])
        return Y

    def neighbours(
        self,
        X: torch.Tensor,
        t: int,
        kind: str = "model",
        op: OperatorHandle | None = None,
        payload: Payload | None = None,
    ) -> Neighbourhood:
        plan, X_ext, used = self._exchange_rows(X, t, kind, op, payload)
        return self._neighbourhood(plan, X_ext, plan["src_ext"], used)

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
        key = self.exchange
        senders = senders.to(torch.int64)
        mine = (senders, rows.cpu(), self.clock[self.local_index(senders)].clone())
        others = [p for p in range(len(self.shards)) if p != self.rank]
        for p in others:
            self._send(p, key, mine)
        got = self._wait(key, others, "all-gather rows")
        parts = [mine] + [got[p] for p in others]
        ids = torch.cat([q[0] for q in parts])
        pos = torch.searchsorted(everyone.to(torch.int64), ids)
        out = torch.empty((len(everyone), rows.shape[1]), dtype=rows.dtype)
        clocks = torch.empty(len(everyone), dtype=torch.float64)
        out[pos] = torch.cat([q[1] for q in parts])
        clocks[pos] = torch.cat([q[2] for q in parts])
        if kind is not None:  # receivers meter: each worker its hosted receivers
            self._meter_all_gather(
                senders, everyone, clocks, kind, payload, uses, listeners, rows.shape[1], rows.dtype
            )
        return self._to_device(out), clocks

    # -- server patterns ---------------------------------------------------------
    def broadcast(
        self,
        value: torch.Tensor | None,
        src: int,
        dst: torch.Tensor,
        kind: str,
        payload: Payload | None = None,
    ) -> torch.Tensor:
        self.exchange += 1
        key = self.exchange
        src_rank = int(self.owner[src])
        if src_rank == self.rank:
            if value is None:
                raise ValueError(f"broadcast: worker {self.rank} hosts node {src} but has no value")
            t_src = float(self.clock[self.local_index(torch.tensor([src]))][0])
            message = (value.cpu(), t_src)
            for p in range(len(self.shards)):
                if p != self.rank:
                    self._send(p, key, message)
        else:
            value, t_src = self._wait(key, [src_rank], f"broadcast from node {src}")[src_rank]
            value = self._to_device(value)
        dst = dst.to(torch.int64)
        if len(dst):
            eids = self.edge_ids(int(src), dst)
            send_times = torch.full((len(dst),), t_src, dtype=torch.float64)
            srcs = torch.full_like(dst, int(src))
            nbytes = self.wire_bytes(payload, srcs, value.numel(), value.dtype)
            used, _ = self._deliver_used(
                srcs, dst, send_times, self.local_index(dst), eids, nbytes, kind, False
            )
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
        key = self.exchange
        srcs = senders.to(torch.int64)
        positions = self.positions(srcs, everyone)
        nbytes = self.wire_bytes(payload, srcs, rows.shape[1], rows.dtype)
        used, latest = self._send_to_one(srcs, dst, nbytes, kind)
        if not bool(used.all()):
            weights = weights * used.to(weights.dtype)
        parts = self.partials(rows.cpu(), weights.cpu(), positions, len(everyone))
        dst_rank = int(self.owner[dst])
        if dst_rank != self.rank:
            self._send(dst_rank, key, (parts, latest))
            return None
        others = [p for p in range(len(self.shards)) if p != self.rank]
        got = self._wait(key, others, f"updates for node {dst}")
        all_parts = [parts] + [got[p][0] for p in others]
        latest = max([latest] + [got[p][1] for p in others])
        like = rows if len(rows) else torch.zeros((1, rows.shape[1]), dtype=rows.dtype)
        weighted, total_weight = self.combine(all_parts, like.cpu())
        d = self.local_index(torch.tensor([dst]))
        if latest > float("-inf"):
            self.clock[d] = torch.clamp_min(self.clock[d], latest)
        return self._to_device(weighted), self._to_device(total_weight)

    def gather(
        self,
        rows: torch.Tensor,
        senders: torch.Tensor,
        dst: int,
        kind: str,
        payload: Payload | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        self.exchange += 1
        key = self.exchange
        srcs = senders.to(torch.int64)
        nbytes = self.wire_bytes(payload, srcs, rows.shape[1], rows.dtype)
        used, latest = self._send_to_one(srcs, dst, nbytes, kind)
        mine = (rows[used.to(rows.device)].cpu(), srcs[used], latest)
        dst_rank = int(self.owner[dst])
        if dst_rank != self.rank:
            self._send(dst_rank, key, mine)
            return None
        others = [p for p in range(len(self.shards)) if p != self.rank]
        got = self._wait(key, others, f"rows for node {dst}")
        parts = [mine] + [got[p] for p in others]
        ids = torch.cat([q[1] for q in parts])
        order = torch.argsort(ids)
        all_rows = torch.cat([q[0] for q in parts])[order]
        latest = max(q[2] for q in parts)
        d = self.local_index(torch.tensor([dst]))
        if latest > float("-inf"):
            self.clock[d] = torch.clamp_min(self.clock[d], latest)
        return self._to_device(all_rows), ids[order]

    def _send_to_one(
        self, srcs: torch.Tensor, dst: int, nbytes: int | torch.Tensor, kind: str
    ) -> tuple[torch.Tensor, float]:
        """Sender-side metering of ``srcs -> dst``: ``(used mask, latest used arrival)``."""
        eids = self.edge_ids(srcs, int(dst))
        send_times = self.clock[self.local_index(srcs)]
        used, arrival = self._deliver_used(
            srcs,
            torch.full_like(srcs, int(dst)),
            send_times,
            None,
            eids,
            nbytes,
            kind,
            select=self._first_k_everywhere,
        )
        latest = float(arrival[used].max()) if bool(used.any()) else float("-inf")
        return used, latest

    def _first_k_everywhere(
        self, dst: torch.Tensor, arrival: torch.Tensor, src: torch.Tensor
    ) -> torch.Tensor:
        """Partial receipt when a receiver's messages are metered by several workers:
        every worker shares its arrivals, and all pick the same first ``k``."""
        assert self.faults is not None
        if self.faults.config.partial_receipt is None:
            return torch.ones(len(dst), dtype=torch.bool)
        key = ("first_k", self.exchange)
        mine = (dst, arrival, src)
        others = [p for p in range(len(self.shards)) if p != self.rank]
        for p in others:
            self._send(p, key, mine)
        got = self._wait(key, others, "arrival times")
        parts = [got[p] if p != self.rank else mine for p in range(len(self.shards))]
        keep = self.faults.first_k(*(torch.cat([q[i] for q in parts]) for i in range(3)))
        offset = sum(len(parts[p][0]) for p in range(self.rank))
        return keep[offset : offset + len(dst)]

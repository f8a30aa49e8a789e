"""Exact, placement-independent metering of logical messages.

Every logical message ``src -> dst`` carries a payload; its size on the wire is

    bytes = numel * itemsize(dtype) + header_bytes

with ``header_bytes`` fixed per message (default :data:`HEADER_BYTES` = 32: source and
destination ids, message kind and dtype code as 4-byte integers, round and element
count as 8-byte integers, 4 bytes of flags). ``numel`` and ``dtype`` are those of the
*encoded* payload, after any codec. A retransmitted attempt (lossy link) is counted
again in bytes and in ``retransmissions``, but a logical message is one message.

A batch of messages is metered with one ``index_add_`` over edge ids; totals are kept
as exact Python integers. ``nbytes`` is one int for the whole batch or an int64 tensor
of one size per message (mixed dtypes, per-sender sizes). The per-edge and per-node
counters are int64: a batch that would take the run's total past int64 is refused
(:class:`~fedopt.errors.EngineError` naming the message kind), never wrapped; runs
that would get there with one message per round are refused at compile time
(:func:`fedopt.engine.budget.check_counters`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fedopt.errors import EngineError

HEADER_BYTES = 32
INT64_MAX = (1 << 63) - 1
_SAFE_FLOAT = float(1 << 62)  # below this a float64 estimate proves an int64 sum exact


def payload_bytes(numel: int, dtype: torch.dtype, header_bytes: int = HEADER_BYTES) -> int:
    """Bytes on the wire of one message with ``numel`` elements of ``dtype``."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return int(numel) * itemsize + int(header_bytes)


@dataclass
class MeterTotals:
    """Mergeable message totals (per kind and overall)."""

    messages: int = 0
    bytes: int = 0
    retransmissions: int = 0
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [messages, bytes]

    def merge(self, other: MeterTotals) -> MeterTotals:
        """Sum of two totals."""
        kinds = {k: list(v) for k, v in self.by_kind.items()}
        for k, (m, b) in other.by_kind.items():
            cur = kinds.setdefault(k, [0, 0])
            cur[0] += m
            cur[1] += b
        return MeterTotals(
            self.messages + other.messages,
            self.bytes + other.bytes,
            self.retransmissions + other.retransmissions,
            kinds,
        )


class Meter:
    """Counts messages and bytes per directed edge and per message kind.

    Parameters
    ----------
    num_edges
        Number of directed edges of the topology (``TopologyPlan.edges``).
    header_bytes
        Fixed per-message header.
    enabled
        When False nothing is recorded (used only to measure metering overhead).
    """

    def __init__(self, num_edges: int, header_bytes: int = HEADER_BYTES, enabled: bool = True):
        self.header_bytes = int(header_bytes)
        self.enabled = enabled
        self.edge_messages = torch.zeros(num_edges, dtype=torch.int64)
        self.edge_bytes = torch.zeros(num_edges, dtype=torch.int64)
        self.totals = MeterTotals()

    def message_bytes(self, numel: int, dtype: torch.dtype) -> int:
        """Wire size of one message of this payload."""
        return payload_bytes(numel, dtype, self.header_bytes)

    def record(
        self,
        edge_ids: torch.Tensor,
        nbytes: int | torch.Tensor,
        kind: str,
        attempts: torch.Tensor | None = None,
    ) -> None:
        """Meter one message on each edge of ``edge_ids`` (int64, CPU).

        ``nbytes`` is the wire size of every message (int) or of each one (int64 tensor
        shaped like ``edge_ids``). ``attempts`` (same shape, >= 1) counts transmissions
        per message on lossy links.

        Raises
        ------
        EngineError
            When the run's metered bytes would exceed int64.
        """
        if not self.enabled or edge_ids.numel() == 0:
            return
        count = int(edge_ids.numel())
        sent = count if attempts is None else int(attempts.sum())
        if isinstance(nbytes, torch.Tensor):
            per = nbytes.to(torch.int64)
            if attempts is not None:
                most = int(attempts.max())
                if int(per.max()) > INT64_MAX // most:
                    raise EngineError(_too_many(kind, int(per.max()) * most))
                per = per * attempts
            added = _exact_sum(per)
            self._check(kind, added)
            self.edge_bytes.index_add_(0, edge_ids, per)
        else:
            added = sent * int(nbytes)
            self._check(kind, added)
            if attempts is None:
                self.edge_bytes.index_add_(0, edge_ids, torch.full_like(edge_ids, nbytes))
            else:
                self.edge_bytes.index_add_(0, edge_ids, attempts * nbytes)
        self.edge_messages.index_add_(0, edge_ids, torch.ones_like(edge_ids))
        t = self.totals
        t.messages += count
        t.bytes += added
        t.retransmissions += sent - count
        cur = t.by_kind.setdefault(kind, [0, 0])
        cur[0] += count
        cur[1] += added

    def _check(self, kind: str, added: int) -> None:
        """Refuse a batch that takes the total (hence any edge or node count) past int64."""
        if self.totals.bytes + added > INT64_MAX:
            raise EngineError(_too_many(kind, self.totals.bytes + added))

    def node_totals(self, edges: np.ndarray, n: int) -> dict[str, np.ndarray]:
        """Per-node sent/received messages and bytes derived from the edge counters."""
        return node_totals(self.edge_messages.numpy(), self.edge_bytes.numpy(), edges, n)


def _exact_sum(values: torch.Tensor) -> int:
    """Exact sum of non-negative int64 values (Python int; no int64 wrap-around)."""
    if float(values.to(torch.float64).sum()) < _SAFE_FLOAT:
        return int(values.sum())
    return sum(values.tolist())


def _too_many(kind: str, total: int) -> str:
    return (
        f"meter: messages of kind {kind!r} take the run's metered bytes to {total}, beyond "
        f"int64 (past 2**63 - 1 = {INT64_MAX}); the counters do not wrap: send smaller "
        "payloads or run fewer rounds"
    )


def node_totals(
    edge_messages: np.ndarray, edge_bytes: np.ndarray, edges: np.ndarray, n: int
) -> dict[str, np.ndarray]:
    """Per-node sent/received messages and bytes from per-edge counters."""
    src, dst = edges[:, 0], edges[:, 1]

    def count(ends: np.ndarray, values: np.ndarray) -> np.ndarray:
        out = np.zeros(n, dtype=np.int64)
        np.add.at(out, ends, values.astype(np.int64))
        return out

    return {
        "sent_messages": count(src, edge_messages),
        "sent_bytes": count(src, edge_bytes),
        "recv_messages": count(dst, edge_messages),
        "recv_bytes": count(dst, edge_bytes),
    }

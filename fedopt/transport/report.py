"""The three meters side by side: logical, gRPC frame and wire bytes per worker pair.

Logical messages are node to node (:class:`~fedopt.network.meter.Meter`); gRPC payloads
are worker to worker, one per worker pair and exchange (a halo batch, a set of block
partials). So the comparison is made per *link*, an ordered pair of workers: its
logical bytes are those of the topology edges whose endpoints the two workers host.
When every worker hosts one node, a link is an edge and the per-edge CSV carries all
three meters.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedopt.transport.meters import TransportStats


def owners(stats: list[TransportStats], n: int) -> np.ndarray:
    """Worker rank hosting each node."""
    owner = np.full(n, -1, dtype=np.int64)
    for st in stats:
        owner[st.nodes] = st.rank
    return owner


def link_rows(
    stats: list[TransportStats],
    edges: np.ndarray,
    edge_messages: np.ndarray,
    edge_bytes: np.ndarray,
    n: int,
) -> dict[str, np.ndarray]:
    """One row per worker pair that carried payloads or cross-worker logical messages."""
    owner = owners(stats, n)
    src_w, dst_w = owner[edges[:, 0]], owner[edges[:, 1]]
    cross = src_w != dst_w
    pairs: dict[tuple[int, int], list[int]] = {}
    for s, d, m, b in zip(
        src_w[cross], dst_w[cross], edge_messages[cross], edge_bytes[cross], strict=True
    ):
        row = pairs.setdefault((int(s), int(d)), [0, 0, 0, 0, 0, 0])
        row[0] += int(m)
        row[1] += int(b)
    for st in stats:
        for dst, lm in st.links.items():
            row = pairs.setdefault((st.rank, dst), [0, 0, 0, 0, 0, 0])
            row[2] += lm.payloads
            row[3] += lm.frames
            row[4] += lm.grpc_bytes
            row[5] += lm.wire_bytes or 0
    keys = sorted(k for k, v in pairs.items() if any(v))
    cols = np.array([pairs[k] for k in keys], dtype=np.int64).reshape(-1, 6)
    return {
        "src_worker": np.array([k[0] for k in keys], dtype=np.int64),
        "dst_worker": np.array([k[1] for k in keys], dtype=np.int64),
        "logical_messages": cols[:, 0],
        "logical_bytes": cols[:, 1],
        "grpc_payloads": cols[:, 2],
        "grpc_frames": cols[:, 3],
        "grpc_bytes": cols[:, 4],
        "wire_bytes": cols[:, 5],
    }


def one_node_per_worker(stats: list[TransportStats]) -> bool:
    """True when links are edges (each worker hosts a single node)."""
    return all(len(st.nodes) == 1 for st in stats)


def edge_columns(
    stats: list[TransportStats], edges: np.ndarray, used: np.ndarray, n: int
) -> dict[str, np.ndarray]:
    """Extra per-edge CSV columns: the edge's workers, and (one node per worker) the
    gRPC and wire bytes of its link."""
    owner = owners(stats, n)
    src_w, dst_w = owner[edges[used, 0]], owner[edges[used, 1]]
    out = {"src_worker": src_w, "dst_worker": dst_w}
    if one_node_per_worker(stats):
        links = {(st.rank, d): lm for st in stats for d, lm in st.links.items()}
        empty = None
        out["grpc_bytes"] = np.array(
            [
                getattr(links.get((int(s), int(d)), empty), "grpc_bytes", 0)
                for s, d in zip(src_w, dst_w, strict=True)
            ],
            dtype=np.int64,
        )
        out["wire_bytes"] = np.array(
            [
                getattr(links.get((int(s), int(d)), empty), "wire_bytes", 0) or 0
                for s, d in zip(src_w, dst_w, strict=True)
            ],
            dtype=np.int64,
        )
    return out


def summary_section(
    stats: list[TransportStats], rows: dict[str, np.ndarray], logical_total: int, header: int
) -> dict[str, Any]:
    """``summary.json["transport"]``: totals of the three meters."""
    links = [lm for st in stats for lm in st.links.values()]
    wire = [lm.wire_bytes for lm in links if lm.wire_bytes is not None]
    return {
        "kind": "grpc",
        "header_bytes": header,
        "logical_bytes": int(logical_total),
        "logical_cross_worker_bytes": int(rows["logical_bytes"].sum()),
        "logical_cross_worker_messages": int(rows["logical_messages"].sum()),
        "grpc_payloads": sum(lm.payloads for lm in links),
        "grpc_attempts": sum(lm.attempts for lm in links),
        "grpc_frames": sum(lm.frames for lm in links),
        "grpc_bytes": sum(lm.grpc_bytes for lm in links),
        "grpc_bytes_received": sum(st.received_grpc_bytes for st in stats),
        "wire_bytes": sum(wire) if wire else None,
        "wire_links_unmeasured": len(links) - len(wire),  # no socket found at the end
        "wire_source": "ss -tinp: TCP payload bytes both ways of every data-plane socket"
        if all(st.wire_source == "ss" for st in stats)
        else "unavailable (no ss)",
        "one_node_per_worker": one_node_per_worker(stats),
    }

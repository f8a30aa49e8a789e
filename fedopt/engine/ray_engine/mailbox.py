"""Actor-to-actor transport: keyed payloads, a condition variable, a timeout that names peers.

A sender's :class:`Mailbox` hands the payload to its :class:`Transport`; the receiving
actor's mailbox stores it, and a waiter blocks (no polling) until every expected
sender has delivered under that key. Two transports (``engine.transport``):

* :class:`RayTransport` calls ``peer.deliver.remote(key, src_rank, payload)``: Ray moves
  the payload through its object store, never through the driver;
* :class:`~fedopt.transport.endpoint.GrpcTransport`: every actor serves a gRPC endpoint
  whose handler calls :meth:`Mailbox.deliver`, and streams its payloads to its peers'
  endpoints as frames of raw tensor bytes (:mod:`fedopt.transport`). Ray still starts
  the actors and tells them each other's addresses.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Any, Protocol

import numpy as np

from fedopt.transport.config import GrpcConfig
from fedopt.transport.meters import TransportStats


class ExchangeTimeout(RuntimeError):
    """A worker waited longer than ``engine.timeout_s`` for its peers."""


class Transport(Protocol):
    """How a payload reaches a peer's mailbox."""

    def send(self, dst_rank: int, key: Hashable, payload: Any) -> None:
        """Start delivering ``payload`` to worker ``dst_rank`` (may return before it arrives)."""
        ...

    def flush(self) -> None:
        """Wait until every payload sent so far arrived (raise when one cannot)."""
        ...

    def stats(self) -> TransportStats | None:
        """Per-peer gRPC and wire meters (None: the transport has none)."""
        ...

    def close(self) -> None: ...


class RayTransport:
    """Payloads as Ray actor calls: ``peer.deliver.remote(key, src, payload)``."""

    def __init__(self, rank: int, handles: list[Any]) -> None:
        self.rank = rank
        self.peers = handles

    def send(self, dst_rank: int, key: Hashable, payload: Any) -> None:
        self.peers[dst_rank].deliver.remote(key, self.rank, payload)

    def flush(self) -> None:
        return None  # Ray delivers in order; a failed peer shows as a wait timeout

    def stats(self) -> TransportStats | None:
        return None

    def close(self) -> None:
        return None


class Mailbox:
    """Payloads addressed to one actor, keyed by ``(exchange key, sender rank)``.

    Parameters
    ----------
    rank
        This actor's index.
    shards
        Node ids hosted by every actor (named in timeout errors).
    timeout_s
        Longest wait for a peer's payload.
    """

    def __init__(self, rank: int, shards: list[np.ndarray], timeout_s: float) -> None:
        self.rank = rank
        self.shards = shards
        self.timeout_s = timeout_s
        self.transport: Transport | None = None
        self._box: dict[tuple[Hashable, int], Any] = {}
        self._cond = threading.Condition()

    def set_peers(self, handles: list[Any]) -> None:
        """Actor handles of every worker, indexed by rank (the Ray transport)."""
        self.transport = RayTransport(self.rank, handles)

    def start_grpc(self, cfg: GrpcConfig, host: str, token: str) -> str:
        """Serve this mailbox over gRPC; return the address peers should call."""
        from fedopt.transport.endpoint import GrpcTransport

        names = [f"worker {r} (nodes {span(self.shards, [r])})" for r in range(len(self.shards))]
        self.transport = GrpcTransport(self.rank, cfg, host, token, self.deliver, names)
        return self.transport.address

    def connect_grpc(self, addresses: list[str]) -> None:
        """Open gRPC channels to every peer (after every worker called :meth:`start_grpc`)."""
        assert self.transport is not None and hasattr(self.transport, "connect")
        self.transport.connect(addresses)

    def flush(self) -> None:
        """Wait until this worker's sends arrived (gRPC: raise naming a peer that failed)."""
        if self.transport is not None:
            self.transport.flush()

    def stats(self) -> TransportStats | None:
        """The transport's meters, with the node ids this worker hosts."""
        st = None if self.transport is None else self.transport.stats()
        if st is not None:
            st.nodes = [int(v) for v in self.shards[self.rank]]
        return st

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def deliver(self, key: Hashable, src: int, payload: Any) -> None:
        """Called (on another thread of the actor) when peer ``src`` sends ``payload``."""
        with self._cond:
            self._box[(key, src)] = payload
            self._cond.notify_all()

    def send(self, dst_rank: int, key: Hashable, payload: Any) -> None:
        """Deliver ``payload`` to actor ``dst_rank`` under ``key`` (asynchronous)."""
        if self.transport is None:
            raise RuntimeError(f"worker {self.rank}: send before the transport was set up")
        self.transport.send(dst_rank, key, payload)

    def wait(self, key: Hashable, sources: list[int], what: str) -> dict[int, Any]:
        """Block until every rank in ``sources`` delivered under ``key``; pop their payloads."""
        self.flush()  # a send of ours that failed is reported here, naming its peer
        with self._cond:
            ready = self._cond.wait_for(
                lambda: all((key, s) in self._box for s in sources), timeout=self.timeout_s
            )
            if not ready:
                missing = [s for s in sources if (key, s) not in self._box]
                raise ExchangeTimeout(
                    f"worker {self.rank} waited {self.timeout_s:.0f} s for {what} (exchange "
                    f"{key}) from workers {missing} (nodes {span(self.shards, missing)}); "
                    "a peer died or is stuck: see its error above, or raise engine.timeout_s"
                )
            return {s: self._box.pop((key, s)) for s in sources}


def span(shards: list[np.ndarray], ranks: list[int]) -> str:
    """Short description of the nodes hosted by ``ranks``."""
    parts = []
    for r in ranks:
        s = shards[r]
        parts.append(f"{int(s[0])}..{int(s[-1])}" if len(s) > 1 else str(int(s[0])))
    return ", ".join(parts)


def grpc_host(cfg: GrpcConfig) -> str:
    """``engine.grpc.host``, or the IP of the Ray node this actor runs on."""
    if cfg.host:
        return cfg.host
    import ray

    return ray.util.get_node_ip_address()

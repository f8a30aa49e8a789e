"""One worker's end of the gRPC data plane: its server and its channels to every peer.

:class:`GrpcTransport` is the ``engine.transport: grpc`` implementation of the
mailbox's transport seam (:mod:`fedopt.engine.ray_engine.mailbox`); it knows nothing
of Ray, so plain processes can use it too (``experiments/grpc``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedopt.transport.client import PeerChannels
from fedopt.transport.config import GrpcConfig
from fedopt.transport.meters import TransportStats, socket_bytes
from fedopt.transport.server import MailboxServer


class GrpcTransport:
    """Serve this worker's mailbox over gRPC and send to peers over gRPC.

    Parameters
    ----------
    rank
        This worker.
    cfg
        The ``engine.grpc`` section.
    host
        Address to listen on and advertise.
    token
        The run's secret (checked on every incoming call, sent on every outgoing one).
    deliver
        The mailbox's ``deliver(key, src, payload)``.
    names
        Description of every worker, for errors.
    """

    def __init__(
        self,
        rank: int,
        cfg: GrpcConfig,
        host: str,
        token: str,
        deliver: Callable[[Any, int, Any], None],
        names: list[str],
    ) -> None:
        self.rank = rank
        self.server = MailboxServer(rank, cfg, host, token, deliver)
        self.address = self.server.address
        self.channels = PeerChannels(rank, cfg, token, names)

    def connect(self, addresses: list[str]) -> None:
        """Open a channel to every other worker (``addresses`` indexed by rank)."""
        peers = [p for p in range(len(addresses)) if p != self.rank]
        self.channels.connect(addresses, peers)

    def send(self, dst_rank: int, key: Any, payload: Any) -> None:
        self.channels.send(dst_rank, key, payload)

    def flush(self) -> None:
        self.channels.flush()

    def stats(self) -> TransportStats:
        """Per-peer frame meters, and the kernel's socket bytes towards each peer."""
        self.flush()
        wire = socket_bytes(self.channels.addresses)
        links = self.channels.links
        for p, m in links.items():
            m.wire_bytes = None if wire is None else wire.get(p)
        return TransportStats(
            self.rank,
            dict(links),
            self.server.received_payloads,
            self.server.received_grpc_bytes,
            "ss" if wire is not None else "unavailable",
        )

    def close(self) -> None:
        self.channels.close()
        self.server.stop()

"""A worker's channels to its peers: asynchronous sends, deadlines, retries, clear errors.

``send`` frames the payload (:func:`~fedopt.transport.wire.encode`) and starts one
client-streaming call with the run's token in its metadata and a deadline of
``engine.grpc.deadline_s``; it returns at once. ``flush`` waits for every call in
flight: a call that fails with ``UNAVAILABLE`` is resent (the frames are rebuilt from
the kept tensors) up to ``engine.grpc.retries`` times with exponential back-off; any
other failure, or the last one, raises :class:`TransportError` naming the peer worker,
its address and its nodes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc

from fedopt.errors import EngineError
from fedopt.transport.config import GrpcConfig
from fedopt.transport.meters import LinkMeter
from fedopt.transport.server import METHOD, TOKEN_KEY, channel_options
from fedopt.transport.wire import Encoded, encode

RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)


class TransportError(EngineError):
    """A payload could not reach its peer (unreachable, refused, deadline passed)."""


@dataclass
class _InFlight:
    dst: int
    enc: Encoded
    future: Any
    attempt: int


class PeerChannels:
    """One channel per peer of worker ``rank``.

    Parameters
    ----------
    rank
        This worker.
    cfg
        The ``engine.grpc`` section.
    token
        The run's secret, sent as metadata on every call.
    names
        Description of every worker (``"worker 1 (nodes 4..7)"``), for errors.
    """

    def __init__(self, rank: int, cfg: GrpcConfig, token: str, names: list[str]) -> None:
        self.rank = rank
        self.cfg = cfg
        self.names = names
        self.metadata = ((TOKEN_KEY, token),)
        self.addresses: dict[int, str] = {}
        self.links: dict[int, LinkMeter] = {}
        self._calls: dict[int, Any] = {}
        self._channels: list[grpc.Channel] = []
        self._pending: list[_InFlight] = []
        self._lock = threading.Lock()

    def connect(self, addresses: list[str], peers: list[int]) -> None:
        """Open channels to ``peers`` and wait (at most ``deadline_s``) until each is ready."""
        for p in peers:
            addr = addresses[p]
            ch = grpc.insecure_channel(addr, options=channel_options(self.cfg))
            self._channels.append(ch)
            try:
                grpc.channel_ready_future(ch).result(timeout=self.cfg.deadline_s)
            except grpc.FutureTimeoutError:
                raise TransportError(
                    f"worker {self.rank} could not reach {self.names[p]} at {addr} within "
                    f"engine.grpc.deadline_s={self.cfg.deadline_s:g} s; is the peer's port "
                    "reachable from this machine (firewall, engine.grpc.host)?"
                ) from None
            self.addresses[p] = addr
            self._calls[p] = ch.stream_unary(METHOD)
            self.links[p] = LinkMeter()

    def send(self, dst: int, key: Any, payload: Any) -> None:
        """Start sending ``payload`` to worker ``dst`` under ``key`` (returns at once)."""
        if dst not in self._calls:
            raise TransportError(f"worker {self.rank} has no channel to {self.names[dst]}")
        enc = encode(key, self.rank, dst, payload, self.cfg.chunk_bytes, self.cfg.max_message_bytes)
        self._reap(block=False)
        self.links[dst].payloads += 1
        fut = self._start(dst, enc)
        with self._lock:
            self._pending.append(_InFlight(dst, enc, fut, 0))

    def _start(self, dst: int, enc: Encoded) -> Any:
        self.links[dst].add(enc.frame_sizes())
        return self._calls[dst].future(
            enc.frames(), timeout=self.cfg.deadline_s, metadata=self.metadata
        )

    def flush(self) -> None:
        """Wait for every send in flight; resend on UNAVAILABLE; raise on failure."""
        self._reap(block=True)

    def _reap(self, block: bool) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        keep = []
        try:
            while pending:
                item = pending.pop()
                if not block and not item.future.done():
                    keep.append(item)
                    continue
                self._settle(item)
        finally:
            with self._lock:
                self._pending.extend(keep + pending)

    def _settle(self, item: _InFlight) -> None:
        while True:
            try:
                item.future.result()
                return
            except grpc.RpcError as exc:
                code = exc.code()
                if code in RETRYABLE and item.attempt < self.cfg.retries:
                    time.sleep(min(2.0, 0.05 * 2**item.attempt))
                    item.attempt += 1
                    item.future = self._start(item.dst, item.enc)
                    continue
                raise TransportError(self._explain(item, code, exc.details())) from None

    def _explain(self, item: _InFlight, code: grpc.StatusCode, details: str | None) -> str:
        peer, addr = self.names[item.dst], self.addresses.get(item.dst, "?")
        tries = f"{item.attempt + 1} attempt{'s' if item.attempt else ''}"
        if code == grpc.StatusCode.UNAUTHENTICATED:
            hint = "the peer refused this worker's token: every worker of a run needs the same"
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            hint = (
                f"not delivered within engine.grpc.deadline_s={self.cfg.deadline_s:g} s; "
                "raise it for large payloads on slow links"
            )
        elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            hint = "a frame exceeded the peer's message cap (engine.grpc.max_message_bytes)"
        else:
            hint = "the peer died or is unreachable: see its error above"
        return (
            f"worker {self.rank} could not send a payload ({item.enc.data_bytes} data bytes) "
            f"to {peer} at {addr}: {code.name} after {tries} ({details}); {hint}"
        )

    def close(self) -> None:
        for ch in self._channels:
            ch.close()
        self._channels = []

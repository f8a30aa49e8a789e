"""A worker's gRPC server: one client-streaming method that fills its mailbox.

``/fedopt.Mailbox/Push`` takes one payload as a stream of frames
(:mod:`~fedopt.transport.wire`), rebuilds it and hands it to ``deliver(key, src,
payload)``. Generic handlers with raw-bytes (de)serializers: no generated code. Every
call must carry the run's token in its metadata (:data:`TOKEN_KEY`); a call without it
is refused with ``UNAUTHENTICATED`` before a frame is read.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc

from fedopt.errors import ConfigError
from fedopt.transport.config import GrpcConfig
from fedopt.transport.wire import GRPC_PREFIX, Decoder

SERVICE = "fedopt.Mailbox"
METHOD = f"/{SERVICE}/Push"
TOKEN_KEY = "x-fedopt-token"


def channel_options(cfg: GrpcConfig) -> list[tuple[str, int]]:
    """Message caps set explicitly on both ends (never gRPC's 4 MiB default by accident)."""
    return [
        ("grpc.max_send_message_length", cfg.max_message_bytes),
        ("grpc.max_receive_message_length", cfg.max_message_bytes),
    ]


class MailboxServer:
    """Serves ``Push`` for one worker on ``host`` (a port of ``cfg.ports`` or ephemeral).

    Parameters
    ----------
    rank
        The worker's index (payloads addressed to another worker are refused).
    cfg
        The ``engine.grpc`` section.
    host
        Address to bind and advertise.
    token
        The run's secret; calls must send it as ``x-fedopt-token`` metadata.
    deliver
        ``deliver(key, src, payload)``, the mailbox's.
    """

    def __init__(
        self,
        rank: int,
        cfg: GrpcConfig,
        host: str,
        token: str,
        deliver: Callable[[Any, int, Any], None],
    ) -> None:
        self.rank = rank
        self._token = token.encode()
        self._deliver = deliver
        self._lock = threading.Lock()
        self.received_payloads = 0
        self.received_grpc_bytes = 0
        self.refused = 0
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="fedopt-rx"),
            options=[*channel_options(cfg), ("grpc.so_reuseport", 0)],
        )
        handler = grpc.stream_unary_rpc_method_handler(self._push)
        self.server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(SERVICE, {"Push": handler})]
        )
        self.port = self._bind(host, cfg)
        self.address = f"{host}:{self.port}"
        self.server.start()

    def _bind(self, host: str, cfg: GrpcConfig) -> int:
        ports = cfg.port_range()
        if ports is None:
            try:
                return self.server.add_insecure_port(f"{host}:0")
            except RuntimeError as exc:
                raise ConfigError(
                    f"engine.grpc.host: worker {self.rank} cannot listen on {host!r} ({exc}); "
                    "set an address of this machine, or leave it unset (the Ray node's IP)"
                ) from None
        for port in ports:
            try:
                got = self.server.add_insecure_port(f"{host}:{port}")
            except RuntimeError:
                continue
            if got:
                return got
        raise ConfigError(
            f"engine.grpc.ports: worker {self.rank} found every port of {cfg.ports!r} taken on "
            f"{host} ({len(ports)} tried); widen the range (one port per worker on each "
            "machine), free the ports, or leave engine.grpc.ports unset (ephemeral ports)"
        )

    def _push(self, frames: Any, context: grpc.ServicerContext) -> bytes:
        sent = dict(context.invocation_metadata()).get(TOKEN_KEY, "")
        if not hmac.compare_digest(str(sent).encode(), self._token):
            with self._lock:
                self.refused += 1
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"worker {self.rank}: missing or wrong {TOKEN_KEY} (the run's token)",
            )
        dec = Decoder()
        for frame in frames:
            dec.feed(frame)
        src, dst, key, payload = dec.result()
        if dst != self.rank:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"payload for worker {dst} reached worker {self.rank}",
            )
        self._deliver(key, src, payload)
        with self._lock:
            self.received_payloads += 1
            self.received_grpc_bytes += dec.bytes + GRPC_PREFIX * (dec.frames + 1)
        return b""

    def stop(self) -> None:
        """Stop serving (in-flight calls get a second to finish)."""
        self.server.stop(grace=1.0).wait(5)

"""Two gRPC endpoints in one process: delivery, meters, token, bad input (no Ray)."""

import shutil
import socket
import threading

import grpc
import pytest
import torch

from fedopt.errors import ConfigError
from fedopt.transport.calibrate import measure_overhead
from fedopt.transport.client import TransportError
from fedopt.transport.config import GrpcConfig
from fedopt.transport.endpoint import GrpcTransport
from fedopt.transport.server import METHOD
from fedopt.transport.wire import GRPC_PREFIX, WireError, encode

NEEDS_SS = pytest.mark.skipif(
    shutil.which("ss") is None, reason="the wire meter reads `ss -tinp` (iproute2)"
)

NAMES = ["worker 0 (nodes 0..3)", "worker 1 (nodes 4..7)"]
TOKEN = "a" * 32


class Inbox:
    def __init__(self) -> None:
        self.got: dict = {}
        self.cond = threading.Condition()

    def deliver(self, key, src, payload) -> None:
        with self.cond:
            self.got[key] = (src, payload)
            self.cond.notify_all()

    def wait(self, count: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.got) >= count, timeout=20)


def pair(cfg: GrpcConfig, token_b: str = TOKEN):
    inbox = Inbox()
    a = GrpcTransport(0, cfg, "127.0.0.1", TOKEN, inbox.deliver, NAMES)
    b = GrpcTransport(1, cfg, "127.0.0.1", token_b, lambda *x: None, NAMES)
    b.connect([a.address, b.address])
    return a, b, inbox


@NEEDS_SS
def test_payloads_arrive_bit_for_bit_and_the_meters_are_ordered() -> None:
    cfg = GrpcConfig(chunk_bytes=1 << 20)
    a, b, inbox = pair(cfg)
    try:
        g = torch.Generator().manual_seed(1)
        sent = {
            k: (torch.randn(1, d, generator=g), torch.rand(1, dtype=torch.float64))
            for k, d in enumerate([1, 101, 10_000, 700_000])
        }
        for k, p in sent.items():
            b.send(0, k, p)
        b.flush()
        inbox.wait(len(sent))
        for k, (row, clock) in sent.items():
            src, (r, c) = inbox.got[k]
            assert src == 1 and torch.equal(r, row) and torch.equal(c, clock)
        st = b.stats()
        link = st.links[0]
        logical = sum(4 * p[0].numel() + 32 for p in sent.values())  # the default header
        assert link.payloads == link.attempts == 4
        assert link.frames == 3 + 3  # the 2.8 MB row needs 3 frames of at most 1 MiB
        assert logical < link.grpc_bytes < link.wire_bytes
        assert link.grpc_bytes == a.server.received_grpc_bytes  # both ends count the same
        assert link.wire_bytes - link.grpc_bytes > 4 * 100  # HTTP/2 and TCP-level extras
    finally:
        b.close()
        a.close()


def test_a_peer_without_the_token_is_refused() -> None:
    a, b, inbox = pair(GrpcConfig(retries=0), token_b="b" * 32)
    try:
        b.send(0, 1, (torch.zeros(3),))
        with pytest.raises(
            TransportError,
            match=r"to worker 0 \(nodes 0..3\) at 127.0.0.1:\d+: "
            r"UNAUTHENTICATED.*token",
        ):
            b.flush()
        assert inbox.got == {} and a.server.refused == 1
        with grpc.insecure_channel(a.address) as ch:  # no metadata at all
            push = ch.stream_unary(METHOD)
            with pytest.raises(grpc.RpcError) as info:
                push(iter([b"junk"]), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert inbox.got == {} and a.server.refused == 2
    finally:
        b.close()
        a.close()


def test_an_unreachable_peer_is_named_within_the_deadline() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"  # bound, never listening
        b = GrpcTransport(1, GrpcConfig(deadline_s=0.5), "127.0.0.1", TOKEN, lambda *x: None, NAMES)
        try:
            with pytest.raises(
                TransportError,
                match=rf"worker 1 could not reach worker 0 \(nodes "
                rf"0..3\) at {dead} within engine.grpc.deadline_s=0.5 s",
            ):
                b.connect([dead, b.address])
        finally:
            b.close()


def test_a_port_range_that_is_taken_is_refused() -> None:
    with socket.socket() as s:  # a plain listening socket holds the only port of the range
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = GrpcConfig(ports=f"{port}-{port}")
        with pytest.raises(
            ConfigError,
            match=rf"engine.grpc.ports: worker 0 found every port of '{port}-{port}' taken "
            r"on 127.0.0.1 \(1 tried\); widen the range",
        ):
            GrpcTransport(0, cfg, "127.0.0.1", TOKEN, lambda *x: None, NAMES)


def test_over_the_cap_without_chunking_names_both_sizes() -> None:
    a, b, _ = pair(GrpcConfig(chunk_bytes=0, max_message_bytes=1 << 20))
    try:
        with pytest.raises(
            WireError,
            match=r"for worker 0 is 4000\d+ bytes in one frame.*"
            r"max_message_bytes=1048576",
        ):
            b.send(0, 1, (torch.zeros(1_000_000),))
        b.send(0, 2, (torch.zeros(1000),))  # a small one still goes in one frame
        b.flush()
        assert b.stats().links[0].frames == 1
    finally:
        b.close()
        a.close()


@NEEDS_SS
def test_measured_header_is_the_real_per_message_overhead() -> None:
    overhead = measure_overhead(GrpcConfig(), count=60)
    row = torch.zeros((1, 1))
    enc = encode(0, 1, 0, (row, torch.zeros(1, dtype=torch.float64), None), 1 << 20, 4 << 20)
    framing = sum(enc.frame_sizes()) + 2 * GRPC_PREFIX - 4  # gRPC bytes beyond the row
    # HTTP/2 headers (path, token), the response, trailers and TCP acks come on top
    assert framing + 50 < overhead < framing + 1500

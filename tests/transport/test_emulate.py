"""The emulated link: a delay relay (no root needed) and two shaped namespaces (root)."""

import socket
import threading
import time

import pytest
import torch

from fedopt.transport.config import GrpcConfig
from fedopt.transport.emulate import exists, link_check, probe, relay
from fedopt.transport.endpoint import GrpcTransport

TOKEN = "r" * 32


def test_the_relay_delays_each_direction_by_its_latency() -> None:
    arrived: list[float] = []
    rx = GrpcTransport(0, GrpcConfig(), "127.0.0.1", TOKEN, lambda *a: arrived.append(time.time()),
                       ["rx", "tx"])  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    threading.Thread(target=relay, args=("127.0.0.1", port, rx.address, 0.15), daemon=True).start()
    time.sleep(0.5)
    tx = GrpcTransport(1, GrpcConfig(), "127.0.0.1", TOKEN, lambda *a: None, ["rx", "tx"])
    try:
        tx.connect([f"127.0.0.1:{port}", tx.address])
        t0 = time.time()
        tx.send(0, 1, (torch.ones(1000),))
        tx.flush()  # the response comes back through the relay too
        done = time.time()
        assert 0.15 <= arrived[0] - t0 < 0.15 + 0.2
        assert 0.30 <= done - t0 < 0.30 + 0.3
    finally:
        tx.close()
        rx.close()


@pytest.mark.slow
def test_link_model_matches_an_emulated_link(tmp_path) -> None:
    reason = probe()
    if reason is not None:
        pytest.skip(reason)
    rate, lat = 20e6, 0.01
    r = link_check(rate, lat, [1, 25_000, 250_000], 2, {"32": 32, "m": 330}, tmp_path)
    assert not any(exists(ns) for ns in r["namespaces"])  # cleaned up
    rows = {row["floats"]: row for row in r["rows"]}
    for d in (25_000, 250_000):  # 100 kB and 1 MB: the link dominates the software's ms
        assert abs(rows[d]["error_m"]) < 0.25
    assert rows[1]["measured_ms"] >= 1e3 * lat  # never faster than the relay's latency
    payload = 3 * 4 * (1 + 25_000 + 250_000)  # 3 passes (one warm-up)
    assert payload < r["tc_bytes"] < 1.15 * payload  # tbf counted IP packets of the sends

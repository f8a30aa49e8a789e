"""An emulated link for the gRPC data plane: two network namespaces, a shaped veth, a delay relay.

:class:`Veth` creates two Linux network namespaces joined by a veth pair (unique
names, a private /30), shapes each end's egress with ``tc qdisc ... tbf`` and always
removes both namespaces (which removes the pair). ``netem`` is not in every kernel
(it is not in this project's), so latency comes from :func:`relay`: a TCP proxy in the
sender's namespace that forwards every byte ``latency_s`` after it read it, in both
directions, pipelined (it delays, it does not stop and wait). The bandwidth is the
kernel's (tbf counts IP packets: TCP/IP headers included); the latency is the relay's.

:func:`link_check` runs a receiver worker in one namespace and a sender in the other
(plain processes with :class:`~fedopt.transport.endpoint.GrpcTransport`; not Ray
actors, whose control plane would have to span the namespaces too), sends gossip-shaped
payloads (one float32 row and its clock) of several sizes one at a time, and compares
each arrival time with the link model's ``latency + bytes / bandwidth``
(:class:`~fedopt.network.link.LinkModel`) for the logical bytes with a given header.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


class EmulationUnavailable(RuntimeError):
    """This machine cannot build the emulated link (the reason is the message)."""


def _ip(*args: str, ns: str | None = None) -> subprocess.CompletedProcess:
    cmd = ["ip", *(["netns", "exec", ns, "ip"] if ns else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)


def probe() -> str | None:
    """None when namespaces, veth and tbf work here; else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for exe in ("ip", "tc"):
        if shutil.which(exe) is None:
            return f"`{exe}` (iproute2) is not installed"
    name = f"fo-probe-{os.getpid()}"
    r = _ip("netns", "add", name)
    if r.returncode:
        return f"`ip netns add` failed: {r.stderr.strip()}"
    try:
        tbf = subprocess.run(
            [
                *("ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "lo", "root"),
                *("tbf", "rate", "10mbit", "burst", "32kb", "latency", "50ms"),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if tbf.returncode:
            return f"`tc qdisc ... tbf` is unavailable: {tbf.stderr.strip()}"
    finally:
        _ip("netns", "del", name)
    return None


BURST = 1600  # tbf bucket (bytes): one MTU frame, so idle time buys no line-rate burst
UNSHAPED = 1e9  # at or above this rate no tbf is set (a bucket of one frame cannot reach it)


class Veth:
    """Two namespaces ``a`` and ``b`` joined by a veth pair shaped to ``rate_bps``.

    Use as a context manager; on exit both namespaces are deleted whatever happened.
    """

    def __init__(self, rate_bps: float, tag: str | None = None) -> None:
        tag = tag or f"{os.getpid() % 100000}"
        self.a, self.b = f"fo-{tag}-a", f"fo-{tag}-b"
        octet = 1 + os.getpid() % 250
        self.ip_a, self.ip_b = f"10.231.{octet}.1", f"10.231.{octet}.2"
        self.rate_bps = rate_bps

    def __enter__(self) -> Veth:
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def _run(self, *cmd: str) -> None:
        r = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)
        if r.returncode:
            raise EmulationUnavailable(f"`{' '.join(cmd)}` failed: {r.stderr.strip()}")

    def _create(self) -> None:
        va, vb = f"{self.a[:10]}v", f"{self.b[:10]}v"
        self._run("ip", "netns", "add", self.a)
        self._run("ip", "netns", "add", self.b)
        self._run(
            "ip", "link", "add", va, "netns", self.a, "type", "veth", "peer", "name", vb,
            "netns", self.b,
        )  # fmt: skip
        for ns, dev, addr in ((self.a, va, self.ip_a), (self.b, vb, self.ip_b)):
            self._run("ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            # no GSO/TSO super-packets (tbf would need a bucket as large as one): MTU frames
            self._run(
                "ip", "-n", ns, "link", "set", dev, "gso_max_size", "1500", "gso_max_segs", "1"
            )
            self._run("ip", "-n", ns, "link", "set", dev, "up")
            self._run("ip", "-n", ns, "link", "set", "lo", "up")
            if self.rate_bps >= UNSHAPED:
                continue
            rate = f"{int(self.rate_bps)}bit"
            self._run(
                "ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
                "rate", rate, "burst", str(BURST), "latency", "400ms",
            )  # fmt: skip
        self.devs = (va, vb)

    def tc_bytes(self) -> int:
        """Bytes tbf sent on the sender's end (IP packets)."""
        r = subprocess.run(
            ["ip", "netns", "exec", self.a, "tc", "-s", "qdisc", "show", "dev", self.devs[0]],
            capture_output=True,
            text=True,
            check=False,
        )
        for line in r.stdout.splitlines():
            if line.strip().startswith("Sent"):
                return int(line.split()[1])
        return -1

    def close(self) -> None:
        for ns in (self.a, self.b):
            _ip("netns", "del", ns)

    def __exit__(self, *exc: object) -> None:
        self.close()


def exists(name: str) -> bool:
    """Whether a namespace of that name exists (for clean-up checks)."""
    return name in _ip("netns", "list").stdout.split()


# -- the delay relay ---------------------------------------------------------------
async def _pump(reader: Any, writer: Any, latency_s: float) -> None:
    queue: asyncio.Queue = asyncio.Queue()

    async def forward() -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    task = asyncio.create_task(forward())
    loop = asyncio.get_running_loop()
    while True:
        data = await reader.read(1 << 16)
        queue.put_nowait((loop.time() + latency_s, data or None))
        if not data:
            break
    await task


async def _relay(listen: tuple[str, int], target: tuple[str, int], latency_s: float) -> None:
    async def handle(r_in: Any, w_in: Any) -> None:
        r_out, w_out = await asyncio.open_connection(*target)
        await asyncio.gather(_pump(r_in, w_out, latency_s), _pump(r_out, w_in, latency_s))

    server = await asyncio.start_server(handle, *listen)
    print(json.dumps({"relay": server.sockets[0].getsockname()[1]}), flush=True)
    async with server:
        await server.serve_forever()


def relay(listen_host: str, listen_port: int, target: str, latency_s: float) -> None:
    """Forward ``listen`` -> ``target`` (``host:port``), each byte ``latency_s`` late."""
    host, _, port = target.rpartition(":")
    asyncio.run(_relay((listen_host, listen_port), (host, int(port)), latency_s))


# -- the two workers ---------------------------------------------------------------
TOKEN = "emulated-link-token-0000"


def receiver(host: str, count: int, out: str) -> None:
    """Worker 0: serve, print the address, record each payload's arrival, then write them."""
    import threading

    from fedopt.transport.config import GrpcConfig
    from fedopt.transport.endpoint import GrpcTransport

    arrivals: dict[int, float] = {}
    done = threading.Event()

    def deliver(key: Any, src: int, payload: Any) -> None:
        arrivals[int(key)] = time.time()
        if len(arrivals) == count:
            done.set()

    t = GrpcTransport(0, GrpcConfig(), host, TOKEN, deliver, ["receiver", "sender"])
    print(json.dumps({"address": t.address}), flush=True)
    done.wait(600)
    Path(out).write_text(json.dumps(arrivals))
    t.close()


def sender(target: str, sizes: list[int], repeats: int, gap_s: float, out: str) -> None:
    """Worker 1: send ``repeats`` gossip payloads of each float32 ``size``, one at a time."""
    import torch

    from fedopt.transport.config import GrpcConfig
    from fedopt.transport.endpoint import GrpcTransport

    t = GrpcTransport(1, GrpcConfig(deadline_s=120), "127.0.0.1", TOKEN, lambda *a: None,
                      ["receiver", "sender"])  # fmt: skip
    t.connect([target, t.address])
    starts: dict[int, list] = {}
    key = 0
    for rep in range(repeats + 1):  # the first pass warms the connection (TCP, HPACK)
        for d in sizes:
            payload = (torch.ones((1, d)), torch.zeros(1, dtype=torch.float64), None)
            time.sleep(gap_s)  # an idle link: tbf's bucket refills, the relay is empty
            starts[key] = [time.time(), d, rep]
            t.send(0, key, payload)
            t.flush()
            key += 1
    Path(out).write_text(json.dumps(starts))
    t.close()


def _spawn(ns: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "fedopt.transport.emulate", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _first_json(proc: subprocess.Popen, timeout_s: float = 60) -> dict[str, Any]:
    t0 = time.time()
    assert proc.stdout is not None
    while time.time() - t0 < timeout_s:
        line = proc.stdout.readline()
        if line.startswith("{"):
            return json.loads(line)
        if proc.poll() is not None:
            break
    err = proc.stderr.read() if proc.stderr else ""
    raise RuntimeError(f"emulation worker did not start: {err[-2000:]}")


def link_check(
    rate_bps: float,
    latency_s: float,
    sizes: list[int],
    repeats: int,
    headers: dict[str, int],
    workdir: Path,
) -> dict[str, Any]:
    """Measured vs modelled transfer time per payload size on an emulated link.

    ``headers`` names the logical headers to model with (e.g. the default 32 bytes
    and the measured one). Returns the per-size rows and the tbf byte count.
    """
    import statistics

    import torch

    from fedopt.network.link import LinkModel, NetworkConfig

    reason = probe()
    if reason is not None:
        raise EmulationUnavailable(reason)
    workdir.mkdir(parents=True, exist_ok=True)
    arrivals_f, starts_f = workdir / "arrivals.json", workdir / "starts.json"
    procs: list[subprocess.Popen] = []
    with Veth(rate_bps) as link:
        try:
            count = (repeats + 1) * len(sizes)
            rx = _spawn(link.b, "receiver", link.ip_b, str(count), str(arrivals_f))
            procs.append(rx)
            addr = _first_json(rx)["address"]
            rl = _spawn(link.a, "relay", "127.0.0.1", "0", addr, str(latency_s))
            procs.append(rl)
            port = _first_json(rl)["relay"]
            sz = ",".join(map(str, sizes))
            tx = _spawn(link.a, "sender", f"127.0.0.1:{port}", sz, str(repeats), "0.3",
                        str(starts_f))  # fmt: skip
            procs.append(tx)
            tx.wait(900)
            rx.wait(120)
            if tx.returncode or rx.returncode:
                raise RuntimeError(f"emulation workers failed: {tx.stderr.read()[-2000:]}"
                                   f"{rx.stderr.read()[-2000:]}")  # fmt: skip
            tc_bytes = link.tc_bytes()
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
    arrivals = json.loads(arrivals_f.read_text())
    starts = json.loads(starts_f.read_text())
    bw = rate_bps / 8
    rows = []
    for d in sizes:
        times = [arrivals[k] - s for k, (s, dd, rep) in starts.items() if dd == d and rep > 0]
        measured = statistics.median(times)
        row: dict[str, Any] = {
            "floats": d,
            "payload_bytes": 4 * d,
            "measured_ms": round(1e3 * measured, 3),
        }
        for name, header in headers.items():
            cfg = NetworkConfig(latency_s=latency_s, bandwidth_Bps=bw, header_bytes=header)
            model = LinkModel(cfg, {}, 1, 0)
            pred = float(model.delay(torch.zeros(1, dtype=torch.int64), 4 * d + header)[0])
            row[f"model_{name}_ms"] = round(1e3 * pred, 3)
            row[f"error_{name}"] = round((pred - measured) / measured, 4)
        rows.append(row)
    return {
        "rate_bps": rate_bps,
        "latency_s": latency_s,
        "repeats": repeats,
        "rows": rows,
        "tc_bytes": tc_bytes,
        "namespaces": [link.a, link.b],
    }


def main(argv: list[str]) -> None:
    role = argv[0]
    if role == "receiver":
        receiver(argv[1], int(argv[2]), argv[3])
    elif role == "relay":
        relay(argv[1], int(argv[2]), argv[3], float(argv[4]))
    elif role == "sender":
        sender(argv[1], [int(s) for s in argv[2].split(",")], int(argv[3]), float(argv[4]), argv[5])
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Two of the three meters of the gRPC data plane: frame bytes and kernel socket bytes.

* **gRPC frame bytes** of a payload: every frame's serialized size plus gRPC's 5-byte
  length prefix, and the 5 bytes of the (empty) response message
  (:meth:`LinkMeter.add`).
* **Wire bytes**: what the kernel's TCP sockets carried, read with ``ss -tinp``
  (``bytes_sent`` + ``bytes_received`` of every established socket this process
  holds towards a peer's server: both directions of the connection the sender opened,
  so HTTP/2 headers, settings, window updates and pings included). TCP/IP headers and
  link framing are not in it (interface counters would add them).

The third meter, logical bytes, is :class:`~fedopt.network.meter.Meter`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

from fedopt.transport.wire import GRPC_PREFIX

_PID = re.compile(r"pid=(\d+),")
_SENT = re.compile(r"\bbytes_sent:(\d+)")
_RECV = re.compile(r"\bbytes_received:(\d+)")


@dataclass
class LinkMeter:
    """Counts of the payloads one worker sent to one peer."""

    payloads: int = 0
    frames: int = 0
    grpc_bytes: int = 0
    attempts: int = 0
    wire_bytes: int | None = None

    def add(self, frame_sizes: list[int]) -> None:
        """One attempt of one payload with frames of these serialized sizes."""
        self.attempts += 1
        self.frames += len(frame_sizes)
        self.grpc_bytes += sum(frame_sizes) + GRPC_PREFIX * (len(frame_sizes) + 1)


@dataclass
class TransportStats:
    """Per-peer meters of one worker (``links[dst]``) and what it received."""

    rank: int
    links: dict[int, LinkMeter] = field(default_factory=dict)
    received_payloads: int = 0
    received_grpc_bytes: int = 0
    wire_source: str = "ss"
    nodes: list[int] = field(default_factory=list)  # node ids the worker hosts


def _norm(addr: str) -> str:
    """``[::ffff:127.0.0.1]:50051`` -> ``127.0.0.1:50051`` (ss prints v4-mapped v6)."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    if host.startswith("::ffff:"):
        host = host[len("::ffff:") :]
    return f"{host}:{port}"


def socket_bytes(addresses: dict[int, str], pid: int | None = None) -> dict[int, int | None] | None:
    """TCP payload bytes (both directions) of this process's sockets to each address.

    ``addresses`` maps a peer rank to its ``host:port``; the result maps it to
    ``bytes_sent + bytes_received`` summed over the established sockets of process
    ``pid`` (default: this one) with that destination, or None for a peer with no such
    socket (closed, or not visible to this user). None when ``ss`` is missing.
    """
    exe = shutil.which("ss")
    if exe is None:
        return None
    pid = os.getpid() if pid is None else pid
    want = {_norm(a): r for r, a in addresses.items()}
    res = subprocess.run(
        [exe, "-tinpH", "state", "established"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    out: dict[int, int | None] = dict.fromkeys(addresses)
    rank: int | None = None
    for line in res.stdout.splitlines():
        if not line[:1].isspace():  # a socket's line; its tcp_info follows, indented
            fields = line.split()
            mine = pid in {int(p) for p in _PID.findall(line)}
            rank = want.get(_norm(fields[3])) if mine and len(fields) > 3 else None
            continue
        if rank is not None:
            sent, recv = _SENT.search(line), _RECV.search(line)
            got = (int(sent.group(1)) if sent else 0) + (int(recv.group(1)) if recv else 0)
            out[rank] = (out[rank] or 0) + got
    return out

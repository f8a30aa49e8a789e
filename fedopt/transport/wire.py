"""Payloads to gRPC frames and back: a fixed binary header, raw tensor bytes in chunks.

A payload (whatever a worker hands its mailbox: tuples, lists, dicts, dataclasses of
``fedopt`` such as block partials, numbers, strings, torch tensors and numpy arrays)
becomes one client stream of frames:

* **frame 0**: a fixed 36-byte header (:data:`HEAD`: magic ``FOPW``, version, source
  and destination worker, number of frames, data bytes, lengths of the two tables),
  the *structure* (the exchange key and the payload with every tensor replaced by its
  index, in a small tagged encoding: never pickle, so a peer cannot make the receiver
  run code), the *tensor table* (per tensor: dtype code, numpy or torch, offset, byte
  length, shape) and, when room is left under ``chunk_bytes``, the first data bytes;
* **frames 1..k**: a 4-byte sequence number and at most ``chunk_bytes`` raw bytes.

The data region is every tensor's raw bytes (C order, native little-endian) at offsets
aligned to 8 bytes, so the receiver rebuilds each tensor as a view of one buffer, with
the same bits. ``chunk_bytes = 0`` sends the whole payload as frame 0; a payload that
would exceed the gRPC message cap is then refused (:class:`WireError`). This is a
fixed binary layout rather than protobuf messages: the tensor bytes dominate, and a
struct header costs no code generation and no copies of the chunk bytes beyond one.
"""

from __future__ import annotations

import dataclasses
import importlib
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

MAGIC = b"FOPW"
VERSION = 1
HEAD = struct.Struct(
    "<4sBBHIIIQII"
)  # magic, version, flags, 0, src, dst, frames, data, skel, table
SEQ = struct.Struct("<I")
TENSOR = struct.Struct("<BBHQQ")  # dtype code, 1 if numpy, ndim, offset, nbytes (+ ndim x u64)
ALIGN = 8
GRPC_PREFIX = 5  # gRPC's length-prefixed message: 1 flag byte + 4 length bytes

DTYPES: tuple[torch.dtype, ...] = (
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
    torch.complex64,
    torch.complex128,
)
CODE = {d: i for i, d in enumerate(DTYPES)}


class WireError(ValueError):
    """A payload that cannot be framed (unsupported type, over the message cap)."""


@dataclasses.dataclass
class Encoded:
    """One payload as frames: ``frames()`` yields them (again for a resend)."""

    head: bytes
    segments: list[tuple[int, memoryview]]  # (offset in the data region, raw bytes)
    data_bytes: int
    chunk_bytes: int
    inline: int  # data bytes carried by frame 0

    @property
    def num_frames(self) -> int:
        rest = self.data_bytes - self.inline
        return 1 + (0 if rest <= 0 else -(-rest // self.chunk_bytes))

    def frame_sizes(self) -> list[int]:
        """Serialized size of every frame (without gRPC's 5-byte prefix)."""
        sizes = [len(self.head) + self.inline]
        rest = self.data_bytes - self.inline
        while rest > 0:
            take = min(rest, self.chunk_bytes)
            sizes.append(SEQ.size + take)
            rest -= take
        return sizes

    def frames(self) -> Iterator[bytes]:
        """The frames in order; each call starts afresh (one copy of the data per frame)."""
        yield b"".join([self.head, *self._parts(0, self.inline)])
        start, seq = self.inline, 1
        while start < self.data_bytes:
            end = min(start + self.chunk_bytes, self.data_bytes)
            yield b"".join([SEQ.pack(seq), *self._parts(start, end)])
            start, seq = end, seq + 1

    def _parts(self, start: int, end: int) -> list[Any]:
        """Buffers covering bytes ``[start, end)`` of the data region (zero padding between
        tensors), as views of the tensors: ``b"".join`` then copies each byte once."""
        parts: list[Any] = []
        at = start
        for off, mv in self.segments:
            lo, hi = max(start, off), min(end, off + len(mv))
            if lo >= hi:
                continue
            if lo > at:
                parts.append(bytes(lo - at))
            parts.append(mv[lo - off : hi - off])
            at = hi
        if end > at:
            parts.append(bytes(end - at))
        return parts


def encode(
    key: Any, src: int, dst: int, payload: Any, chunk_bytes: int, max_message_bytes: int
) -> Encoded:
    """Frame ``payload`` sent under ``key`` from worker ``src`` to worker ``dst``.

    Raises
    ------
    WireError
        When the payload holds a type the wire format does not carry, or when
        ``chunk_bytes == 0`` and the single frame would exceed ``max_message_bytes``.
    """
    tensors: list[tuple[torch.Tensor, bool]] = []
    skel = bytearray()
    _put(skel, (key, payload), tensors)
    table = bytearray()
    segments: list[tuple[int, memoryview]] = []
    offset = 0
    for t, is_numpy in tensors:
        flat = t.detach().contiguous().reshape(-1)
        raw = memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")
        offset = -(-offset // ALIGN) * ALIGN
        table += TENSOR.pack(CODE[t.dtype], int(is_numpy), t.ndim, offset, len(raw))
        table += struct.pack(f"<{t.ndim}Q", *t.shape)
        segments.append((offset, raw))
        offset += len(raw)
    data_bytes = offset
    head_len = HEAD.size + len(skel) + len(table)
    if chunk_bytes == 0:
        inline = data_bytes
        if head_len + inline > max_message_bytes:
            raise WireError(
                f"payload for worker {dst} is {head_len + inline} bytes in one frame, more "
                f"than engine.grpc.max_message_bytes={max_message_bytes}, and "
                "engine.grpc.chunk_bytes is 0 (no chunking); set engine.grpc.chunk_bytes "
                "(e.g. 1048576) or raise max_message_bytes"
            )
        chunk = max(1, data_bytes)
    else:
        if head_len > max_message_bytes:
            raise WireError(
                f"payload for worker {dst}: its structure and tensor table take {head_len} "
                f"bytes, more than engine.grpc.max_message_bytes={max_message_bytes}"
            )
        chunk = chunk_bytes
        inline = min(data_bytes, max(0, chunk_bytes - head_len))
    rest = data_bytes - inline
    frames = 1 + (0 if rest <= 0 else -(-rest // chunk))
    head = HEAD.pack(
        MAGIC, VERSION, 0, 0, src, dst, frames, data_bytes, len(skel), len(table)
    ) + bytes(skel + table)
    return Encoded(head, segments, data_bytes, chunk, inline)


class Decoder:
    """Reassembles one stream of frames into ``(src, dst, key, payload)``."""

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0  # serialized frame bytes received
        self._buf: bytearray | None = None
        self._at = 0
        self._head: tuple[Any, ...] | None = None

    def feed(self, frame: bytes) -> None:
        """Take the next frame of the stream."""
        self.frames += 1
        self.bytes += len(frame)
        if self._head is None:
            magic, version, _, _, src, dst, frames, data, skel_len, table_len = HEAD.unpack_from(
                frame
            )
            if magic != MAGIC or version != VERSION:
                raise WireError(f"not a fedopt frame (magic {magic!r}, version {version})")
            s0 = HEAD.size
            skel = memoryview(frame)[s0 : s0 + skel_len]
            table = memoryview(frame)[s0 + skel_len : s0 + skel_len + table_len]
            self._head = (src, dst, frames, data, bytes(skel), bytes(table))
            self._buf = bytearray(data)
            body = memoryview(frame)[s0 + skel_len + table_len :]
            self._buf[: len(body)] = body
            self._at = len(body)
            return
        (seq,) = SEQ.unpack_from(frame)
        if seq != self.frames - 1:
            raise WireError(f"frame {seq} arrived as frame {self.frames - 1} of its stream")
        body = memoryview(frame)[SEQ.size :]
        assert self._buf is not None
        self._buf[self._at : self._at + len(body)] = body
        self._at += len(body)

    def result(self) -> tuple[int, int, Any, Any]:
        """``(src, dst, key, payload)`` once every frame arrived."""
        if self._head is None or self._buf is None:
            raise WireError("empty stream: no frame arrived")
        src, dst, frames, data, skel, table = self._head
        if self.frames != frames or self._at != data:
            raise WireError(
                f"stream from worker {src} ended after {self.frames}/{frames} frames "
                f"({self._at}/{data} data bytes)"
            )
        tensors = _tensors(table, self._buf)
        (key, payload), _ = _get(skel, 0, tensors)
        return src, dst, key, payload


def _tensors(table: bytes, buf: bytearray) -> list[Any]:
    out: list[Any] = []
    pos = 0
    while pos < len(table):
        code, is_numpy, ndim, off, nbytes = TENSOR.unpack_from(table, pos)
        pos += TENSOR.size
        shape = struct.unpack_from(f"<{ndim}Q", table, pos)
        pos += 8 * ndim
        dtype = DTYPES[code]
        if nbytes:
            t = torch.frombuffer(buf, dtype=torch.uint8, count=nbytes, offset=off)
            t = t.view(dtype).reshape(shape)
        else:
            t = torch.empty(shape, dtype=dtype)
        out.append(t.numpy() if is_numpy else t)
    return out


# -- the structure: a small tagged encoding ---------------------------------------
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_U32 = struct.Struct("<I")


def _str(out: bytearray, s: str) -> None:
    raw = s.encode()
    out += _U32.pack(len(raw)) + raw


def _put(out: bytearray, v: Any, tensors: list[tuple[torch.Tensor, bool]]) -> None:
    if v is None:
        out += b"N"
    elif isinstance(v, (np.ndarray, np.generic)):
        arr = np.asarray(v)
        try:
            t = torch.from_numpy(arr if arr.flags.c_contiguous else arr.copy(order="C"))
        except TypeError:
            raise WireError(f"numpy dtype {arr.dtype} is not carried by the wire format") from None
        out += (b"g" if isinstance(v, np.generic) else b"a") + _U32.pack(len(tensors))
        tensors.append((t, True))
    elif v is True or v is False:
        out += b"T" if v else b"F"
    elif isinstance(v, int) and not isinstance(v, bool):
        if -(1 << 63) <= v < (1 << 63):
            out += b"i" + _I64.pack(v)
        else:
            out += b"I"
            _str(out, str(v))
    elif isinstance(v, float):
        out += b"f" + _F64.pack(v)
    elif isinstance(v, str):
        out += b"s"
        _str(out, v)
    elif isinstance(v, bytes):
        out += b"b" + _U32.pack(len(v)) + v
    elif isinstance(v, torch.Tensor):
        if v.dtype not in CODE:
            raise WireError(f"tensor dtype {v.dtype} is not carried by the wire format")
        out += b"t" + _U32.pack(len(tensors))
        tensors.append((v.cpu(), False))
    elif isinstance(v, (tuple, list)):
        out += (b"(" if isinstance(v, tuple) else b"[") + _U32.pack(len(v))
        for x in v:
            _put(out, x, tensors)
    elif isinstance(v, dict):
        out += b"{" + _U32.pack(len(v))
        for k, x in v.items():
            _put(out, k, tensors)
            _put(out, x, tensors)
    elif dataclasses.is_dataclass(v) and type(v).__module__.startswith("fedopt."):
        cls = type(v)
        fields = dataclasses.fields(v)
        out += b"D"
        _str(out, cls.__module__)
        _str(out, cls.__qualname__)
        out += _U32.pack(len(fields))
        for f in fields:
            _str(out, f.name)
            _put(out, getattr(v, f.name), tensors)
    else:
        raise WireError(
            f"a payload holds a {type(v).__module__}.{type(v).__qualname__}, which the gRPC "
            "wire format does not carry (tensors, arrays, numbers, strings, containers and "
            "fedopt dataclasses)"
        )


def _rstr(b: bytes, pos: int) -> tuple[str, int]:
    (n,) = _U32.unpack_from(b, pos)
    return b[pos + 4 : pos + 4 + n].decode(), pos + 4 + n


def _get(b: bytes, pos: int, tensors: list[Any]) -> tuple[Any, int]:
    tag = b[pos : pos + 1]
    pos += 1
    if tag == b"N":
        return None, pos
    if tag in (b"T", b"F"):
        return tag == b"T", pos
    if tag == b"i":
        return _I64.unpack_from(b, pos)[0], pos + 8
    if tag == b"I":
        s, pos = _rstr(b, pos)
        return int(s), pos
    if tag == b"f":
        return _F64.unpack_from(b, pos)[0], pos + 8
    if tag == b"s":
        return _rstr(b, pos)
    if tag == b"b":
        (n,) = _U32.unpack_from(b, pos)
        return bytes(b[pos + 4 : pos + 4 + n]), pos + 4 + n
    if tag in (b"t", b"a"):
        return tensors[_U32.unpack_from(b, pos)[0]], pos + 4
    if tag == b"g":
        return tensors[_U32.unpack_from(b, pos)[0]][()], pos + 4
    if tag in (b"(", b"["):
        (n,) = _U32.unpack_from(b, pos)
        pos += 4
        items = []
        for _ in range(n):
            x, pos = _get(b, pos, tensors)
            items.append(x)
        return (tuple(items) if tag == b"(" else items), pos
    if tag == b"{":
        (n,) = _U32.unpack_from(b, pos)
        pos += 4
        d = {}
        for _ in range(n):
            k, pos = _get(b, pos, tensors)
            d[k], pos = _get(b, pos, tensors)
        return d, pos
    if tag == b"D":
        module, pos = _rstr(b, pos)
        qualname, pos = _rstr(b, pos)
        cls = _dataclass(module, qualname)
        (n,) = _U32.unpack_from(b, pos)
        pos += 4
        kwargs = {}
        for _ in range(n):
            name, pos = _rstr(b, pos)
            kwargs[name], pos = _get(b, pos, tensors)
        return cls(**kwargs), pos
    raise WireError(f"unknown tag {tag!r} in a frame's structure")


def _dataclass(module: str, qualname: str) -> type:
    """A ``fedopt`` dataclass by name (nothing else may be built from the wire)."""
    if not module.startswith("fedopt."):
        raise WireError(f"refusing to build {module}.{qualname} from the wire")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and dataclasses.is_dataclass(obj)):
        raise WireError(f"{module}.{qualname} is not a dataclass")
    return obj

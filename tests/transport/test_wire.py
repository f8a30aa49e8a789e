"""The wire format: every payload the engines send comes back with the same bits."""

import numpy as np
import pytest
import torch

from fedopt.engine.reduce import BlockPartials
from fedopt.transport.wire import DTYPES, HEAD, SEQ, Decoder, WireError, encode


def roundtrip(payload, chunk: int = 1 << 20, cap: int = 4 << 20, key=3):
    enc = encode(key, 1, 2, payload, chunk, cap)
    frames = list(enc.frames())
    assert [len(f) for f in frames] == enc.frame_sizes()
    dec = Decoder()
    for f in frames:
        dec.feed(f)
    return dec.result(), frames


def test_every_dtype_and_structure_round_trips_bit_for_bit() -> None:
    g = torch.Generator().manual_seed(0)
    tensors = [(torch.randn(3, 4, generator=g) * 100).to(d) for d in DTYPES]
    partials = BlockPartials(full={0: torch.randn(5, dtype=torch.float64, generator=g)})
    partials.split[1] = (torch.arange(2), torch.randn(2, 5, generator=g), None)
    payload = (
        tensors,
        {"clock": np.arange(4, dtype=np.int64), ("first_k", 2): np.float64(2.5)},
        partials,
        None,
        True,
        -(1 << 70),
        float("inf"),
        "s",
        torch.zeros((0, 7)),
        torch.randn(6, 6, generator=g).t(),  # not contiguous
    )
    for chunk in (0, 64 * 1024 + 8, 1 << 20):
        (src, dst, key, got), _ = roundtrip(payload, chunk=max(chunk, 0), key=("first_k", 9))
        assert (src, dst, key) == (1, 2, ("first_k", 9))
        for a, b in zip(got[0], tensors, strict=True):
            assert a.dtype == b.dtype and torch.equal(a.view(torch.uint8), b.view(torch.uint8))
        assert np.array_equal(got[1]["clock"], payload[1]["clock"])
        assert type(got[1][("first_k", 2)]) is np.float64 and got[1][("first_k", 2)] == 2.5
        assert torch.equal(got[2].full[0], partials.full[0])
        assert torch.equal(got[2].split[1][1], partials.split[1][1]) and got[2].split[1][2] is None
        assert got[3:8] == (None, True, -(1 << 70), float("inf"), "s")
        assert got[8].shape == (0, 7) and torch.equal(got[9], payload[9])


def test_chunks_stay_below_the_chunk_size_and_count_exactly() -> None:
    x = torch.arange(700_000, dtype=torch.float32)  # 2.8 MB
    chunk = 1 << 20
    (_, _, _, got), frames = roundtrip((x, None), chunk=chunk)
    assert torch.equal(got[0], x)
    assert all(len(f) <= chunk + SEQ.size for f in frames)
    assert len(frames) == 3  # 2,800,000 data bytes: the head frame fills one chunk first
    assert sum(len(f) for f in frames[1:]) - 2 * SEQ.size + len(frames[0]) - 2_800_000 > HEAD.size


def test_one_frame_over_the_cap_is_refused_without_chunking() -> None:
    x = torch.zeros(2_000_000, dtype=torch.float32)  # 8 MB
    with pytest.raises(WireError, match=r"max_message_bytes=4194304.*chunk_bytes is 0"):
        encode(1, 0, 5, (x,), 0, 4 << 20)
    (_, _, _, got), frames = roundtrip((x,), chunk=1 << 20)
    assert len(frames) == 8 and torch.equal(got[0], x)


def test_unknown_types_and_foreign_dataclasses_are_refused() -> None:
    with pytest.raises(WireError, match=r"builtins.set.*does not carry"):
        encode(1, 0, 1, ({1, 2},), 1 << 20, 4 << 20)
    enc = encode(1, 0, 1, (None,), 1 << 20, 4 << 20)
    bad = bytearray(next(enc.frames()))
    bad[:4] = b"XXXX"
    with pytest.raises(WireError, match="not a fedopt frame"):
        Decoder().feed(bytes(bad))
    dec = Decoder()
    dec.feed(next(encode(1, 0, 1, (torch.zeros(400_000),), 1 << 20, 4 << 20).frames()))
    with pytest.raises(WireError, match=r"ended after 1/2 frames"):
        dec.result()

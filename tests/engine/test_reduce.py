"""Canonical sums are identical bit for bit however the rows are split across workers."""

import torch

from fedopt.engine.reduce import block_partials, canonical_sum, combine_partials


def test_partials_from_any_split_equal_the_canonical_sum() -> None:
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(37, 5, generator=g)
    w = torch.rand(37, generator=g)
    ref = canonical_sum(rows, w, block=8)
    for cuts in ([37], [10, 27], [3, 5, 13, 16], [1] * 37):
        parts, a = [], 0
        for c in cuts:
            pos = torch.arange(a, a + c)
            parts.append(block_partials(rows[a : a + c], pos, 37, w[a : a + c], block=8))
            a += c
        assert torch.equal(combine_partials(parts, rows[0]), ref)


def test_interleaved_ownership() -> None:
    rows = torch.randn(20, 3, dtype=torch.float64)
    ref = canonical_sum(rows, None, block=4)
    even, odd = torch.arange(0, 20, 2), torch.arange(1, 20, 2)
    parts = [
        block_partials(rows[even], even, 20, None, 4),
        block_partials(rows[odd], odd, 20, None, 4),
    ]
    assert torch.equal(combine_partials(parts, rows[0]), ref)

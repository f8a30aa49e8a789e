"""Canonical, placement-independent reductions.

Floating-point sums depend on their order. To give bitwise-identical results on every
engine, fedopt sums per-node rows in a *canonical order*: rows sorted by global node
id, cut into consecutive blocks of ``block`` rows by position in that sorted list;
each block is reduced with ``(rows * w[:, None]).sum(0)`` and the block sums are
added left to right. A distributed engine reproduces this by computing whole blocks
where they live (or shipping the rows of split blocks).
"""

from __future__ import annotations

import torch


def block_sum(rows: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted sum of one block of rows: ``sum_i w_i rows_i`` (deterministic)."""
    if weights is None:
        return rows.sum(0)
    return (rows * weights.to(rows.dtype).unsqueeze(1)).sum(0)


def canonical_sum(
    rows: torch.Tensor, weights: torch.Tensor | None = None, block: int = 1024
) -> torch.Tensor:
    """Weighted sum of ``rows`` (already in node-id order) in canonical blocks."""
    total = torch.zeros(rows.shape[1:], dtype=rows.dtype, device=rows.device)
    for a in range(0, rows.shape[0], block):
        w = None if weights is None else weights[a : a + block]
        total += block_sum(rows[a : a + block], w)
    return total

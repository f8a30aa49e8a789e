"""Canonical, placement-independent reductions.

Floating-point sums depend on their order. To give bitwise-identical results on every
engine, fedopt sums per-node rows in a *canonical order*: each row has a global
position (its index in the sorted list of all participating node ids), rows are cut
into consecutive blocks of ``block`` positions, each block is reduced with
``(rows * w[:, None]).sum(0)`` and the block sums are added left to right.

A worker that hosts only some participants computes :func:`block_partials`: the sum
of every block it holds entirely, and the raw rows of blocks split with other
workers. :func:`combine_partials` merges the partials of all workers into exactly the
sum one worker holding every row would compute.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def block_sum(rows: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted sum of one block of rows: ``sum_i w_i rows_i`` (deterministic)."""
    if weights is None:
        return rows.sum(0)
    return (rows * weights.to(rows.dtype).unsqueeze(1)).sum(0)


def canonical_sum(
    rows: torch.Tensor, weights: torch.Tensor | None = None, block: int = 1024
) -> torch.Tensor:
    """Weighted sum of ``rows`` (all participants, in position order) in canonical blocks."""
    total = torch.zeros(rows.shape[1:], dtype=rows.dtype, device=rows.device)
    for a in range(0, rows.shape[0], block):
        w = None if weights is None else weights[a : a + block]
        total += block_sum(rows[a : a + block], w)
    return total


@dataclass
class BlockPartials:
    """A worker's share of a canonical sum.

    ``full`` maps block id -> block sum for blocks held entirely; ``split`` maps block
    id -> (positions, rows, weights) for blocks this worker holds only part of.
    """

    full: dict[int, torch.Tensor] = field(default_factory=dict)
    split: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = field(
        default_factory=dict
    )


def block_partials(
    rows: torch.Tensor,
    positions: torch.Tensor,
    total: int,
    weights: torch.Tensor | None = None,
    block: int = 1024,
) -> BlockPartials:
    """Partials of a canonical sum over ``total`` positions for the rows held here.

    ``positions`` must be sorted and refer to ``rows`` in the same order.
    """
    out = BlockPartials()
    if len(positions) == 0:
        return out
    ids = torch.div(positions, block, rounding_mode="floor")
    bounds = torch.unique_consecutive(ids, return_counts=True)
    start = 0
    for b, count in zip(bounds[0].tolist(), bounds[1].tolist(), strict=True):
        sl = slice(start, start + count)
        size = min(block, total - b * block)
        w = None if weights is None else weights[sl]
        if count == size:
            out.full[b] = block_sum(rows[sl], w)
        else:
            out.split[b] = (positions[sl], rows[sl], w)
        start += count
    return out


def combine_partials(parts: list[BlockPartials], like: torch.Tensor) -> torch.Tensor:
    """Sum of all workers' partials, equal bit for bit to :func:`canonical_sum`."""
    blocks: dict[int, torch.Tensor] = {}
    pieces: dict[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]] = {}
    for p in parts:
        blocks.update(p.full)
        for b, piece in p.split.items():
            pieces.setdefault(b, []).append(piece)
    for b, group in pieces.items():
        order = torch.argsort(torch.cat([g[0] for g in group]))
        rows = torch.cat([g[1] for g in group])[order]
        w = None
        if group[0][2] is not None:
            w = torch.cat([g[2] for g in group])[order]  # type: ignore[misc]
        blocks[b] = block_sum(rows, w)
    total = torch.zeros(like.shape, dtype=like.dtype, device=like.device)
    for b in sorted(blocks):
        total += blocks[b].to(like.device)
    return total

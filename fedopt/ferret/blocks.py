"""Ferret's parameter blocks and the allocation of bases to them.

Blocks (spec ``ferret.md`` section 3.4, the reference code's rule): the model's
parameter tensors, in layout (registration) order, are packed greedily; a new block
starts when adding the next tensor would exceed ``0.9 x median(tensor sizes)`` and the
current block is not empty. Large matrices get a block each, runs of small vectors
(biases, layer-norm pairs) share one.

Allocation of ``K`` bases over blocks of sizes ``d_l`` (spec pitfall F4), from the
update's block norms ``||Delta_l||``:

* ``paper`` (Prop. 2): ``K_l ~ ||Delta_l|| / rho(d_l)`` with ``sum_l K_l = K`` and
  ``K_l <= d_l`` (water-filling over the capped blocks, then largest remainders);
* ``reference`` (the code): ``K_l = min(d_l, max(floor(K ||Delta_l|| / max_l' ||Delta_l'||), 2))``,
  so the largest block gets ``K`` and ``sum_l K_l`` is not ``K``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from fedopt.ferret.bases import rho


@dataclass(frozen=True)
class Block:
    """Block ``index``: positions ``start .. stop - 1`` of the flat row, tensors ``names``."""

    index: int
    start: int
    stop: int
    names: tuple[str, ...]

    @property
    def size(self) -> int:
        return self.stop - self.start


def partition(entries: Sequence[tuple[str, int, int]], factor: float = 0.9) -> list[Block]:
    """Blocks of ``entries`` = ``(name, offset, numel)`` in row order (the 0.9 x median rule).

    The entries must tile the row ``[0, dim)`` contiguously, as a model layout does.
    """
    if not entries:
        raise ValueError("a model with no parameter tensors has no blocks")
    limit = factor * statistics.median(n for _, _, n in entries)
    blocks: list[Block] = []
    names: list[str] = []
    start = size = 0
    pos = entries[0][1]
    for name, offset, numel in entries:
        if offset != pos:
            raise ValueError(f"layout: tensor {name!r} starts at {offset}, expected {pos}")
        if names and size + numel > limit:
            blocks.append(Block(len(blocks), start, start + size, tuple(names)))
            names, start, size = [], offset, 0
        names.append(name)
        size += numel
        pos = offset + numel
    blocks.append(Block(len(blocks), start, start + size, tuple(names)))
    return blocks


def allocate_paper(norms: Sequence[float], dims: Sequence[int], K: int) -> list[int]:
    """``K_l ~ ||Delta_l|| / rho(d_l)``, ``sum K_l = min(K, sum d_l)``, ``0 <= K_l <= d_l``.

    Blocks whose cap binds get ``d_l``; the rest share what remains in proportion to
    their weights (all weights zero: in proportion to ``d_l``). Integer parts are
    completed by the largest remainders (ties: the lower block index).
    """
    L = len(dims)
    weights = [float(n) / rho(d) for n, d in zip(norms, dims, strict=True)]
    if not any(w > 0 for w in weights):
        weights = [float(d) for d in dims]
    total = min(int(K), sum(dims))
    share = [0.0] * L
    free = [i for i in range(L) if weights[i] > 0]
    left = float(total)
    while free:
        wsum = sum(weights[i] for i in free)
        capped = [i for i in free if left * weights[i] / wsum >= dims[i]]
        if not capped:
            for i in free:
                share[i] = left * weights[i] / wsum
            break
        for i in capped:
            share[i] = float(dims[i])
            left -= dims[i]
        free = [i for i in free if i not in capped]
    counts = [min(dims[i], math.floor(share[i])) for i in range(L)]
    rest = total - sum(counts)
    order = sorted(range(L), key=lambda i: (-(share[i] - math.floor(share[i])), i))
    for i in order:
        if rest <= 0:
            break
        if counts[i] < dims[i] and weights[i] > 0:
            counts[i] += 1
            rest -= 1
    for i in range(L):  # leftovers (only when weighted blocks are all full)
        while rest > 0 and counts[i] < dims[i]:
            counts[i] += 1
            rest -= 1
    return counts


def allocate_reference(
    norms: Sequence[float], dims: Sequence[int], K: int, minimum: int = 2
) -> list[int]:
    """``K_l = min(d_l, K, max(floor(K ||Delta_l|| / max ||Delta||), minimum))``."""
    top = max(float(n) for n in norms)
    out = []
    for n, d in zip(norms, dims, strict=True):
        k = math.floor(K * float(n) / top) if top > 0 else 0
        out.append(min(d, K, max(k, minimum)))
    return out

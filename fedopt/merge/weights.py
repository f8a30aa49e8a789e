"""Weight matching: permutations from the weights alone (git re-basin).

For a pair of models ``a`` (own) and ``b`` (other) with parameter tensors ``W_a^T``,
``W_b^T``, weight matching maximises the inner product of the aligned weights,

.. math:: \\max_{\\{\\sigma^g\\}} \\sum_T \\langle W_a^T, P(W_b^T) \\rangle,

where ``P`` applies every group's permutation to the axes it acts on (Ainsworth, Hayase
& Srinivasa, "Git Re-Basin", ICLR 2023, Alg. 1). The problem couples the groups through
the layers that sit between two of them; it is solved by coordinate descent: for one
group ``g``, with the other groups' permutations fixed, the objective is linear in
``sigma^g`` with score

.. math:: C^g_{uv} = \\sum_{(T, \\text{axis}) \\in g} \\langle W_a^T[u], P_{-g}(W_b^T)[v] \\rangle

(rows of the tensors along the group's axis, blocks of a flattened input included), a
linear assignment. Groups are visited in layout order; a sweep that improves no group
ends the descent (at most ``max_iter`` sweeps). Only parameters enter the score;
BatchNorm running statistics follow the permutation when it is applied.
"""

from __future__ import annotations

import torch

from fedopt.merge.apply import permute_groups
from fedopt.merge.assign import assign
from fedopt.models.layout import ParamLayout


def _rows(t: torch.Tensor, axis: int, units: int) -> torch.Tensor:
    """``[P, *shape]`` to ``[P, units, rest]``: unit rows along ``axis`` (blocks flattened)."""
    moved = t.movedim(axis + 1, 1)
    return moved.reshape(t.shape[0], units, -1)


def _score(layout: ParamLayout, group: str, Xa: torch.Tensor, Xb: torch.Tensor) -> torch.Tensor:
    g = layout.groups[group]
    Ta, Tb = layout.unflatten(Xa), layout.unflatten(Xb)
    C = torch.zeros(len(Xa), g.units, g.units, dtype=torch.float64, device=Xa.device)
    for ax in g.axes:
        if ax.tensor not in Ta:  # a buffer: not part of the weights' score
            continue
        a = _rows(Ta[ax.tensor].to(torch.float64), ax.axis, g.units)
        b = _rows(Tb[ax.tensor].to(torch.float64), ax.axis, g.units)
        C += a @ b.transpose(1, 2)
    return C


def weight_matching_perms(
    layout: ParamLayout,
    Xa: torch.Tensor,
    Xb: torch.Tensor,
    groups: list[str] | None = None,
    max_iter: int = 100,
) -> tuple[dict[str, torch.Tensor], int]:
    """Permutations ``{group: [P, C_g]}`` aligning ``Xb``'s units to ``Xa``'s by their weights.

    Parameters
    ----------
    layout
        The model's layout.
    Xa, Xb
        ``[P, dim]`` parameter rows of the own and the other model of each pair.
    groups
        Groups to match (default: every group of the layout).
    max_iter
        Most sweeps over the groups.

    Returns
    -------
    tuple
        ``(perms, assignments)``: the permutations and the number of linear assignments
        solved per pair.
    """
    names = list(layout.groups) if groups is None else list(groups)
    P = len(Xa)
    perms = {
        g: torch.arange(layout.groups[g].units).unsqueeze(0).repeat(P, 1).to(Xa.device)
        for g in names
    }
    solved = 0
    for _ in range(max_iter):
        improved = False
        for g in names:
            others = {h: p for h, p in perms.items() if h != g}
            Xo, _ = permute_groups(layout, Xb, None, others)
            C = _score(layout, g, Xa, Xo)
            new = assign(C)
            solved += 1
            old_val = C.gather(2, perms[g].unsqueeze(2)).sum(dim=(1, 2))
            new_val = C.gather(2, new.to(C.device).unsqueeze(2)).sum(dim=(1, 2))
            better = new_val > old_val + 1e-12 * old_val.abs().clamp_min(1.0)
            if bool(better.any()):
                perms[g] = torch.where(better.unsqueeze(1), new.to(Xa.device), perms[g])
                improved = True
        if not improved:
            break
    return perms, solved

"""Apply one permutation per unit group to node-batched state rows."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fedopt.models.layout import ParamLayout


def permute_groups(
    layout: ParamLayout,
    X: torch.Tensor,
    B: torch.Tensor | None,
    perms: Mapping[str, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Permute the units of every group in ``perms`` (``{group: [k, units]}``) of ``(X, B)``.

    ``X [k, dim]`` are parameter rows and ``B [k, buf_dim]`` buffer rows (or None when
    the model's statistics do not travel); every tensor axis of a group (producers'
    outputs, BatchNorm statistics, consumers' inputs) takes the group's permutation
    (:meth:`ParamLayout.permute`). Groups act on distinct axes, so the order does not
    matter. Returns new rows; the inputs are not modified.
    """
    keep = B is not None and B.shape[1] == layout.buf_dim and layout.buf_dim > 0
    # rows without travelling buffers (BatchNorm on batch statistics): scratch statistics
    Bw = B if keep else (layout.init_buffers(len(X), X.dtype, X.device) if layout.buffers else None)
    for name in layout.groups:
        if name in perms:
            X, Bw = layout.permute(X, name, perms[name], Bw)
    return X, (Bw if keep else B)

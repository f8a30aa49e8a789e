"""The permutation of one model's units that best matches another's.

For a score matrix ``R [C, C]`` (``R[u, v]``: how well unit ``v`` of the other model
matches unit ``u`` of the own model), the matching is the permutation

.. math:: \\sigma^\\star = \\arg\\max_\\sigma \\sum_u R_{u, \\sigma(u)},

a linear assignment problem solved exactly by ``scipy.optimize.linear_sum_assignment``
(a shortest augmenting path / Hungarian method; about 17 ms at 512 x 512 on this
project's CPU). The result is returned in :meth:`ParamLayout.permute
<fedopt.models.layout.ParamLayout.permute>`'s convention: new unit ``u`` of the other
model is its old unit ``perm[u] = sigma(u)``, so after the permutation unit ``u`` of both
models is matched.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def assign(R: torch.Tensor) -> torch.Tensor:
    """Maximising assignment of every score matrix in ``R [.., C, C]``: perms ``[.., C]`` int64.

    Ties are broken by scipy's deterministic solver, so the result depends only on ``R``.
    """
    if R.ndim < 2 or R.shape[-1] != R.shape[-2]:
        raise ValueError(f"assign: expected square score matrices [.., C, C], got {list(R.shape)}")
    flat = R.detach().to(torch.float64).cpu().reshape(-1, R.shape[-1], R.shape[-1]).numpy()
    out = np.empty(flat.shape[:2], dtype=np.int64)
    for p, score in enumerate(flat):
        if not np.isfinite(score).all():
            raise ValueError("assign: the score matrix has NaN or infinite entries")
        rows, cols = linear_sum_assignment(score, maximize=True)
        out[p, rows] = cols
    return torch.from_numpy(out).reshape(R.shape[:-1])

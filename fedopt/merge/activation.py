"""Activation matching: one permutation per unit group from the models' features.

For a pair of models (own ``a``, other ``b``) run on the *same* calibration inputs, let
``A^g [S, C_g]`` and ``F^g [S, C_g]`` be their features at group ``g``'s capture point
(the input of the layers that consume the units, post-ReLU; samples x positions). The
permutation of ``b``'s units is

.. math:: \\sigma^g = \\arg\\max_\\sigma \\sum_u \\mathrm{corr}(A^g, F^g)_{u, \\sigma(u)},

one linear assignment per group (DIMAT, Saadati et al., CVPR 2024, Alg. 1 with ZipIt's
permutation matcher; Li et al. 2015 "convergent learning"). The features of the
*unpermuted* ``b`` are used for every group: permuting one group leaves the features at
the other groups' points unchanged (they are a function of the input only), so the
groups are matched independently and the permutations commute.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fedopt.merge.assign import assign
from fedopt.merge.correlation import EPS, correlation


def activation_perms(
    own: Mapping[str, torch.Tensor],
    other: Mapping[str, torch.Tensor],
    eps: float = EPS,
) -> dict[str, torch.Tensor]:
    """Permutations ``{group: [P, C_g]}`` aligning ``other``'s units to ``own``'s.

    Parameters
    ----------
    own, other
        ``{group: [P, S, C_g]}`` features of ``P`` model pairs at the same inputs (pair
        ``p``: row ``p`` of both).
    eps
        Floor of ``std * std`` in the correlation.
    """
    if set(own) != set(other):
        raise ValueError(
            f"activation_perms: features at different points: {sorted(own)} vs {sorted(other)}"
        )
    return {g: assign(correlation(own[g], other[g], eps)) for g in own}

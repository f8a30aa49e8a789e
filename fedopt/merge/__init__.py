"""Model merging by permutation alignment (DIMAT, git re-basin, ZipIt-style matching).

Two networks that compute the same function up to a relabelling of their hidden units
average badly unless the units are aligned first. These modules find, for every
permutable unit group of a model's :class:`~fedopt.models.ParamLayout`, a permutation of
one model's units that best matches another's, and apply it to every tensor axis the
group acts on (weights, biases, BatchNorm scale, shift and running statistics):

* :mod:`fedopt.merge.correlation`: Pearson correlation of two models' features;
* :mod:`fedopt.merge.assign`: the linear assignment that maximises the matched
  correlation (``scipy.optimize.linear_sum_assignment``);
* :mod:`fedopt.merge.activation`: activation matching, one assignment per group from the
  features at its capture point (DIMAT, Saadati et al., CVPR 2024; ZipIt's
  ``match_tensors_permute``);
* :mod:`fedopt.merge.weights`: weight matching, permutations from the weights alone by
  coordinate descent (Ainsworth, Hayase & Srinivasa, "Git Re-Basin", ICLR 2023);
* :mod:`fedopt.merge.apply`: applying one permutation per group to state rows.

Everything is batched over *pairs*: row ``p`` of the "own" tensors is matched with row
``p`` of the "other" tensors.
"""

from fedopt.merge.activation import activation_perms
from fedopt.merge.apply import permute_groups
from fedopt.merge.assign import assign
from fedopt.merge.correlation import correlation
from fedopt.merge.weights import weight_matching_perms

__all__ = [
    "activation_perms",
    "assign",
    "correlation",
    "permute_groups",
    "weight_matching_perms",
]

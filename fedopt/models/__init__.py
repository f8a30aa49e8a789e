"""Neural models batched over nodes.

Architectures are ordinary ``torch.nn.Module``s; every node's parameters are one row of
``X [k, dim]`` and its BatchNorm running statistics one row of ``B [k, buf_dim]``, with a
named :class:`ParamLayout` (tensor names, shapes, offsets, permutable unit axes). Forward,
loss, gradient, per-sample gradient and activation capture run through ``torch.func``
(``functional_call`` and ``vmap`` over nodes, ``grad``), with a loop over nodes where vmap
cannot run an operation.

Example (``inputs [4, b, 64]`` pixels, ``targets [4, b]`` labels)::

    model = MODELS.get("digits_cnn_bn")()
    X, B = model.init_params(seed=0, ranks=range(4)), model.init_buffers(4)
    G = model.grad(X, inputs, targets, B, train=True)  # [4, dim]; B updated in place
    B = reset_bn(model, X, inputs)                     # cumulative-average BN reset
"""

from fedopt.models.batched import BatchedModel, cross_entropy
from fedopt.models.bn import require_reset_data, reset_bn
from fedopt.models.layers import Dense
from fedopt.models.layout import Entry, ParamLayout, PermGroup, UnitAxis, unit_group
from fedopt.models.transformer import byte_lm, sequence_cross_entropy
from fedopt.models.zoo import MODELS, digits_cnn_bn, digits_mlp, synthetic_mlp

__all__ = [
    "MODELS",
    "BatchedModel",
    "Dense",
    "Entry",
    "ParamLayout",
    "PermGroup",
    "UnitAxis",
    "byte_lm",
    "cross_entropy",
    "digits_cnn_bn",
    "digits_mlp",
    "require_reset_data",
    "reset_bn",
    "sequence_cross_entropy",
    "synthetic_mlp",
    "unit_group",
]

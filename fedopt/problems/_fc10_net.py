"""The ``fc_10`` network of DIFF2 batched over nodes and samples, with explicit backprop.

``pred(x; a) = w2^T softplus(W1 a + b1) + b2``, ``W1 [hidden, features]``, squared error
``l_s = (pred_s - y_s)^2`` per sample (no 1/2, as ``torch.nn.MSELoss``). The flat row of a
node is ``torch.nn.Linear``'s registration order:

=============  =====================  =========================================
``fc1.weight``  ``[hidden, features]``  row major, offset 0
``fc1.bias``    ``[hidden]``            offset ``features * hidden``
``fc2.weight``  ``[1, hidden]``         offset ``features * hidden + hidden``
``fc2.bias``    ``[1]``                 last entry
=============  =====================  =========================================

(``dim = features * hidden + 2 * hidden + 1``: 101 for 8 inputs and 10 hidden units.)

Backpropagation of one sample, with ``z = W1 a + b1``, ``u = softplus(z)``,
``e = dl/dpred = 2 (pred - y)``:

    grad W1 = delta a^T,  grad b1 = delta,  grad w2 = v = e u,  grad b2 = e,
    delta = e * w2 * softplus'(z),

so a per-sample gradient is fixed by ``(delta [hidden], v [hidden], e)`` and the sample's
input, and is *linear* in that triple. Hence (ghost norms, no ``[k, S, dim]`` tensor)

    ||g_s||^2 = ||delta_s||^2 (||a_s||^2 + 1) + ||v_s||^2 + e_s^2,
    sum_s w_s g_s = (bmm((w delta)^T, A), w^T delta, w^T v, w^T e),

and the difference ``g_s(x) - g_s(x')`` on the same sample is the gradient of the triple
differences ``(delta - delta', e u - e' u', e - e')``: the first layer sees the same input
``a_s`` (``||(delta - delta') a^T||^2 = ||delta - delta'||^2 ||a||^2``), while the second
layer's inputs differ, so ``e u - e' u'`` is formed per sample (``[k, S, hidden]``) rather
than expanding ``e^2 ||u||^2 - 2 e e' <u, u'> + e'^2 ||u'||^2``, which cancels
catastrophically when ``x' ~ x`` (DIFF2's difference rounds).

Softplus is torch's (``beta = 1``, ``threshold = 20``): ``z`` above 20 passes through
with slope 1. It is computed as ``log1p(exp(min(z, 20)))`` and its slope as
``1 / (1 + exp(-z))``, element-wise kernels that round alike at every position of a
tensor (``torch.nn.functional.softplus`` and ``torch.sigmoid`` do not), so a node's
numbers do not depend on the other nodes of a call. Every sum over samples is a ``bmm``
(:func:`fedopt.numerics.bmm`).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from fedopt.models.layout import Entry, ParamLayout
from fedopt.numerics import bmm

SOFTPLUS_THRESHOLD = 20.0
"""Above this pre-activation softplus is the identity (``torch.nn.Softplus``'s default)."""


def softplus(z: torch.Tensor) -> torch.Tensor:
    """``log(1 + e^z)``, ``z`` itself above 20 (differentiable; no overflow)."""
    soft = torch.log1p(torch.exp(z.clamp(max=SOFTPLUS_THRESHOLD)))
    return torch.where(z > SOFTPLUS_THRESHOLD, z, soft)


def softplus_slope(z: torch.Tensor) -> torch.Tensor:
    """``d softplus / dz``: the logistic function, 1 above 20 (not differentiable)."""
    s = z.neg().exp_().add_(1.0).reciprocal_()
    return s.masked_fill_(z > SOFTPLUS_THRESHOLD, 1.0)


def fc10_module(features: int, hidden: int) -> nn.Module:
    """The network as a ``torch.nn`` module (the reference for tests and for users).

    Its ``named_parameters`` follow the flat layout of :class:`Fc10Net`; constructing it
    draws torch's own initial values from the global generator (they are not used by the
    problem, which draws from :mod:`fedopt.rng`).
    """
    return nn.Sequential(
        OrderedDict(
            [
                ("fc1", nn.Linear(features, hidden)),
                ("act", nn.Softplus()),
                ("fc2", nn.Linear(hidden, 1)),
            ]
        )
    )


class Fc10Net:
    """Layout and node-batched kernels of ``Linear(features, hidden) -> softplus ->
    Linear(hidden, 1)`` with squared error (module docstring).

    Shapes: parameter rows ``X [c, dim]``, inputs ``A [c, S, features]``, targets
    ``y [c, S]``; ``c`` nodes with ``S`` samples each.
    """

    def __init__(self, features: int, hidden: int) -> None:
        self.features = F = int(features)
        self.hidden = H = int(hidden)
        self.dim = F * H + 2 * H + 1
        self.layout = ParamLayout(
            (
                Entry("fc1.weight", (H, F), 0, ("uniform", F**-0.5)),
                Entry("fc1.bias", (H,), F * H, ("uniform", F**-0.5)),
                Entry("fc2.weight", (1, H), F * H + H, ("uniform", H**-0.5)),
                Entry("fc2.bias", (1,), F * H + 2 * H, ("uniform", H**-0.5)),
            )
        )
        """Fan-in uniform ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for every entry
        (``torch.nn.Linear``'s bound; :meth:`ParamLayout.init_params` draws it)."""

    def unflatten(
        self, X: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Views ``W1 [c, H, F]``, ``b1 [c, H]``, ``w2 [c, H]``, ``b2 [c]`` of the rows."""
        F, H, c = self.features, self.hidden, X.shape[0]
        return (
            X[:, : F * H].view(c, H, F),
            X[:, F * H : F * H + H],
            X[:, F * H + H : F * H + 2 * H],
            X[:, F * H + 2 * H],
        )

    def forward(
        self, X: torch.Tensor, A: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pre-activations ``z [c, S, H]``, activations ``u [c, S, H]`` and predictions
        ``[c, S]`` (differentiable in ``X``)."""
        W1, b1, w2, b2 = self.unflatten(X)
        z = bmm(A, W1.transpose(1, 2)) + b1.unsqueeze(1)
        u = softplus(z)
        pred = bmm(u, w2.unsqueeze(2)).squeeze(2) + b2.unsqueeze(1)
        return z, u, pred

    def deltas(
        self, X: torch.Tensor, A: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample ``(delta [c, S, H], v = e u [c, S, H], e [c, S])`` (module docstring);
        they fix every sample's gradient."""
        z, u, pred = self.forward(X, A)
        e = pred.sub_(y).mul_(2.0)
        w2 = self.unflatten(X)[2]
        delta = softplus_slope(z).mul_(w2.unsqueeze(1)).mul_(e.unsqueeze(2))
        return delta, u.mul_(e.unsqueeze(2)), e

    @staticmethod
    def norm2(
        A: torch.Tensor, delta: torch.Tensor, v: torch.Tensor, e: torch.Tensor
    ) -> torch.Tensor:
        """Squared norms ``[c, S]`` of the per-sample gradients of ``(delta, v, e)`` on the
        inputs ``A``: ``||delta||^2 (||a||^2 + 1) + ||v||^2 + e^2``."""
        asq1 = torch.linalg.vector_norm(A, dim=2).square_().add_(1.0)
        out = delta.square().sum(dim=2).mul_(asq1)
        return out.add_(v.square().sum(dim=2)).add_(e.square())

    def weighted_sum(
        self,
        A: torch.Tensor,
        delta: torch.Tensor,
        v: torch.Tensor,
        e: torch.Tensor,
        w: torch.Tensor,
    ) -> torch.Tensor:
        """``sum_s w_s g_s [c, dim]`` for sample weights ``w [c, S]``."""
        F, H, c = self.features, self.hidden, A.shape[0]
        out = torch.empty(c, self.dim, dtype=A.dtype, device=A.device)
        wd = delta * w.unsqueeze(2)  # [c, S, H]
        out[:, : F * H] = bmm(wd.transpose(1, 2), A).reshape(c, F * H)
        wr = w.unsqueeze(1)  # [c, 1, S]
        out[:, F * H : F * H + H] = bmm(wr, delta).squeeze(1)
        out[:, F * H + H : F * H + 2 * H] = bmm(wr, v).squeeze(1)
        out[:, F * H + 2 * H] = bmm(wr, e.unsqueeze(2)).view(c)
        return out

    def per_sample(
        self, A: torch.Tensor, delta: torch.Tensor, v: torch.Tensor, e: torch.Tensor
    ) -> torch.Tensor:
        """The per-sample gradients themselves, ``[c, S, dim]``."""
        c, S = e.shape
        W1 = (delta.unsqueeze(3) * A.unsqueeze(2)).reshape(c, S, -1)
        return torch.cat([W1, delta, v, e.unsqueeze(2)], dim=2)

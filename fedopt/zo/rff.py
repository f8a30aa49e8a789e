"""Random Fourier features: a GP surrogate whose weights can be sent and averaged.

Rahimi & Recht's features for the SE kernel with lengthscale ``l`` (Shu et al., FZooS,
section 3.2, global surrogate; appendix: the normaliser is ``sqrt(2/M)``, not the
``2/sqrt(M)`` printed there)::

    phi(x) = sqrt(2/M) cos(W^T x + b),   W[:, j] ~ N(0, l^-2 I_d),  b_j ~ U[0, 2 pi)
    E[phi(x)^T phi(x')] = exp(-||x - x'||^2 / (2 l^2))
    |phi(x)^T phi(x') - k(x, x')| <= sqrt(8 ln(2/delta) / M)   w.p. 1 - delta (a pair; Lemma 3)

``W`` and ``b`` come from the keyed counter RNG (:mod:`fedopt.rng`, purposes
``fzoos_rff_weights`` keyed by the input coordinate and ``fzoos_rff_offsets``), so the
server and every client draw the same bits from the experiment seed alone. Client ``i``
fits its weights on its neighbourhood ``X_i [n, d]`` with min-max scaled targets ``y'``
(pitfall P5) as the ridge solution in its dual form, ``n x n`` instead of ``M x M``
(pitfall P9: ``s2 >= 1e-6`` for stability; the reference's ``alpha = 0`` is the
min-norm interpolant, its limit)::

    theta_i = Phi_i^T (Phi_i Phi_i^T + s2 I)^{-1} y'_i          (Phi_i = [phi(x_t)^T]_t, n x M)
    m_i(x) = phi(x)^T theta_i
    grad m_i(x) = -sqrt(2/M) W (theta_i * sin(W^T x + b))

The surrogate is linear in ``theta``, so the server's ``theta_bar = sum_i p_i span_i
theta_i`` (weights rescaled by each client's ``span``) is the weight vector of
``sum_i p_i m_i`` on the original scale, evaluable anywhere.
"""

from __future__ import annotations

import math

import torch

from fedopt import rng
from fedopt.errors import ConfigError
from fedopt.zo.gp import minmax

WEIGHTS_PURPOSE = "fzoos_rff_weights"
OFFSETS_PURPOSE = "fzoos_rff_offsets"


def check_features(count: int, field: str = "features") -> None:
    """Refuse a feature count ``M`` that is not an integer ``>= 1`` (ConfigError)."""
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        raise ConfigError(
            f"{field}: the number of random features M must be an integer >= 1, got "
            f"{count!r}; use e.g. 10000 (the paper) or 1000 (its ablation)"
        )


def features(
    seed: int, dim: int, count: int, lengthscale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The shared ``(W [dim, M], b [M])`` float64 of the seed (module doc).

    Row ``j`` of ``W`` is keyed by ``(seed, "fzoos_rff_weights", j, 0)`` and ``b`` by
    ``(seed, "fzoos_rff_offsets", 0, 0)``: every node that calls this with the same
    arguments gets the same bits, whichever worker it runs on.
    """
    check_features(count)
    if not (math.isfinite(lengthscale) and lengthscale > 0):
        raise ConfigError(
            f"rff_lengthscale: must be a finite number > 0, got {lengthscale!r}; use e.g. 1.0"
        )
    keys = rng.node_keys(seed, WEIGHTS_PURPOSE, torch.arange(dim, dtype=torch.int64), 0)
    W = rng.normal(keys, count, torch.float64) / lengthscale
    key = rng.node_keys(seed, OFFSETS_PURPOSE, torch.zeros(1, dtype=torch.int64), 0)
    b = (2.0 * math.pi) * rng.uniform(key, count, torch.float64)[0]
    return W, b


def _project(X: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``X W + b`` with one matrix product per client (``[c, n, d] -> [c, n, M]``)."""
    if X.ndim == 2:
        return X @ W + b
    return torch.bmm(X, W.expand(X.shape[0], *W.shape)) + b


def phi(X: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Features ``sqrt(2/M) cos(X W + b)``: ``[c, n, d] -> [c, n, M]`` (or 2-D)."""
    out = _project(X, W, b).cos_()
    return out.mul_(math.sqrt(2.0 / W.shape[1]))


def fit(
    X: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor,
    W: torch.Tensor,
    b: torch.Tensor,
    noise: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dual ridge fit of every client's weights on min-max scaled targets.

    ``X [c, n, d]``, ``y [c, n]``, ``mask [c, n]`` (padding rows take no part);
    ``noise`` is ``s2`` (> 0). Returns ``(theta [c, M], lo [c], span [c])``: the weights
    of the *scaled* targets; ``span * theta`` are the weights on the original scale
    (what the server averages).
    """
    scaled, lo, span = minmax(y, mask)
    F = phi(X, W, b) * mask.unsqueeze(-1)
    gram = torch.bmm(F, F.transpose(-1, -2))
    gram = gram + torch.diag_embed(torch.where(mask, noise, 1.0).to(gram.dtype))
    chol = torch.linalg.cholesky(gram)
    beta = torch.cholesky_solve(scaled.unsqueeze(-1), chol)  # [c, n, 1]
    theta = torch.bmm(F.transpose(-1, -2), beta).squeeze(-1)
    return theta, lo, span


def value(theta: torch.Tensor, x: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``m(x) = phi(x)^T theta`` per row: ``theta [c, M]``, ``x [c, d]`` -> ``[c]``."""
    return (phi(x, W, b) * theta).sum(-1)


def grad(theta: torch.Tensor, x: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``grad m(x) = -sqrt(2/M) W (theta * sin(W^T x + b))`` per row: ``[c, d]``.

    ``theta [c, M]`` (or ``[M]``, one weight vector for every row), ``x [c, d]``. Linear
    in ``theta``: ``grad`` of ``theta_bar - theta_i`` is the difference of gradients.
    """
    s = torch.sin(x @ W + b) * theta
    return (s @ W.T).mul_(-math.sqrt(2.0 / W.shape[1]))


def approximation_bound(count: int, delta: float) -> float:
    """``sqrt(8 ln(2/delta) / M)``: the kernel error bound of one pair w.p. ``1 - delta``."""
    return math.sqrt(8.0 * math.log(2.0 / delta) / count)

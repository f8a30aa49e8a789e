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
from dataclasses import dataclass

import torch

from fedopt import rng
from fedopt.errors import ConfigError
from fedopt.zo.align import bmm, gram, pad, up
from fedopt.zo.gp import check_noise, minmax

WEIGHTS_PURPOSE = "fzoos_rff_weights"
OFFSETS_PURPOSE = "fzoos_rff_offsets"


def check_features(count: int, field: str = "features") -> None:
    """Refuse a feature count ``M`` that is not an integer ``>= 1`` (ConfigError)."""
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        raise ConfigError(
            f"{field}: the number of random features M must be an integer >= 1, got "
            f"{count!r}; use e.g. 10000 (the paper) or 1000 (its ablation)"
        )


@dataclass(frozen=True)
class Features:
    """The shared random features: ``W [dim, M]``, ``b [M]`` float64, stored padded.

    ``W8 [d8, M8]`` and ``b8 [M8]`` hold them with zero rows and columns up to multiples
    of 8 (:mod:`fedopt.zo.align`); padded features are masked out of every fit and
    gradient (``theta`` is 0 there), so the surrogates are those of ``W, b``.
    """

    W8: torch.Tensor
    b8: torch.Tensor
    dim: int
    count: int

    @property
    def W(self) -> torch.Tensor:
        """``[dim, M]`` the weights, ``W[:, j] ~ N(0, l^-2 I)``."""
        return self.W8[: self.dim, : self.count]

    @property
    def b(self) -> torch.Tensor:
        """``[M]`` the offsets, ``b_j ~ U[0, 2 pi)``."""
        return self.b8[: self.count]

    def project(self, X: torch.Tensor) -> torch.Tensor:
        """``X W + b`` padded: ``[c, n, dim] -> [c, n, M8]``, one product per client."""
        X8 = pad(X, 2, self.W8.shape[0])
        return bmm(X8, self.W8.expand(X8.shape[0], *self.W8.shape)) + self.b8

    def column_mask(self) -> torch.Tensor:
        """``[M8]`` 1 on real features, 0 on padding."""
        m = torch.zeros(self.W8.shape[1], dtype=self.W8.dtype, device=self.W8.device)
        m[: self.count] = 1.0
        return m


def features(seed: int, dim: int, count: int, lengthscale: float) -> Features:
    """The shared :class:`Features` of the seed (module doc).

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
    W8 = pad(pad(W, 1, up(count)), 0, up(dim))
    return Features(W8, pad(b, 0, up(count)), dim, count)


def phi(X: torch.Tensor, feats: Features) -> torch.Tensor:
    """Features ``sqrt(2/M) cos(X W + b)``: ``[c, n, d] -> [c, n, M]`` (or ``[n, d]``)."""
    two = X.ndim == 2
    out = feats.project(X.unsqueeze(0) if two else X).cos_()[..., : feats.count]
    out = out.mul_(math.sqrt(2.0 / feats.count))
    return out[0] if two else out


def fit(
    X: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, feats: Features, noise: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dual ridge fit of every client's weights on min-max scaled targets.

    ``X [c, n, d]``, ``y [c, n]``, ``mask [c, n]`` (padding rows take no part);
    ``noise`` is ``s2`` (> 0). Returns ``(theta [c, M], lo [c], span [c])``: the weights
    of the *scaled* targets; ``span * theta`` are the weights on the original scale
    (what the server averages).
    """
    check_noise(noise, "rff_noise")
    scaled, lo, span = minmax(y, mask)
    n8 = up(X.shape[1])
    m8 = pad(mask, 1, n8, False)
    F = feats.project(pad(X, 1, n8)).cos_()
    F.mul_(feats.column_mask() * math.sqrt(2.0 / feats.count)).mul_(m8.unsqueeze(-1))
    G = gram(F)  # F F^T
    G = G + torch.diag_embed(torch.where(m8, noise, 1.0).to(G.dtype))
    chol = torch.linalg.cholesky(G)
    beta = torch.cholesky_solve(pad(scaled, 1, n8).unsqueeze(-1), chol)  # [c, n8, 1]
    theta = bmm(F.transpose(-1, -2), beta).squeeze(-1)
    return theta[:, : feats.count], lo, span


def value(theta: torch.Tensor, x: torch.Tensor, feats: Features) -> torch.Tensor:
    """``m(x) = phi(x)^T theta`` per row: ``theta [c, M]``, ``x [c, d]`` -> ``[c]``."""
    return (phi(x.unsqueeze(1), feats)[:, 0] * theta).sum(-1)


def grad(theta: torch.Tensor, x: torch.Tensor, feats: Features) -> torch.Tensor:
    """``grad m(x) = -sqrt(2/M) W (theta * sin(W^T x + b))`` per row: ``[c, d]``.

    ``theta [c, M]`` (or ``[M]``, one weight vector for every row), ``x [c, d]``. Linear
    in ``theta``: ``grad`` of ``theta_bar - theta_i`` is the difference of gradients.
    One product per client (batch independent, :mod:`fedopt.zo.align`).
    """
    c = x.shape[0]
    M8 = feats.W8.shape[1]
    th = pad(theta.expand(c, feats.count), 1, M8)
    s = torch.sin(feats.project(x.unsqueeze(1))) * th.unsqueeze(1)  # [c, 1, M8]
    out = bmm(s, feats.W8.T.expand(c, *feats.W8.T.shape))[:, 0, : feats.dim]
    return out.mul_(-math.sqrt(2.0 / feats.count))


def approximation_bound(count: int, delta: float) -> float:
    """``sqrt(8 ln(2/delta) / M)``: the kernel error bound of one pair w.p. ``1 - delta``."""
    return math.sqrt(8.0 * math.log(2.0 / delta) / count)

"""Batched Gaussian-process surrogates of client objectives and of their gradients.

Client ``i`` holds the (padded) history ``X_i [n, d]``, ``y_i [n]`` with a validity mask.
Targets are min-max scaled on the neighbourhood, ``y' = (y - lo) / (span + 1e-20)`` with
``lo = min y``, ``span = max y - min y`` (FZooS pitfall P5: gradients are scaled back by
``span``). With ``K = [k(x_t, x_s)]`` and noise variance ``s2`` the derived GP gives, at
any point ``x`` (Shu et al., FZooS, section 3.1; Rasmussen & Williams 2006, 9.4)::

    grad mu(x)    = span * J(x)^T (K + s2 I)^{-1} y'              J(x)_t = d/dx k(x, x_t)
    Sigma_grad(x) = c I - J(x)^T (K + s2 I)^{-1} J(x)             (d x d, c: kernels.gradient_prior)

With the kernels' form ``J(x)_t = -g_t (x - x_t)`` (:func:`~fedopt.zo.kernels.grad_factor`)
the mean gradient is ``-span * sum_t alpha_t g_t (x - x_t)`` with ``alpha = (K + s2 I)^{-1}
y'``: one Cholesky factorisation per client, batched over clients, no Jacobian. The
trace of ``Sigma_grad`` needs no Jacobian either: writing ``v = x - o`` and
``z_t = x_t - o`` around any centre ``o``, ``u_t = v.z_t``, ``P = Z Z^T``, ``A = (K + s2
I)^{-1}``::

    tr J^T A J = |v|^2 g^T A g - 2 (g * u)^T A g + g^T (A * P) g          (O(n^2) per x)
    tr Sigma_grad(x) = d c - tr J^T A J

(the paper scores candidate queries by ``||Sigma_grad||``; the reference code by the
variance of ``df/dx_1`` only, conditioned on a history it corrupts: pitfall P4).
``||Sigma_grad||_F`` and ``||Sigma_grad||_2`` are offered too; note that
``||Sigma_grad||_2 = c`` whenever the conditioning set has fewer points than ``d``
(``J^T A J`` then has a null space), so it cannot rank candidates there.

Masked (padding) entries take part as identity rows of ``K`` with zero target and zero
``g``, so they change nothing; sizes are padded further for batch independence
(:mod:`fedopt.zo.align`). Points are centred near the query point before
``|a|^2 + |b|^2 - 2 a.b`` distances are formed, which keeps them accurate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from fedopt.errors import ConfigError
from fedopt.zo.align import ALIGN, bmm, pad, up
from fedopt.zo.kernels import check_kernel, from_sqdist, grad_factor, gradient_prior, sqdist

Score = Literal["trace", "frobenius", "spectral"]
SCORES: tuple[str, ...] = ("trace", "frobenius", "spectral")
SPAN_EPS = 1e-20
"""Added to the min-max span before dividing (the reference's guard for constant ``y``)."""


def minmax(y: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Min-max scaling per client over the valid entries.

    Returns ``(y', lo, span)``: ``y' = (y - lo) / (span + 1e-20)`` (0 where masked),
    ``lo = min y``, ``span = max y - min y`` (``[c]`` each).
    """
    big = torch.finfo(y.dtype).max
    lo = torch.where(mask, y, big).amin(-1)
    hi = torch.where(mask, y, -big).amax(-1)
    span = hi - lo
    scaled = torch.where(mask, (y - lo.unsqueeze(-1)) / (span + SPAN_EPS).unsqueeze(-1), 0.0)
    return scaled, lo, span


def nearest(
    points: torch.Tensor,
    count: torch.Tensor,
    x: torch.Tensor,
    k: int,
    sq: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` history points nearest to ``x`` (Euclidean), per client.

    Distances are ``|h|^2 - 2 h.x + |x|^2`` with one matrix-vector product per client
    (reading the history once; a point's rank moves only on relative distance ties of
    about ``1e-16 |h|^2 / ||h - x||^2``).

    Parameters
    ----------
    points
        ``[c, H, d]`` padded histories; row ``j`` of client ``i`` is valid for
        ``j < count[i]``. Stored with ``H`` and ``d`` multiples of 8
        (:mod:`fedopt.zo.align`) it is used in place; otherwise it is copied padded.
    count
        ``[c]`` int64 valid rows.
    x
        ``[c, d']`` the points whose neighbourhoods are wanted (``d' <= d``; missing
        coordinates are zero, as the padding of ``points``).
    k
        Neighbourhood size (>= 1). A client with fewer than ``k`` points gets all of
        them (the rest masked): the reference's ``argsort(dists)[:k]`` on a short history.
    sq
        ``[c, >= H]`` the squared norms ``|h|^2`` of the rows, if kept with the history.

    Returns
    -------
    idx, mask
        ``[c, k']`` indices into ``points`` and their validity, ``k' = min(k, H)``, in
        order of increasing distance (ties: lower index first; stable sort). ``H`` is the
        batch's padded history length: clients with equal counts (FZooS) get ``k'``
        independent of their batch-mates.
    """
    _, H, d = points.shape
    aligned = points
    if H % ALIGN or d % ALIGN:
        aligned = pad(pad(points, 1, up(H)), 2, up(d))
    if sq is None:
        sq = points.square().sum(-1)
    sq = sq[:, :H]
    xa = pad(x, 1, aligned.shape[2])
    dot = bmm(aligned, xa.unsqueeze(-1))[:, :H, 0]
    dist = sq - 2.0 * dot + xa.square().sum(-1, keepdim=True)
    valid = torch.arange(H, device=points.device).unsqueeze(0) < count.unsqueeze(1)
    dist = torch.where(valid, dist, torch.inf)
    order = torch.sort(dist, dim=1, stable=True).indices[:, : min(k, H)]
    return order, torch.gather(valid, 1, order)


def take(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx [c, k]`` of ``points [c, H, ...]``: ``[c, k, ...]``."""
    shape = idx.shape + points.shape[2:]
    flat = idx.reshape(idx.shape[0], -1, *([1] * (points.ndim - 2))).expand(shape)
    return torch.gather(points, 1, flat)


def check_noise(noise: float, field: str = "noise") -> None:
    """Refuse a noise variance that is not a finite number ``> 0`` (ConfigError)."""
    if not (isinstance(noise, (int, float)) and 0 < noise < float("inf")):
        raise ConfigError(
            f"{field}: the noise variance added to the kernel matrix must be a finite "
            f"number > 0 (it keeps the Cholesky factorisation defined), got {noise!r}; "
            "use e.g. 1e-6"
        )


def _gram(
    P: torch.Tensor, mask: torch.Tensor, kernel: str, ls: float, noise: float
) -> torch.Tensor:
    """``K + s2 I`` from the inner products ``P = Z Z^T`` of centred points, masked rows
    replaced by identity rows."""
    check_kernel(kernel, ls)
    check_noise(noise)
    n = P.shape[1]
    sq = P.diagonal(dim1=-2, dim2=-1)
    r2 = (sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2.0 * P).clamp_min(0.0)
    both = mask.unsqueeze(-1) & mask.unsqueeze(-2)
    eye = torch.eye(n, dtype=P.dtype, device=P.device)
    K = torch.where(both, from_sqdist(r2, kernel, ls), 0.0)
    return K + eye * torch.where(mask, noise, 1.0).unsqueeze(-1)


@dataclass(frozen=True)
class Posterior:
    """A batched GP posterior over ``c`` clients' neighbourhoods (:func:`fit`).

    Sizes are padded for batch independence (:mod:`fedopt.zo.align`): ``n8 >= n`` set
    entries (the extra ones masked) and ``d8 >= d`` coordinates (the extra ones zero).

    Attributes
    ----------
    centre
        ``[c, d8]`` the point the inputs were centred at.
    Z
        ``[c, n8, d8]`` centred inputs ``x_t - centre`` (0 where masked).
    mask
        ``[c, n8]`` validity.
    chol
        ``[c, n8, n8]`` lower Cholesky factor of ``K + s2 I``.
    alpha
        ``[c, n8]`` ``(K + s2 I)^{-1} y'``.
    lo, span
        ``[c]`` the min-max scaling of the targets.
    kernel, lengthscale, noise
        The kernel, its lengthscale and the noise variance ``s2``.
    dim
        ``d``, the number of real coordinates.
    P
        ``[c, n8, n8]`` inner products ``Z Z^T`` (reused by :func:`grad_cov_scores_after`).
    width
        ``n``, the set size before padding.
    scale
        ``[c]`` ``1 / l_i`` when every client has its own lengthscale ``l_i`` (inputs are
        stored divided by ``l_i`` with ``lengthscale = 1``); None for one lengthscale.
    """

    centre: torch.Tensor
    Z: torch.Tensor
    mask: torch.Tensor
    chol: torch.Tensor
    alpha: torch.Tensor
    lo: torch.Tensor
    span: torch.Tensor
    kernel: str
    lengthscale: float
    noise: float
    dim: int
    P: torch.Tensor
    width: int
    scale: torch.Tensor | None = None


def _centred(X: torch.Tensor, mask: torch.Tensor, centre: torch.Tensor):
    """``(Z [c, n8, d8], mask [c, n8])``: masked, centred, padded inputs."""
    n8, d8 = up(X.shape[1]), up(X.shape[2])
    Z = torch.where(mask.unsqueeze(-1), X - centre.unsqueeze(1), 0.0)
    return pad(pad(Z, 2, d8), 1, n8), pad(mask, 1, n8, False)


def fit(
    X: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor,
    centre: torch.Tensor,
    kernel: str,
    lengthscale: float | torch.Tensor,
    noise: float,
) -> Posterior:
    """Fit every client's GP at once: min-max scale ``y``, factor ``K + s2 I``, solve.

    ``X [c, n, d]``, ``y [c, n]``, ``mask [c, n]``; ``centre [c, d]`` is where the
    inputs are centred (the point the gradient will be asked at is best). One batched
    Cholesky factorisation and one batched triangular solve for all clients.
    ``lengthscale`` is one number, or a ``[c]`` tensor of one per client (as
    :func:`select_lengthscale` gives): the inputs are then divided by ``l_i`` and the
    kernel has lengthscale 1, which is the same GP.
    """
    inv = None
    if isinstance(lengthscale, torch.Tensor):  # one per client: unit lengthscale on x / l_i
        inv = _inverse_lengthscales(lengthscale, X.shape[0])
        X, centre, lengthscale = X * inv.view(-1, 1, 1), centre * inv.view(-1, 1), 1.0
    Z, m = _centred(X, mask, centre)
    scaled, lo, span = minmax(y, mask)
    P = bmm(Z, Z.transpose(-1, -2))
    chol = torch.linalg.cholesky(_gram(P, m, kernel, lengthscale, noise))
    rhs = pad(scaled, 1, Z.shape[1]).unsqueeze(-1)
    alpha = torch.cholesky_solve(rhs, chol).squeeze(-1)
    c8 = pad(centre, 1, Z.shape[2])
    d, n = X.shape[2], X.shape[1]
    return Posterior(c8, Z, m, chol, alpha, lo, span, kernel, lengthscale, noise, d, P, n, inv)


def _inverse_lengthscales(lengthscale: torch.Tensor, c: int) -> torch.Tensor:
    """``1 / l_i`` ``[c]`` float64 of per-client lengthscales, refused unless all > 0."""
    ell = lengthscale.to(torch.float64).reshape(-1)
    if ell.shape != (c,) or not bool(torch.isfinite(ell).all() and (ell > 0).all()):
        raise ConfigError(
            f"lengthscale: per-client lengthscales must be {c} finite numbers > 0, got "
            f"{lengthscale.tolist()}; use positive values"
        )
    return 1.0 / ell


def _scaled(post: Posterior, x: torch.Tensor) -> torch.Tensor:
    """``x`` in the posterior's input units (divided by ``l_i`` when per client)."""
    if post.scale is None:
        return x
    return x * post.scale.view(-1, *([1] * (x.ndim - 1)))


def log_marginal(
    X: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor,
    centre: torch.Tensor,
    kernel: str,
    lengthscales: torch.Tensor,
    noise: float,
) -> torch.Tensor:
    """Log marginal likelihood of the min-max scaled targets for each lengthscale.

    ``log p(y' | X, l) = -1/2 y'^T (K_l + s2 I)^{-1} y' - 1/2 log det(K_l + s2 I) - n/2
    log(2 pi)`` (Rasmussen & Williams 2006, eq. 5.8), for every client and each of
    the ``G`` values of ``lengthscales``: ``[c, G]``, one batched Cholesky
    factorisation of ``c G`` matrices.
    """
    grid = torch.as_tensor(lengthscales, dtype=torch.float64).reshape(-1)
    if not bool(torch.isfinite(grid).all() and (grid > 0).all()):
        raise ConfigError(
            f"lengthscales: the ML-II grid must hold finite numbers > 0, got {grid.tolist()}"
        )
    Z, m = _centred(X, mask, centre)
    scaled, _, _ = minmax(y, mask)
    P = bmm(Z, Z.transpose(-1, -2))
    c, n8, G = Z.shape[0], Z.shape[1], len(grid)
    grams = torch.stack([_gram(P, m, kernel, float(ell), noise) for ell in grid], 1)
    chol = torch.linalg.cholesky(grams.reshape(c * G, n8, n8))
    rhs = pad(scaled, 1, n8).repeat_interleave(G, 0).unsqueeze(-1)
    alpha = torch.cholesky_solve(rhs, chol)
    fit = (rhs * alpha).sum((-1, -2)).reshape(c, G)
    logdet = 2.0 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1).reshape(c, G)
    n = mask.sum(-1, keepdim=True).to(torch.float64)
    return -0.5 * fit - 0.5 * logdet - 0.5 * n * math.log(2.0 * math.pi)


def select_lengthscale(
    X: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor,
    centre: torch.Tensor,
    kernel: str,
    lengthscales: torch.Tensor,
    noise: float,
) -> torch.Tensor:
    """ML-II over a grid: each client's lengthscale of largest :func:`log_marginal`
    (``[c]``; ties: the first grid value). The reference code maximises the same
    likelihood with L-BFGS from 20 random starts (scikit-learn); a log-spaced grid
    gives the maximiser to the grid's resolution, in one batched factorisation."""
    grid = torch.as_tensor(lengthscales, dtype=torch.float64).reshape(-1)
    best = log_marginal(X, y, mask, centre, kernel, grid, noise).argmax(-1)
    return grid[best]


def _cross(post: Posterior, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(v, r2)``: ``x - centre`` ``[c, m, d8]`` and squared distances ``[c, m, n8]``."""
    v = pad(_scaled(post, x), 2, post.Z.shape[2]) - post.centre.unsqueeze(1)
    return v, sqdist(v, post.Z)


def mean(post: Posterior, x: torch.Tensor) -> torch.Tensor:
    """Posterior mean on the original scale, ``lo + span k(x)^T alpha``: ``[c, m]`` for
    ``x [c, m, d]`` (``[c]`` for ``x [c, d]``)."""
    one = x.ndim == 2
    xs = x.unsqueeze(1) if one else x
    _, r2 = _cross(post, xs)
    k = torch.where(post.mask.unsqueeze(1), from_sqdist(r2, post.kernel, post.lengthscale), 0.0)
    out = post.lo.unsqueeze(-1) + post.span.unsqueeze(-1) * (k * post.alpha.unsqueeze(1)).sum(-1)
    return out[:, 0] if one else out


def mean_grad(post: Posterior, x: torch.Tensor) -> torch.Tensor:
    """Closed-form ``grad mu(x) = -span sum_t alpha_t g_t (x - x_t)``: ``[c, d]`` for
    ``x [c, d]`` (or ``[c, m, d]`` for ``x [c, m, d]``)."""
    one = x.ndim == 2
    xs = x.unsqueeze(1) if one else x
    v, r2 = _cross(post, xs)
    g = torch.where(post.mask.unsqueeze(1), grad_factor(r2, post.kernel, post.lengthscale), 0.0)
    w = g * post.alpha.unsqueeze(1)  # [c, m, n8]
    grad = -(w.sum(-1, keepdim=True) * v - bmm(w, post.Z)) * post.span.view(-1, 1, 1)
    grad = _scaled(post, grad[..., : post.dim])  # d/dx = (1 / l_i) d/d(x / l_i)
    return grad[:, 0] if one else grad


def grad_cov_scores(
    X: torch.Tensor,
    mask: torch.Tensor,
    centre: torch.Tensor,
    candidates: torch.Tensor,
    kernel: str,
    lengthscale: float | torch.Tensor,
    noise: float,
    score: str = "trace",
) -> torch.Tensor:
    """Size of ``Sigma_grad(x)`` at each candidate, conditioned on the points ``X``.

    Parameters
    ----------
    X, mask
        ``[c, n, d]`` conditioning inputs (history neighbourhood plus the current
        iterate, pitfall P4) and their validity; targets are not needed.
    centre
        ``[c, d]`` centring point (the current iterate).
    candidates
        ``[c, m, d]`` points to score.
    score
        ``"trace"`` (``tr Sigma_grad``, module doc), ``"frobenius"``
        (``||Sigma_grad||_F``) or ``"spectral"`` (``||Sigma_grad||_2``).

    Returns
    -------
    ``[c, m]`` float scores (larger: more uncertain). The trace costs ``O(m n^2 + m n
    d)`` per client; the Frobenius norm adds an ``n x n`` product per candidate and the
    spectral norm an ``n x n`` eigen-decomposition per candidate (only when ``n >= d``;
    below that it is ``c`` exactly, module doc).
    """
    if score not in SCORES:
        raise ValueError(f"score: {score!r} is not a score; use one of {', '.join(SCORES)}")
    if isinstance(lengthscale, torch.Tensor):  # per client: unit lengthscale on x / l_i
        inv = _inverse_lengthscales(lengthscale, X.shape[0])
        X, centre = X * inv.view(-1, 1, 1), centre * inv.view(-1, 1)
        out = grad_cov_scores(
            X, mask, centre, candidates * inv.view(-1, 1, 1), kernel, 1.0, noise, score
        )
        return out * inv.square().unsqueeze(-1)  # Sigma_grad scales with 1 / l_i^2
    Z, m = _centred(X, mask, centre)
    V = pad(candidates, 2, Z.shape[2]) - pad(centre, 1, Z.shape[2]).unsqueeze(1)
    return _scores(Z, m, None, V, X.shape[-1], kernel, lengthscale, noise, score)


def grad_cov_scores_after(
    post: Posterior, x: torch.Tensor, candidates: torch.Tensor, score: str = "trace"
) -> torch.Tensor:
    """:func:`grad_cov_scores` conditioned on ``post``'s inputs plus ``x [c, d]``.

    The set FZooS scores local candidates against (pitfall P4: the neighbourhood the
    step's GP was fitted on, plus the new iterate), centred at ``x``. The inner
    products of the neighbourhood are moved from the fit's centre ``o`` to ``x``
    (``(z_t - e).(z_s - e)`` with ``e = x - o``: ``O(n^2 + n d)``) instead of being
    formed again (``O(n^2 d)``); ``x`` itself takes the first padding slot (or a new
    block of them), which depends only on the neighbourhood size.
    """
    if score not in SCORES:
        raise ValueError(f"score: {score!r} is not a score; use one of {', '.join(SCORES)}")
    c, n8, d8 = post.Z.shape
    x, candidates = _scaled(post, x), _scaled(post, candidates)
    e = pad(x, 1, d8) - post.centre  # [c, d8]
    m = post.mask
    Z = torch.where(m.unsqueeze(-1), post.Z - e.unsqueeze(1), 0.0)
    u = (post.Z * e.unsqueeze(1)).sum(-1)  # z_t . e
    P = post.P - u.unsqueeze(-1) - u.unsqueeze(-2) + e.square().sum(-1).view(c, 1, 1)
    P = torch.where(m.unsqueeze(-1) & m.unsqueeze(-2), P, 0.0)
    slot = post.width
    if slot >= n8:  # no padding slot left: add a block (x sits at z = 0, zero products)
        n8 = n8 + ALIGN
        Z, P, m = pad(Z, 1, n8), pad(pad(P, 1, n8), 2, n8), pad(m, 1, n8, False)
    m = m.clone()
    m[:, slot] = True
    V = pad(candidates, 2, d8) - pad(x, 1, d8).unsqueeze(1)
    out = _scores(Z, m, P, V, post.dim, post.kernel, post.lengthscale, post.noise, score)
    if post.scale is not None:  # Sigma_grad in x = Sigma_grad in x / l_i, divided by l_i^2
        out = out * post.scale.square().unsqueeze(-1)
    return out


def _scores(
    Z: torch.Tensor,
    m: torch.Tensor,
    P: torch.Tensor | None,
    V: torch.Tensor,
    d: int,
    kernel: str,
    lengthscale: float,
    noise: float,
    score: str,
) -> torch.Tensor:
    """The scores of centred, padded candidates ``V`` against ``Z`` (``P = Z Z^T``)."""
    c0 = gradient_prior(kernel, lengthscale)
    n8 = Z.shape[1]
    if score == "spectral" and n8 < d:
        return torch.full(V.shape[:2], c0, dtype=V.dtype, device=V.device)
    if P is None:
        P = bmm(Z, Z.transpose(-1, -2))  # [c, n8, n8]
    chol = torch.linalg.cholesky(_gram(P, m, kernel, lengthscale, noise))
    A = torch.cholesky_inverse(chol)
    U = bmm(V, Z.transpose(-1, -2))  # [c, m, n8]: v . z_t
    vv = V.square().sum(-1)  # [c, m]
    zz = P.diagonal(dim1=-2, dim2=-1)
    r2 = (vv.unsqueeze(-1) + zz.unsqueeze(1) - 2.0 * U).clamp_min(0.0)
    G = torch.where(m.unsqueeze(1), grad_factor(r2, kernel, lengthscale), 0.0)
    AG = bmm(G, A)  # rows: (A g)^T, A symmetric
    s1 = (AG * G).sum(-1)
    s2 = (AG * G * U).sum(-1)
    s3 = (bmm(G, A * P) * G).sum(-1)
    explained = vv * s1 - 2.0 * s2 + s3  # tr J^T A J
    if score == "trace":
        return d * c0 - explained
    # C = J J^T per candidate: g_t g_s (|v|^2 - u_t - u_s + P_ts)
    inner = vv[..., None, None] - U.unsqueeze(-1) - U.unsqueeze(-2) + P.unsqueeze(1)
    C = G.unsqueeze(-1) * G.unsqueeze(-2) * inner  # [c, m, n8, n8]
    if score == "frobenius":
        cm = C.shape[0] * C.shape[1]
        AC = bmm(A.unsqueeze(1).expand(C.shape).reshape(cm, n8, n8), C.reshape(cm, n8, n8))
        AC = AC.reshape(C.shape)
        quad = (AC * AC.transpose(-1, -2)).sum((-1, -2))  # ||J^T A J||_F^2 = tr(ACAC)
        return (d * c0 * c0 - 2.0 * c0 * explained + quad).clamp_min(0.0).sqrt()
    L = chol.unsqueeze(1).expand(C.shape)
    half = torch.linalg.solve_triangular(L, C, upper=False)
    BBt = torch.linalg.solve_triangular(L, half.transpose(-1, -2), upper=False)
    eig = torch.linalg.eigvalsh(0.5 * (BBt + BBt.transpose(-1, -2)))  # ascending
    # the n8 eigenvalues of B B^T are the d of B^T B (real coordinates) and n8 - d zeros
    return c0 - eig[..., n8 - d].clamp_min(0.0)


def top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``[c, k]`` of the ``k`` largest scores per row (ties: lower index first)."""
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices[:, :k]

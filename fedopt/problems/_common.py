"""Helpers shared by the problem modules (private: not part of the problem contract).

The numerical helpers here exist for *sharding invariance*: a node's gradient must
not depend on which other nodes share its batch. Two CPU kernels break that if used
naively and are wrapped here:

* ``torch.bmm`` with a batch of one is dispatched to the matrix-product kernel, whose
  rounding differs from the batched kernel's; :func:`bmm` (from :mod:`fedopt.numerics`,
  re-exported here) pads such a batch to two.
* ``torch.sigmoid`` on float32 rounds the tail of a tensor (the last elements that do
  not fill a SIMD register) with a different formula; :func:`sigmoid_` builds the
  logistic function from ``exp``, ``add`` and ``reciprocal``, which round the same way
  at every position.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal, TypeVar

import torch
from pydantic import BaseModel, ValidationError

from fedopt.errors import ConfigError
from fedopt.numerics import bmm as bmm  # re-exported for the problem modules
from fedopt.validation import format_validation_error

DTypeName = Literal["float32", "float64"]
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}

C = TypeVar("C", bound=BaseModel)


# ----------------------------------------------------------------------------- config


def config_error(exc: ValidationError, model: type[BaseModel], prefix: str) -> ConfigError:
    """A pydantic ``ValidationError`` of ``model`` (at ``prefix``) as a :class:`ConfigError`,
    one line per problem, worded as every other section's
    (:func:`fedopt.validation.format_validation_error`)."""
    return ConfigError(format_validation_error(exc, {}, model, prefix))


def coerce_config(config: BaseModel | Mapping[str, Any], model: type[C], prefix: str) -> C:
    """Return ``config`` as an instance of ``model`` (validating a mapping if needed)."""
    if isinstance(config, model):
        return config
    data = config.model_dump() if isinstance(config, BaseModel) else dict(config)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, model, prefix) from None


# ----------------------------------------------------------------------------- ranks


def check_ranks(
    data_ranks: torch.Tensor, num_data_nodes: int, device: torch.device
) -> torch.Tensor:
    """Validate the hosted data ranks and return them as int64 on ``device``."""
    ranks = torch.as_tensor(data_ranks).to(device=device, dtype=torch.int64).reshape(-1)
    if num_data_nodes < 1:
        raise ValueError(f"num_data_nodes must be >= 1, got {num_data_nodes}")
    if len(ranks) and (int(ranks.min()) < 0 or int(ranks.max()) >= num_data_nodes):
        raise ValueError(
            f"data ranks must lie in [0, {num_data_nodes}), got {ranks.min()}..{ranks.max()}"
        )
    return ranks


def take(t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``t[rows]`` along dim 0, as a view (no copy) when ``rows`` is a contiguous range."""
    n = len(rows)
    if n == 0:
        return t[:0]
    first = int(rows[0])
    if int(rows[-1]) - first == n - 1 and (n == 1 or bool((rows.diff() == 1).all())):
        return t.narrow(0, first, n)
    return t.index_select(0, rows)


def row_chunks(n: int, bytes_per_row: int, max_bytes: int = 64 << 20) -> Iterator[slice]:
    """Slices of ``range(n)`` whose temporaries stay below ``max_bytes`` each."""
    step = max(1, max_bytes // max(1, bytes_per_row))
    for a in range(0, n, step):
        yield slice(a, min(a + step, n))


# ----------------------------------------------------------------------------- kernels


def sigmoid_(z: torch.Tensor) -> torch.Tensor:
    """In-place logistic function ``1 / (1 + exp(-z))``, rounded alike at every position."""
    return z.neg_().exp_().add_(1.0).reciprocal_()


def sigmoid(z: torch.Tensor) -> torch.Tensor:
    """Out-of-place :func:`sigmoid_`."""
    return sigmoid_(z.clone())


# ----------------------------------------------------------------------------- linear models


def linear_per_sample(A: torch.Tensor, r: torch.Tensor, decay: torch.Tensor | None) -> torch.Tensor:
    """Per-sample gradients ``g_s = r_s a_s + d`` of a linear model: ``[k, b, dim]``.

    ``A [k, b, dim]`` holds the samples' features, ``r [k, b]`` the derivative of each
    sample's loss with respect to its prediction (the residual ``a_s^T w - y_s`` for
    squared loss, ``sigmoid(z_s) - y_s`` for logistic) and ``decay [k, dim]`` the ridge
    gradient shared by every sample (``None`` without ridge).
    """
    g = A * r.unsqueeze(2)
    if decay is not None:
        g.add_(decay.unsqueeze(1))
    return g


def linear_clipped_mean(
    A: torch.Tensor, r: torch.Tensor, decay: torch.Tensor | None, clip: float
) -> torch.Tensor:
    """``(1/b) sum_s g_s min(1, clip / ||g_s||)`` for ``g_s = r_s a_s + d``: ``[k, dim]``.

    Never forms the ``[k, b, dim]`` per-sample gradients: the norms follow from
    ``||g_s||^2 = r_s^2 ||a_s||^2 + 2 r_s <a_s, d> + ||d||^2`` and the clipped mean is
    ``(1/b) (sum_s c_s r_s a_s + (sum_s c_s) d)`` with ``c_s = min(1, clip / ||g_s||)``,
    two batched products over the samples (the DP-SGD update of Abadi et al., CCS 2016).
    """
    if not clip > 0:
        raise ValueError(f"clip: must be > 0, got {clip!r}")
    b = A.shape[1]
    norm2 = A.square().sum(dim=2).mul_(r.square())
    if decay is not None:
        ad = bmm(A, decay.unsqueeze(2)).squeeze(2)
        norm2.add_(ad.mul_(r), alpha=2.0).add_(decay.square().sum(dim=1, keepdim=True))
    scale = norm2.clamp_(min=0.0).sqrt_().clamp_(min=clip).reciprocal_().mul_(clip)  # c_s
    out = bmm((scale * r).unsqueeze(1), A).squeeze(1).div_(b)
    if decay is not None:
        out.add_(decay * scale.mean(dim=1, keepdim=True))
    return out


# ----------------------------------------------------------------------------- clipped sums

CLIP_EPS = 1e-10
"""``clip_c(v) = v * min(1, c / (||v|| + CLIP_EPS))`` in :meth:`clipped_grad_sum` (the DIFF2
reference's clipping, spec diff2.md section 4.3)."""

SAMPLE_CHUNK_BYTES = 256 << 10
"""Bytes of one node's features per sample chunk of a clipped sum (a few chunks of a few
nodes stay in the L2 cache)."""


def sample_chunk(dim: int, itemsize: int) -> int:
    """Samples per chunk for ``dim`` features of ``itemsize`` bytes (at least 8).

    A function of the problem alone (never of the number of rows in a call), so a node's
    sum over its samples is added up in the same order wherever the node is hosted.
    """
    return max(8, SAMPLE_CHUNK_BYTES // max(1, dim * itemsize))


def sample_slices(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of ``range(n)`` of ``size`` samples (the last may be shorter)."""
    for a in range(0, n, size):
        yield slice(a, min(a + size, n))


def clip_radii(
    clip: float | torch.Tensor, k: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """``clip`` as a ``[k]`` tensor of radii (one float for every row, or one per row).

    Radii must be ``>= 0`` (``inf``: no clipping, ``0``: every clipped vector is zero);
    NaN or a negative radius raises ``ValueError``.
    """
    if isinstance(clip, torch.Tensor):
        c = clip.detach().to(device=device, dtype=torch.float64)
        if c.ndim > 1 or (c.ndim == 1 and c.shape[0] != k):
            raise ValueError(
                f"clip: expected a float or a [{k}] tensor (one radius per row), got shape "
                f"{list(c.shape)}"
            )
        if bool((~(c >= 0)).any()):  # NaN fails too
            raise ValueError(f"clip: every radius must be >= 0 (inf = no clipping), got {clip}")
        return c.expand(k).to(dtype)
    if not (isinstance(clip, (int, float)) and clip >= 0):  # NaN fails too
        raise ValueError(f"clip: must be >= 0 (inf = no clipping), got {clip!r}")
    return torch.full((k,), float(clip), dtype=dtype, device=device)


def clip_scale(norm2: torch.Tensor, radii: torch.Tensor, eps: float = CLIP_EPS) -> torch.Tensor:
    """Per-sample factors ``min(1, c / (||v|| + eps))`` from squared norms ``[c, S]``.

    ``radii [c]``; an infinite radius gives exactly 1, a zero radius exactly 0.
    """
    norm = norm2.clamp(min=0.0).sqrt_()
    if eps:
        norm.add_(eps)
    return torch.div(radii.unsqueeze(1), norm, out=norm).clamp_(max=1.0)


def sample_mask(
    mask: torch.Tensor | None, k: int, n_max: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor | None:
    """Validate a ``[k, n_max]`` sample mask of :meth:`clipped_grad_sum` (None stays None)."""
    if mask is None:
        return None
    if mask.shape != (k, n_max):
        raise ValueError(
            f"mask: expected shape [{k}, {n_max}] (rows x max_samples), got {list(mask.shape)}"
        )
    return mask.to(device=device, dtype=dtype)


def linear_clipped_sum(
    A: torch.Tensor,
    r: torch.Tensor,
    decay: torch.Tensor | None,
    radii: torch.Tensor,
    weight: torch.Tensor | None,
    asq: torch.Tensor | None = None,
) -> torch.Tensor:
    """``sum_s w_s clip_c(r_s a_s + d)`` over the samples of ``A [c, S, dim]``: ``[c, dim]``.

    The per-sample vectors are those of :func:`linear_per_sample`; for the difference
    ``g_s(x) - g_s(x')`` of a linear model pass ``r_s - r'_s`` and ``d - d'`` (the features
    are the same). Never forms ``[c, S, dim]``: ``||r a + d||^2 = r^2 ||a||^2 + 2 r <a, d>
    + ||d||^2``, then ``sum_s w_s f_s (r_s a_s + d) = (w f r)^T A + (sum_s w_s f_s) d`` with
    ``f_s = min(1, c / (||r_s a_s + d|| + 1e-10))`` (:func:`clip_scale`).

    Parameters
    ----------
    A, r, decay
        Features ``[c, S, dim]``, loss derivatives ``[c, S]``, shared term ``[c, dim]`` or
        None.
    radii
        ``[c]`` clip radii (:func:`clip_radii`).
    weight
        ``[c, S]`` sample weights (the mask), or None for all ones.
    asq
        ``||a_s||^2 [c, S]`` if known (computed otherwise).
    """
    if asq is None:
        asq = torch.linalg.vector_norm(A, dim=2).square_()
    norm2 = asq * r.square()
    if decay is not None:
        ad = bmm(A, decay.unsqueeze(2)).squeeze(2)
        norm2.add_(ad.mul_(r), alpha=2.0).add_(decay.square().sum(dim=1, keepdim=True))
    f = clip_scale(norm2, radii)
    if weight is not None:
        f.mul_(weight)
    out = bmm((f * r).unsqueeze(1), A).squeeze(1)
    if decay is not None:
        out.add_(decay * f.sum(dim=1, keepdim=True))
    return out

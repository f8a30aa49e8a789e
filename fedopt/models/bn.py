"""Per-node BatchNorm running statistics: the reset pass.

A model's BatchNorm running means and variances are per-node buffer rows ``B [k, buf_dim]``
(:class:`~fedopt.models.layout.ParamLayout`); they travel, checkpoint and merge with the
parameter rows (``layout.pack``). After a merge (an average of permuted models) the
averaged statistics no longer describe the merged network's activations, so they are
recomputed on data: the *BN reset* of REPAIR and ZipIt, which DIMAT applies to every model
before matching and to the merged model after it.

The reset follows torch's ``momentum=None`` semantics exactly: statistics are reset (mean
0, variance 1, count 0), then the model runs in train mode, without gradients, on batches
``1..T`` of the given data, and after batch ``t`` every running statistic is
``(1 - 1/t) * running + (1/t) * batch_statistic`` (the batch variance unbiased), i.e. the
cumulative average of the per-batch statistics. It is torch's own batch-norm kernel run
with momentum ``1/t``, vmapped over nodes; each node uses only its own data.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedopt.errors import ConfigError
from fedopt.models.batched import BatchedModel


def require_reset_data(model: BatchedModel, data: object, where: str = "problem") -> None:
    """Refuse a model with BatchNorm when there are no data to reset its statistics on.

    Parameters
    ----------
    model
        The model.
    data
        The calibration inputs (anything with a length, or None).
    where
        What supplies the data, for the message (e.g. ``"problem 'quadratic'"``).
    """
    if not model.has_bn:
        return
    empty = data is None or (hasattr(data, "__len__") and len(data) == 0)  # type: ignore[arg-type]
    if isinstance(data, torch.Tensor):
        empty = data.numel() == 0
    if empty:
        raise ConfigError(
            f"model {model.name!r} has BatchNorm layers ({', '.join(model.bn_layers)}) but the "
            f"{where} has no data to reset their running statistics on (got {data!r}). Use a "
            "problem with samples (digits, synthetic images), pass calibration inputs, or pick "
            "a model without BatchNorm."
        )


def _batches(
    data: torch.Tensor | Sequence[torch.Tensor], batch_size: int | None
) -> list[torch.Tensor]:
    if isinstance(data, torch.Tensor):
        if data.ndim < 2:
            raise ValueError(f"reset_bn: data must be [k, n, ...], got shape {list(data.shape)}")
        n = data.shape[1]
        step = n if not batch_size else int(batch_size)
        return [data[:, a : a + step] for a in range(0, n, step)]
    return list(data)


def reset_bn(
    model: BatchedModel,
    X: torch.Tensor,
    data: torch.Tensor | Sequence[torch.Tensor] | None,
    *,
    batch_size: int | None = None,
    counts: torch.Tensor | None = None,
    B: torch.Tensor | None = None,
) -> torch.Tensor:
    """Recompute every node's BatchNorm running statistics on its own data.

    Parameters
    ----------
    model
        A model with BatchNorm layers.
    X
        Parameter rows ``[k, dim]``.
    data
        Inputs ``[k, n, ...]`` (split into batches of ``batch_size``, default one batch of
        all ``n``), or a sequence of batches ``[k, b_t, ...]``.
    batch_size
        Samples per batch when ``data`` is one tensor.
    counts
        ``[k]`` number of valid samples per node when ``data`` is one zero-padded tensor:
        nodes with the same count are reset together on their first ``counts[i]`` samples
        (a loop over the distinct counts); nodes with no samples keep the statistics of
        ``B`` (or of a fresh model).
    B
        Current buffer rows; only used for nodes without samples.

    Returns
    -------
    torch.Tensor
        New buffer rows ``[k, buf_dim]`` (``B`` itself is not modified).
    """
    require_reset_data(model, data, "call")
    k = X.shape[0]
    fresh = model.init_buffers(k, X.dtype, X.device)
    out = fresh.clone() if B is None else B.to(X.dtype).clone()
    if counts is not None:
        if not isinstance(data, torch.Tensor):
            raise ValueError("reset_bn: counts needs data as one [k, n, ...] tensor")
        counts = torch.as_tensor(counts, device=X.device).reshape(-1)
        if counts.shape != (k,):
            raise ValueError(f"reset_bn: counts must be [{k}], got {list(counts.shape)}")
        for c in torch.unique(counts).tolist():
            if c <= 0:
                continue
            rows = torch.nonzero(counts == c).squeeze(1)
            sub = data.index_select(0, rows)[:, : int(c)]
            out[rows] = _reset(model, X.index_select(0, rows), _batches(sub, batch_size))
        return out
    return _reset(model, X, _batches(data, batch_size))  # type: ignore[arg-type]


def _reset(model: BatchedModel, X: torch.Tensor, batches: list[torch.Tensor]) -> torch.Tensor:
    if not batches:
        raise ValueError("reset_bn: no batches")
    B = model.init_buffers(X.shape[0], X.dtype, X.device)
    layers = [model.module.get_submodule(n) for n in model.bn_layers]
    saved = [m.momentum for m in layers]
    try:
        for t, xb in enumerate(batches, start=1):
            for m in layers:
                m.momentum = 1.0 / t
            model.forward(X, xb, B, train=True)
    finally:
        for m, mom in zip(layers, saved, strict=True):
            m.momentum = mom
    return B

"""Centralised pre-training of the byte transformer, deterministic and cached on disk.

Before federated tuning the model learns bytes on the pooled training topics (never the
held-out ones): from the layout's initialisation keyed by ``(pretrain.seed, "init", 0)``,
``steps`` Adam steps (:class:`fedopt.optim.Adam`, the arithmetic of ``torch.optim.Adam``)

    x <- x - Adam_lr(grad L_B(x)),

on minibatches ``B`` of ``batch_size`` windows drawn from the pooled text (topic
proportional to its window count, i.e. uniform over windows) with the keyed stream
``(pretrain.seed, "lm/pretrain", 0, step)``. Only keyed counters are used, so the same
configuration gives the same bits on the same software and thread count.

Cache: the result is stored as ``tiny_lm-<hash>.pt`` in the cache folder, ``hash`` the
SHA-256 of everything that decides its bits (corpus, held-out split, sequence length,
model shape, pre-training fields, dtype, device type, torch version, format version). A hit returns
the stored row (bit-identical); a file whose recorded key differs is ignored and
rewritten. Inside one process the rows are also memoised, so several oracles (the
compile-time probe, every worker of the local engine) pre-train once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fedopt import rng
from fedopt.models import BatchedModel
from fedopt.optim import Adam

log = logging.getLogger(__name__)

FORMAT = 1
"""Version of the cache file format and of the pre-training procedure."""

_MEMO: dict[str, PretrainResult] = {}


@dataclass(frozen=True)
class PretrainResult:
    """The pre-trained row and how it was obtained.

    Attributes
    ----------
    params
        ``float32 [dim]`` pre-trained parameters.
    key
        The SHA-256 of the cache key.
    losses
        Training loss of every step (``[steps]`` float64), before the step's update.
    source
        ``"trained"``, ``"disk"`` (cache file) or ``"memo"`` (this process).
    seconds
        Wall time of the training (0 for a hit).
    """

    params: torch.Tensor
    key: str
    losses: torch.Tensor
    source: str = "trained"
    seconds: float = 0.0
    path: str | None = field(default=None)


def cache_key(spec: dict[str, Any]) -> str:
    """SHA-256 of the JSON of ``spec`` (sorted keys) plus the format and torch versions."""
    data = {**spec, "format": FORMAT, "torch": torch.__version__}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def default_cache_dir() -> Path:
    """``$FEDOPT_CACHE_DIR`` if set, else ``~/.cache/fedopt``."""
    env = os.environ.get("FEDOPT_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "fedopt"


def pretrain(
    model: BatchedModel,
    sample: Any,
    *,
    steps: int,
    lr: float,
    x0: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the pre-training; returns ``(params [dim], losses [steps])``.

    ``sample(step) -> int64 [1, b, seq_len + 1]`` gives the minibatch of a step.
    """
    x = x0.reshape(1, -1).clone()
    opt = Adam()
    state = opt.init(1, x.shape[1], x.dtype, x.device)
    losses = torch.empty(steps, dtype=torch.float64)
    for s in range(steps):
        win = sample(s)
        loss, g = model.value_and_grad(x, win[..., :-1], win[..., 1:])
        losses[s] = float(loss[0])
        x.sub_(opt.update(state, g, lr))
    return x[0], losses


def cached_pretrain(
    spec: dict[str, Any],
    run: Any,
    cache_dir: Path | None,
) -> PretrainResult:
    """The pre-trained row for ``spec``: memo, then ``cache_dir``'s file, else ``run()``.

    Parameters
    ----------
    spec
        Everything that decides the bits (JSON-able); hashed by :func:`cache_key`.
    run
        ``() -> (params [dim], losses [steps])``, the training itself.
    cache_dir
        Folder of the cache files, or None for the in-process memo only.
    """
    key = cache_key(spec)
    hit = _MEMO.get(key)
    if hit is not None:
        return PretrainResult(hit.params, key, hit.losses, "memo", 0.0, hit.path)
    path = cache_dir / f"tiny_lm-{key[:16]}.pt" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged file is rewritten
            log.warning("tiny_lm: cache file %s unreadable (%s); pre-training again", path, exc)
            blob = None
        if isinstance(blob, dict) and blob.get("key") == key:
            res = PretrainResult(blob["params"], key, blob["losses"], "disk", 0.0, str(path))
            _MEMO[key] = res
            return res
    t0 = time.perf_counter()
    params, losses = run()
    res = PretrainResult(
        params.detach().cpu().clone(), key, losses, "trained", time.perf_counter() - t0, None
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        blob = {"key": key, "spec": json.dumps(spec, sort_keys=True)}
        torch.save({**blob, "params": res.params, "losses": losses}, tmp)
        tmp.replace(path)
        res = PretrainResult(res.params, key, losses, "trained", res.seconds, str(path))
    _MEMO[key] = res
    return res


def clear_memo() -> None:
    """Forget the in-process memo (tests of the disk cache)."""
    _MEMO.clear()


def pretrain_keys(seed: int, step: int) -> torch.Tensor:
    """The key of pre-training step ``step``: ``(seed, "lm/pretrain", 0, step)``."""
    return rng.node_keys(seed, "lm/pretrain", torch.zeros(1, dtype=torch.int64), step)

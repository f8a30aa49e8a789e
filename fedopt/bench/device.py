"""The torch device a benchmark's batched way runs on (``--device``)."""

from __future__ import annotations

import torch

from fedopt.errors import ConfigError


def bench_device(name: str) -> torch.device:
    """``torch.device(name)``, refused with a ConfigError when it cannot run here.

    ``cpu`` always works; ``cuda`` (or ``cuda:K``) needs a CUDA build of torch that sees
    a GPU. Any other name is refused too.
    """
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ConfigError(
            f"--device: {name!r} is not a torch device this bench knows; use cpu or cuda"
        )
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"--device: {name!r} was asked but torch {torch.__version__} sees no CUDA GPU "
            "here (torch.cuda.is_available() is False); use --device cpu, or run on a GPU "
            "machine with a CUDA build of torch"
        )
    return dev

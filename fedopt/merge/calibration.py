"""Calibration data of a merge: where BN resets and activation features are computed.

DIMAT recomputes BatchNorm statistics (the BN reset of REPAIR / ZipIt) of every model it
merges and runs them forward to collect features, both on *calibration data*
(spec section 3.2, pitfall 1):

* :class:`LocalCalibration` (``calibration: local``, the decentralised choice): receiver
  ``i`` uses its own training samples for every model it merges, through the oracle's
  ``model`` capability (``reset_buffers``, ``activations``). Nothing but models travels.
* :class:`GlobalCalibration` (``calibration: global``, the reference code's choice): every
  receiver uses the whole training set, i.e. every agent implicitly holds all the data.
  It needs all data nodes in one process (the local engine) and an oracle that exposes
  its padded samples (``X [k, max_m, ...]``, ``counts [k]``, ``model``).

Both return, for ``P`` models (rows ``X [P, dim]``) and the data row of the receiver each
is calibrated for (``rows [P]``), new BatchNorm rows and the number of forward passes per
model, and the features at the merge points.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fedopt.errors import ConfigError
from fedopt.models import reset_bn


class LocalCalibration:
    """Each receiver's own training samples (the oracle's ``model`` capability).

    Parameters
    ----------
    oracle
        Oracle with capability ``model``.
    samples
        Samples per feature pass: every receiver's first ``samples`` training samples (the
        same number on every worker, so results do not depend on the placement).
    """

    def __init__(self, oracle: Any, samples: int) -> None:
        self.oracle = oracle
        self.samples = int(samples)

    def reset(self, X: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """BN reset of every model on its receiver's samples: ``(B [P, buf_dim], passes [P])``."""
        return self.oracle.reset_buffers(X, rows)

    def features(
        self, X: torch.Tensor, rows: torch.Tensor, B: torch.Tensor | None, points: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        """``{group: [P, samples x positions, units]}`` on each receiver's first samples."""
        return self.oracle.activations(
            X, rows, list(points), data="train", samples=self.samples, buffers=B
        )


class GlobalCalibration:
    """The whole training set of every data node, for every receiver.

    Parameters
    ----------
    oracle
        An oracle hosting *every* data node that exposes ``X``, ``counts``, ``model`` and
        ``config.batch_size`` (the digits problems).
    samples
        Samples per feature pass (the first of the concatenated training set, in data
        rank order); None for all.
    """

    def __init__(self, oracle: Any, samples: int | None) -> None:
        for attr in ("X", "counts", "model"):
            if not hasattr(oracle, attr):
                raise ConfigError(
                    "algorithm.calibration: 'global' computes BN resets and features on the "
                    f"whole training set, but problem oracle {type(oracle).__name__} does not "
                    "expose its samples; use calibration: local"
                )
        self.oracle = oracle
        parts = [oracle.X[i, : int(c)] for i, c in enumerate(oracle.counts.tolist())]
        self.data = torch.cat(parts)
        self.samples = len(self.data) if samples is None else min(int(samples), len(self.data))
        self.batch_size = int(getattr(oracle.config, "batch_size", 0)) or None

    def reset(self, X: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """BN reset of every model on the whole training set."""
        P, m = len(X), len(self.data)
        W = X.to(self.oracle.dtype)
        with torch.no_grad():
            B = reset_bn(
                self.oracle.model,
                W,
                self.data.unsqueeze(0).expand(P, -1, -1),
                batch_size=self.batch_size,
            )
        bs = self.batch_size or m
        return B, torch.full((P,), -(-m // bs), dtype=torch.int64)

    def features(
        self, X: torch.Tensor, rows: torch.Tensor, B: torch.Tensor | None, points: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        """Features of every model on the first ``samples`` training samples."""
        data = self.data[: self.samples].unsqueeze(0).expand(len(X), -1, -1)
        return self.oracle.activations(X, rows, list(points), data=data, buffers=B)

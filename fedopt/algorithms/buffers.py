"""Per-node model buffers (running BatchNorm statistics) for algorithms that move models.

A problem whose model keeps running statistics (``digits_model`` with ``batchnorm:
running``; ``Problem.buffer_dim > 0``) gives every data node a buffer row ``b_i
[buf_dim]`` next to its parameter row ``x_i [dim]``. The oracle (capability ``model``)
holds the rows its training calls update (``grad``/``sgd_step_`` move them as a
train-mode ``torch.nn.BatchNorm`` does); an algorithm that moves models
(``Algorithm.moves_buffers``) keeps the authoritative rows in its state (so they are
checkpointed and frozen under faults with the parameters) and treats them as it treats
the parameters:

* before local training it loads the rows into the oracle (``set_buffers``) and after it
  reads them back (``get_buffers``);
* every linear operation on models acts on the packed row ``[x_i, b_i]``: one message
  carries both (metered as the fields ``model`` and ``buffers``), FedAvg's weighted
  average uses the same weights (``b <- sum_k n_k b_k / sum_k n_k``: the mean of the
  running means and the mean of the running variances, which is what FedAvg
  implementations with BatchNorm average from the clients' state dicts), a gossip step
  mixes them with the same ``W_t``;
* with ``bn_reset`` the rows do not travel; after every round they are recomputed for
  the round's model on data (the BN reset, :func:`fedopt.models.reset_bn`: cumulative
  average over the node's samples), which is the usual fix when averaged statistics do
  not describe the averaged network.

The helpers below are what FedAvg and D-SGD share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from fedopt.engine.payload import Payload
from fedopt.problems.capabilities import Capability

if TYPE_CHECKING:
    from fedopt.engine.comm import Comm
    from fedopt.problems.base import Oracle


def buffer_dim(oracle: Oracle) -> int:
    """Width of the oracle's travelling buffer rows (0: none, or no ``model`` capability)."""
    if not oracle.provides(Capability.MODEL):
        return 0
    return int(getattr(oracle, "buf_dim", 0))


def initial_buffers(
    oracle: Oracle, k: int, dtype: torch.dtype, device: torch.device | str
) -> torch.Tensor:
    """``[k, buf_dim]`` initial buffer rows (BatchNorm: running mean 0, variance 1)."""
    return oracle.layout.init_buffers(k, dtype, device)  # type: ignore[attr-defined]


def pack(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Packed rows ``[k, dim + buf_dim]``: parameters, then buffers (``layout.pack``)."""
    return torch.cat([x, b.to(x.dtype)], dim=1)


def model_payload(
    dim: int, buf_dim: int, dtype: torch.dtype, count: torch.dtype | None = None
) -> Payload:
    """The logical message of a packed row: fields ``model``, ``buffers`` (and ``count``).

    ``(dim + buf_dim) * itemsize`` bytes, plus one ``count`` element with sample weighting;
    without buffers (``buf_dim = 0``) the field is left out.
    """
    spec: dict[str, tuple[int, torch.dtype]] = {"model": (dim, dtype)}
    if buf_dim:
        spec["buffers"] = (buf_dim, dtype)
    if count is not None:
        spec["count"] = (1, count)
    return Payload.fields(spec)


def charge_reset(comm: Comm, local_rows: torch.Tensor, passes: torch.Tensor, t: int) -> None:
    """Charge a BN reset: ``passes[j]`` forward passes (kind ``forwards``) to ``local_rows[j]``."""
    passes = passes.to(torch.int64).cpu()
    for p in torch.unique(passes).tolist():
        if p > 0:
            comm.compute(local_rows[passes == p], int(p), t, "forwards")

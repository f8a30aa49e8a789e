"""First-order local training of the sampled clients (Ferret, spec ``ferret.md`` §3.5).

Each sampled client starts from the global model ``w`` with a fresh optimiser and takes
``T`` steps; step ``s`` averages ``A`` minibatch gradients (gradient accumulation)::

    g = (1/A) sum_{a < A} grad f_i(x; batch(t T A + s A + a)),    x <- x - opt(g)

With plain SGD and ``A = 1`` the step is the oracle's fused ``sgd_step_`` (minibatch
``t T + s``), the same call and the same bits as FedAvg's local steps.
"""

from __future__ import annotations

import torch

from fedopt.optim import Optimizer


def train(
    oracle: object,
    w: torch.Tensor,
    rows: torch.Tensor,
    t: int,
    steps: int,
    accum: int,
    lr: float,
    opt: Optimizer | None,
    chunk_size: int,
) -> torch.Tensor:
    """Models ``[len(rows), d]`` of the clients ``rows`` after round ``t``'s local steps.

    ``opt`` None: plain SGD (with ``accum == 1`` the fused ``sgd_step_`` path).
    """
    d = w.numel()
    out = torch.empty((len(rows), d), dtype=w.dtype, device=w.device)
    for a in range(0, len(rows), chunk_size):
        e = min(a + chunk_size, len(rows))
        X = out[a:e]
        X.copy_(w.expand(e - a, d))
        r = rows[a:e]
        state = opt.init(e - a, d, X.dtype, X.device) if opt is not None else None
        for s in range(steps):
            if opt is None and accum == 1:
                oracle.sgd_step_(X, r, t * steps + s, lr)  # type: ignore[attr-defined]
                continue
            base = (t * steps + s) * accum
            g = oracle.grad(X, r, base)  # type: ignore[attr-defined]
            for j in range(1, accum):
                g = g.add_(oracle.grad(X, r, base + j))  # type: ignore[attr-defined]
            if accum > 1:
                g.div_(accum)
            if opt is None:
                X.sub_(g, alpha=lr)
            else:
                X.sub_(opt.update(state, g, lr))  # type: ignore[arg-type]
    return out

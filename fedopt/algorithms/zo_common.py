"""Zeroth-order machinery shared by the query-only algorithms (FedZO family, FZooS).

Two pieces, both node-batched and keyed so that a node's numbers do not depend on
which worker hosts it:

* :func:`orthonormal_directions`: ``Q`` Gaussian directions per node, keyed by
  ``(seed, purpose, id, step)``, orthonormalised as Gram-Schmidt does (unit norm,
  mutually orthogonal; ``Q <= d``);
* :func:`fd_gradient`: the forward-difference estimate along those directions,

  .. math::

      \\Delta_i(x) = \\frac1Q \\sum_{q=1}^{Q}
          \\frac{y_i(x + \\lambda u_q) - y_i(x)}{\\lambda}\\, u_q ,

  one base query and ``Q`` displaced queries per row (``Q + 1`` in all), every one
  served through the oracle's counted ``query`` (capability ``noisy_queries``).

There is no factor ``d`` in the estimate (the FZooS reference code's convention, spec
``fzoos.md`` §2.7): with ``Q = d`` orthonormal directions and a small ``lambda`` it is
``grad f_i(x) / d``; Adam is invariant to that scale. References: Nesterov & Spokoiny,
"Random gradient-free minimization of convex functions" (FoCM 2017) for the estimator;
Fang et al., "Communication-efficient stochastic zeroth-order optimization for
federated learning" (FedZO, IEEE TSP 2022).

Query steps
-----------
The noise of a query is keyed by ``(seed, "query", data rank, step)``, so each query a
node makes needs its own step. :func:`fd_gradient` takes the step of the base query and
uses ``step + 1 + q`` for direction ``q``: the next free step of the node is
``step + Q + 1`` (:func:`fd_queries` gives the count). Callers keep one query counter
per node and advance it by what they spent.
"""

from __future__ import annotations

import torch

from fedopt import rng
from fedopt.problems.base import Oracle, Step


def fd_queries(directions: int) -> int:
    """Queries one :func:`fd_gradient` costs per row: the base point plus ``Q``."""
    return int(directions) + 1


def orthonormal_directions(
    seed: int, purpose: str, ids: torch.Tensor, step: Step, d: int, Q: int
) -> torch.Tensor:
    """``Q`` orthonormal random directions in ``R^d`` per id: ``[k, Q, d]`` float64.

    Row ``i`` is a pure function of ``(seed, purpose, ids[i], step)`` (``step`` an int
    or a ``[k]`` tensor): ``Q`` standard normal vectors drawn with
    :func:`fedopt.rng.normal`, then orthonormalised in order: the Q factor of a
    Householder QR with the signs that make ``diag(R) > 0``, which is what Gram-Schmidt
    gives (``u_1`` is ``g_1 / ||g_1||``, ``u_q`` the normalised part of ``g_q``
    orthogonal to ``u_1..u_{q-1}``), orthonormal to ~1e-15. On the CPU the batched QR
    factors each row's matrix separately, so a row has the same bits whichever other
    rows share the call.

    Parameters
    ----------
    seed, purpose
        The experiment seed and what the directions are for (e.g. ``"fedzo/directions"``).
    ids
        ``[k]`` int64 keys (global node ids or data ranks).
    step
        The estimate's step (the base query's step is a good choice: unique per node).
    d, Q
        Dimension and number of directions, ``1 <= Q <= d``.

    Raises
    ------
    ValueError
        ``Q < 1`` or ``Q > d`` (``Q`` orthonormal vectors need ``Q <= d``).
    """
    d, Q = int(d), int(Q)
    if Q < 1 or Q > d:
        raise ValueError(
            f"directions: need 1 <= Q <= d for orthonormal directions, got Q={Q}, d={d}"
        )
    k = len(ids)
    keys = rng.node_keys(seed, purpose, ids, step)
    G = rng.normal(keys, Q * d, torch.float64).reshape(k, Q, d).to(ids.device)
    if k == 0:
        return G
    Qf, R = torch.linalg.qr(G.transpose(1, 2))  # [k, d, Q], [k, Q, Q]
    signs = torch.sign(torch.diagonal(R, dim1=1, dim2=2))  # Gram-Schmidt's: diag(R) > 0
    return (Qf * signs.unsqueeze(1)).transpose(1, 2).contiguous()


def fd_gradient(
    oracle: Oracle,
    X: torch.Tensor,
    rows: torch.Tensor,
    step: Step,
    directions: torch.Tensor,
    lam: float,
    noise_std: float,
) -> torch.Tensor:
    """Forward-difference gradient estimates ``[k, d]`` along ``Q`` directions per row.

    ``Delta_i = (1/Q) sum_q (y_i(X_i + lam u_iq) - y_i(X_i)) / lam * u_iq`` with
    ``y = oracle.query(...)``: ``k (Q + 1)`` counted queries in one call (the oracle's
    ``queries`` grows by that much; charge them to the meter with
    ``ctx.comm.compute(local_rows, Q + 1, t, kind="queries")``).

    Parameters
    ----------
    oracle
        An oracle with the ``noisy_queries`` capability.
    X
        ``[k, d]`` points (any float dtype; the estimate is float64).
    rows
        ``[k]`` oracle rows (data rows of the hosted nodes).
    step
        Step of each row's base query (int or ``[k]`` int64); direction ``q`` is queried
        at ``step + 1 + q``, so the next free step is ``step + Q + 1``.
    directions
        ``[k, Q, d]`` directions (:func:`orthonormal_directions`; any ``u_q`` works).
    lam
        Finite-difference step ``lambda > 0``.
    noise_std
        Standard deviation of the query noise (``>= 0``).

    Raises
    ------
    ValueError
        ``lam <= 0`` or shapes that do not match.
    """
    if not lam > 0:
        raise ValueError(f"lam: the finite-difference step must be > 0, got {lam!r}")
    k, d = X.shape
    if directions.ndim != 3 or directions.shape[0] != k or directions.shape[2] != d:
        raise ValueError(f"directions: expected shape [{k}, Q, {d}], got {list(directions.shape)}")
    Q = directions.shape[1]
    U = directions.to(torch.float64)
    base = X.to(torch.float64)
    points = torch.cat([base.unsqueeze(1), base.unsqueeze(1) + lam * U], dim=1)  # [k, Q+1, d]
    offsets = torch.arange(Q + 1, dtype=torch.int64, device=X.device)
    if isinstance(step, torch.Tensor):
        s = step.to(device=X.device, dtype=torch.int64)
        steps = (s.expand(k) if s.ndim == 0 else s).reshape(-1, 1) + offsets
    else:
        steps = int(step) + offsets.unsqueeze(0).expand(k, -1)
    y = oracle.query(  # type: ignore[attr-defined]
        points.reshape(k * (Q + 1), d).to(X.dtype),
        rows.repeat_interleave(Q + 1),
        steps.reshape(-1),
        noise_std,
    ).reshape(k, Q + 1)
    slopes = (y[:, 1:] - y[:, :1]) / lam  # [k, Q]
    return (slopes.unsqueeze(2) * U).sum(dim=1) / Q

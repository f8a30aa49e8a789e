"""CGA's quadratic program: project a gradient so it does not conflict with cross-gradients.

Given a node's own gradient ``g [p]`` and the cross-gradients ``G [m, p]`` of its model
on its neighbours' minibatches, CGA (Esfandiari et al., "Cross-Gradient Aggregation for
Decentralized Learning from Non-IID Data", ICML 2021) replaces ``g`` by
``g_tilde = g + G^T v``, where ``v`` solves the dual of the GEM projection (Lopez-Paz &
Ranzato, "Gradient Episodic Memory for Continual Learning", NeurIPS 2017)::

    minimize_v  1/2 v^T P v + (G g)^T v    subject to  v >= margin,
    P = G G^T + eps I.

With ``margin = 0`` (and ``eps -> 0``) this is the dual of
``min ||z - g||^2  s.t.  G z >= 0`` (the closest gradient that has a non-negative inner
product with every cross-gradient); a positive margin (CGA's code: 0.5) forces at least
that much of every cross-gradient into the step. The reference solves it with cvxopt;
its public code calls the solver with an undefined name (``P`` for ``p``), so CGA as
committed raises ``NameError`` (spec ``dimat.md`` 3.9).

Here the program is solved exactly with scipy's active-set non-negative least squares
(Lawson & Hanson): with ``u = v - margin``, ``d = G g + P margin 1`` and the Cholesky
factor ``P = L L^T`` the objective is ``1/2 ||L^T u + L^{-1} d||^2`` up to a constant,
so ``u = nnls(L^T, -L^{-1} d)``. ``m`` is a node's degree (a handful), so each solve
is a few microseconds of linear algebra on ``m x m`` matrices.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.optimize


def solve_dual(P: np.ndarray, c: np.ndarray, margin: float) -> np.ndarray:
    """``argmin_{v >= margin} 1/2 v^T P v + c^T v`` for a positive definite ``P [m, m]``."""
    m = len(c)
    if m == 0:
        return np.zeros(0)
    d = c + P @ np.full(m, margin)
    L = scipy.linalg.cholesky(P, lower=True)
    b = -scipy.linalg.solve_triangular(L, d, lower=True)
    u, _ = scipy.optimize.nnls(L.T, b)
    return u + margin


def project_gradient(
    g: np.ndarray, G: np.ndarray, margin: float = 0.5, eps: float = 1e-3
) -> tuple[np.ndarray, np.ndarray]:
    """``(g_tilde, v)``: CGA's projected gradient ``g + G^T v`` and the dual solution.

    Parameters
    ----------
    g
        ``[p]`` the node's own gradient.
    G
        ``[m, p]`` its cross-gradients (``m = 0``: ``g`` is returned unchanged).
    margin
        Lower bound of every dual variable (CGA's 0.5).
    eps
        Ridge added to ``G G^T`` so the program is strictly convex.
    """
    g = np.asarray(g, dtype=np.float64)
    G = np.asarray(G, dtype=np.float64).reshape(-1, g.size)
    if len(G) == 0:
        return g.copy(), np.zeros(0)
    P = G @ G.T
    P = 0.5 * (P + P.T) + eps * np.eye(len(G))
    v = solve_dual(P, G @ g, margin)
    return g + G.T @ v, v

"""Mixing (gossip) matrices of undirected graphs and checks of their properties.

A mixing matrix ``W`` is used as ``x_i <- sum_j W[i, j] x_j``; ``W[i, j] > 0`` only for
neighbours ``j`` of ``i`` and ``j = i``. Every rule but ``given`` depends on the graph
structure only (a ``weight`` edge attribute is ignored); ``given`` reads ``W`` from the
graph itself (:mod:`fedopt.topology.given`).

Reference: L. Xiao and S. Boyd, "Fast linear iterations for distributed averaging",
Systems & Control Letters 53 (2004); L. Xiao, S. Boyd and S. Lall, "A scheme for robust
distributed sensor fusion based on average consensus", IPSN 2005 (Metropolis weights).
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import scipy.sparse as sp

from fedopt.errors import ConfigError

RULES = ("metropolis", "max_degree", "uniform", "laplacian", "given")


def _structure(graph: nx.Graph) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """``(n, rows, cols, degree)`` of the undirected adjacency (both directions)."""
    n = graph.number_of_nodes()
    pairs = np.array([(u, v) for u, v in graph.edges() if u != v], dtype=np.int64)
    pairs = pairs.reshape(-1, 2)
    rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0]])
    degree = np.bincount(rows, minlength=n).astype(np.float64)
    return n, rows, cols, degree


def _assemble(n: int, rows: np.ndarray, cols: np.ndarray, off: np.ndarray) -> sp.csr_matrix:
    """CSR matrix with off-diagonal entries ``off`` and diagonal ``1 - row sum``."""
    row_sum = np.bincount(rows, weights=off, minlength=n)
    diag = np.arange(n)
    w = sp.coo_matrix(
        (
            np.concatenate([off, 1.0 - row_sum]),
            (np.concatenate([rows, diag]), np.concatenate([cols, diag])),
        ),
        shape=(n, n),
    ).tocsr()
    w.sort_indices()
    return w


def mixing_matrix(
    graph: nx.Graph, rule: str, laplacian_alpha: float | None = None
) -> sp.csr_matrix:
    """Row-stochastic mixing matrix of an undirected graph on nodes ``0..n-1``.

    With ``d_i`` the degree of node ``i`` and ``d_max`` the maximum degree, for every
    edge ``{i, j}``:

    * ``metropolis``: ``W_ij = 1 / (1 + max(d_i, d_j))`` (symmetric, doubly stochastic);
    * ``max_degree``: ``W_ij = 1 / (1 + d_max)`` (symmetric, doubly stochastic);
    * ``uniform``: ``W_ij = 1 / (1 + d_i)``: each node averages itself and its
      neighbours equally; row-stochastic but neither symmetric nor doubly stochastic
      on irregular graphs;
    * ``laplacian``: ``W = I - a L`` with ``L = D - A`` and ``a = laplacian_alpha``
      (default ``1 / (d_max + 1)``); needs ``a d_i <= 1`` so the diagonal is ``>= 0``;
    * ``given``: ``W_ij`` is the edge's ``weight`` attribute and ``W_ii`` the node's
      ``self_weight`` attribute, checked doubly stochastic
      (:func:`fedopt.topology.given.given_matrix`).

    The diagonal ``W_ii`` takes the rest, ``1 - sum_{j != i} W_ij``.

    Parameters
    ----------
    graph
        Undirected simple graph with nodes ``0..n-1``.
    rule
        One of :data:`RULES`.
    laplacian_alpha
        Step ``a`` of the ``laplacian`` rule (ignored by the other rules).

    Returns
    -------
    scipy.sparse.csr_matrix
        ``n x n`` float64 matrix with sorted indices.
    """
    if rule not in RULES:
        raise ConfigError(
            f"topology.weights: unknown mixing rule {rule!r}; use one of {', '.join(RULES)}"
        )
    if rule == "given":
        from fedopt.topology.given import given_matrix

        return given_matrix(graph)
    n, rows, cols, degree = _structure(graph)
    d_max = float(degree.max(initial=0.0))
    if rule == "metropolis":
        off = 1.0 / (1.0 + np.maximum(degree[rows], degree[cols]))
    elif rule == "max_degree":
        off = np.full(rows.shape, 1.0 / (1.0 + d_max))
    elif rule == "uniform":
        off = 1.0 / (1.0 + degree[rows])
    else:
        a = 1.0 / (d_max + 1.0) if laplacian_alpha is None else float(laplacian_alpha)
        if not a > 0:
            raise ConfigError(f"topology.laplacian_alpha: must be > 0, got {a:g}")
        if a * d_max > 1.0 + 1e-12:
            raise ConfigError(
                f"topology.laplacian_alpha: a = {a:g} makes a diagonal of W = I - a L "
                f"negative (1 - a * d_max = {1 - a * d_max:.3g} with max degree "
                f"{d_max:g}); use laplacian_alpha <= 1/d_max = {1 / d_max:.4g} or leave it "
                f"unset for 1/(d_max + 1)"
            )
        off = np.full(rows.shape, a)
    return _assemble(n, rows, cols, off)


def _sums(w: sp.spmatrix, axis: int) -> np.ndarray:
    return np.asarray(w.sum(axis=axis)).ravel()


def is_row_stochastic(w: sp.spmatrix | np.ndarray, tol: float = 1e-10) -> bool:
    """True when ``W >= -tol`` entrywise and every row sums to 1 within ``tol``."""
    w = sp.csr_matrix(w)
    if w.nnz and w.data.min() < -tol:
        return False
    return bool(np.all(np.abs(_sums(w, 1) - 1.0) <= tol))


def is_doubly_stochastic(w: sp.spmatrix | np.ndarray, tol: float = 1e-10) -> bool:
    """True when ``W`` is row-stochastic and every column also sums to 1 within ``tol``."""
    w = sp.csr_matrix(w)
    return is_row_stochastic(w, tol) and bool(np.all(np.abs(_sums(w, 0) - 1.0) <= tol))


def is_symmetric(w: sp.spmatrix | np.ndarray, tol: float = 1e-12) -> bool:
    """True when ``max |W - W^T| <= tol``."""
    w = sp.csr_matrix(w)
    diff = w - w.T
    return bool(diff.nnz == 0 or np.abs(diff.data).max() <= tol)


def column_sum_range(w: sp.spmatrix) -> tuple[float, float]:
    """``(min, max)`` of the column sums of ``W`` (1, 1 when doubly stochastic)."""
    s = _sums(sp.csr_matrix(w), 0)
    return float(s.min()), float(s.max())

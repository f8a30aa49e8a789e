"""The ``given`` mixing rule: ``W`` read from the graph's weights, checked doubly stochastic.

With ``topology.weights: given`` the mixing matrix is not derived from the graph's
structure but written on it:

* ``W_ij = W_ji`` is the ``weight`` attribute of the undirected edge ``{i, j}`` (every
  edge needs one, a finite number ``> 0``);
* ``W_ii`` is the node's ``self_weight`` attribute when it has one (finite, ``>= 0``),
  else ``1 - sum_{j != i} W_ij`` (the rest of its row).

Leaving ``self_weight`` unset is the usual way: the rows then sum to one by
construction and, the edge weights being symmetric, so do the columns; ``W`` is then
doubly stochastic as soon as every node's edge weights sum to at most one. An explicit
``self_weight`` (an edge list's ``node 3 self_weight=0.25``, a plug-in's node attribute)
is taken as written, and the matrix is refused unless every row and column sums to one
(within ``1e-9``): a ``ConfigError`` lists the offending rows and columns with their
sums and says how to fix them. DIMAT's connectivity files (Saadati et al., CVPR 2024)
are such matrices; :mod:`fedopt.topology.connectivity` builds their four cases.
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import scipy.sparse as sp

from fedopt.errors import ConfigError

TOL = 1e-9
"""Largest deviation of a row or column sum from one that is accepted."""


def _number(x: object) -> float | None:
    ok = isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)
    return float(x) if ok and math.isfinite(float(x)) else None  # type: ignore[arg-type]


def _edge_weights(graph: nx.Graph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, cols, weights)`` of both directions of every edge (no self loops)."""
    missing, bad = [], []
    rows, cols, vals = [], [], []
    for u, v, d in graph.edges(data=True):
        if u == v:
            continue
        if "weight" not in d:
            missing.append((u, v))
            continue
        w = _number(d["weight"])
        if w is None or w <= 0:
            bad.append((u, v, d["weight"]))
            continue
        rows += [u, v]
        cols += [v, u]
        vals += [w, w]
    if missing:
        shown = ", ".join(f"({u}, {v})" for u, v in missing[:8])
        more = f", ... ({len(missing)} in all)" if len(missing) > 8 else ""
        raise ConfigError(
            f"topology.weights: 'given' takes W_ij from each edge's weight attribute, but "
            f"edges {shown}{more} have none; give every edge a weight (edge list: "
            "'0 1 weight=0.25') or use a rule that derives W, such as weights: metropolis"
        )
    if bad:
        u, v, w = bad[0]
        raise ConfigError(
            f"topology.weights: 'given' needs edge weights that are finite numbers > 0, but "
            f"edge ({u}, {v}) has weight {w!r}; fix the weight or remove the edge"
        )
    return (
        np.asarray(rows, dtype=np.int64),
        np.asarray(cols, dtype=np.int64),
        np.asarray(vals, dtype=np.float64),
    )


def _diagonal(graph: nx.Graph, row_off: np.ndarray) -> np.ndarray:
    """``W_ii``: the node's ``self_weight``, else ``1 - sum_{j != i} W_ij``."""
    diag = 1.0 - row_off
    for i, value in graph.nodes(data="self_weight"):
        if value is None:
            continue
        w = _number(value)
        if w is None or w < 0:
            raise ConfigError(
                f"topology.weights: node {i} has self_weight {value!r}; a self weight must "
                "be a finite number >= 0 (or unset: then it is 1 - the sum of its edge weights)"
            )
        diag[i] = w
    return diag


def _offenders(sums: np.ndarray, what: str) -> str:
    bad = np.flatnonzero(np.abs(sums - 1.0) > TOL)
    shown = ", ".join(f"{what} {i} sums to {sums[i]:.6g}" for i in bad[:6])
    return shown + (f", ... ({len(bad)} {what}s in all)" if len(bad) > 6 else "")


def given_matrix(graph: nx.Graph) -> sp.csr_matrix:
    """The doubly stochastic mixing matrix written on ``graph`` (see the module doc).

    Parameters
    ----------
    graph
        Undirected simple graph on ``0..n-1`` with a ``weight`` on every edge and,
        optionally, a ``self_weight`` on some nodes.

    Returns
    -------
    scipy.sparse.csr_matrix
        ``n x n`` float64, sorted indices, the diagonal stored for every node.

    Raises
    ------
    ConfigError
        For an edge without a weight, a weight or self weight out of range, a negative
        diagonal, or a row or column sum that is not one; the message names the rows and
        columns, their sums and the fix.
    """
    n = graph.number_of_nodes()
    rows, cols, vals = _edge_weights(graph)
    row_off = np.bincount(rows, weights=vals, minlength=n)
    diag = _diagonal(graph, row_off)
    negative = np.flatnonzero(diag < -TOL)
    if len(negative):
        i = int(negative[0])
        raise ConfigError(
            f"topology.weights: 'given' sets W_ii = 1 - (sum of node i's edge weights), but "
            f"node {i}'s edge weights sum to {row_off[i]:.6g} > 1 (W_{i}{i} would be "
            f"{diag[i]:.6g}; {len(negative)} such node(s)); scale that node's edge weights "
            "down so they sum to at most 1"
        )
    idx = np.arange(n)
    w = sp.coo_matrix(
        (np.concatenate([vals, np.clip(diag, 0.0, None)]), (np.r_[rows, idx], np.r_[cols, idx])),
        shape=(n, n),
    ).tocsr()
    w.sort_indices()
    row_sums = np.asarray(w.sum(axis=1)).ravel()
    col_sums = np.asarray(w.sum(axis=0)).ravel()
    if (
        np.abs(row_sums - 1.0).max(initial=0.0) > TOL
        or np.abs(col_sums - 1.0).max(initial=0.0) > TOL
    ):
        parts = [p for p in (_offenders(row_sums, "row"), _offenders(col_sums, "column")) if p]
        raise ConfigError(
            "topology.weights: the given mixing matrix is not doubly stochastic ("
            + "; ".join(parts)
            + "); every row and column of W must sum to 1. Leave self_weight unset (then "
            "W_ii = 1 - the sum of node i's edge weights) or set self_weight = 1 - that sum"
        )
    return w

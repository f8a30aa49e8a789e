"""Spectral facts of a static undirected topology.

For a graph with Laplacian ``L = D - A`` and mixing matrix ``W`` (Metropolis unless the
plan says otherwise):

* ``spectral_gap = 1 - max(|lambda_2(W)|, |lambda_n(W)|)`` and
  ``second_largest_eigenvalue_modulus`` (SLEM) of ``W`` (eigenvalues sorted
  decreasingly; for a non-symmetric ``W`` the second largest modulus);
* ``laplacian_algebraic_connectivity = lambda_2(L)`` (Fiedler, 1973) and
  ``laplacian_max_eigenvalue = lambda_n(L)``;
* ``max_edge_effective_resistance = max_{ij in E} (e_i - e_j)^T L^+ (e_i - e_j)``;
* the DADAO constants (Nabli & Oyallon, "DADAO: Decoupled accelerated decentralized
  asynchronous optimization", ICML 2023) on the normalised Laplacian ``Lbar = L / |E|``:
  ``dadao_chi1 = 1 / lambda_2(Lbar)``,
  ``dadao_chi2 = max_{ij in E} 1/2 (e_i - e_j)^T Lbar^+ (e_i - e_j)`` and
  ``dadao_lambda_mix = sqrt(2 chi1 chi2)``.

Dense ``numpy.linalg.eigh`` is used for ``n <= 2000``; beyond, ``scipy.sparse.linalg.eigsh``
computes the extreme eigenvalues and the resistance-based keys are ``None`` (skipped,
``n`` too large).
"""

from __future__ import annotations

import math
from typing import Any

import networkx as nx
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as sla

from fedopt.topology.mixing import is_symmetric, mixing_matrix

DENSE_MAX_N = 2000
"""Largest ``n`` handled with dense eigendecompositions."""


def _laplacian(graph: nx.Graph) -> sp.csr_matrix:
    n = graph.number_of_nodes()
    a = nx.to_scipy_sparse_array(graph, nodelist=range(n), weight=None, format="csr")
    a = sp.csr_matrix(a, dtype=np.float64)
    a.setdiag(0.0)
    a.eliminate_zeros()
    deg = np.asarray(a.sum(axis=1)).ravel()
    return (sp.diags(deg) - a).tocsr()


def _w_eigs_dense(w: sp.csr_matrix) -> tuple[float, float]:
    """``(lambda_2, lambda_n)``-based SLEM pieces: returns ``(slem, lambda_2)``."""
    dense = w.toarray()
    if is_symmetric(w, 1e-12):
        ev = np.linalg.eigvalsh(dense)[::-1]
        return float(max(abs(ev[1]), abs(ev[-1]))), float(ev[1])
    ev = np.linalg.eigvals(dense)
    mod = np.sort(np.abs(ev))[::-1]
    return float(mod[1]), float(np.sort(ev.real)[::-1][1])


def _w_eigs_sparse(w: sp.csr_matrix) -> tuple[float, float]:
    if is_symmetric(w, 1e-12):
        top = sla.eigsh(w, k=2, which="LA", return_eigenvectors=False)
        bottom = sla.eigsh(w, k=1, which="SA", return_eigenvectors=False)
        lam2 = float(np.sort(top)[0])
        return max(abs(lam2), abs(float(bottom[0]))), lam2
    ev = sla.eigs(w, k=2, which="LM", return_eigenvectors=False)
    mod = np.sort(np.abs(ev))
    return float(mod[0]), float(np.sort(ev.real)[0])


def _laplacian_facts(graph: nx.Graph) -> dict[str, Any]:
    """Laplacian eigenvalues, effective resistances and the DADAO constants."""
    n = graph.number_of_nodes()
    m = graph.number_of_edges() - nx.number_of_selfloops(graph)
    lap = _laplacian(graph)
    out: dict[str, Any] = {}
    r_max: float | None = None
    if n <= DENSE_MAX_N:
        lam, vec = np.linalg.eigh(lap.toarray())
        lam2, lam_n = float(lam[1]), float(lam[-1])
        tol = 1e-9 * max(lam_n, 1.0)
        inv = np.where(lam > tol, 1.0 / np.where(lam > tol, lam, 1.0), 0.0)
        pinv = (vec * inv) @ vec.T
        e = np.array([(u, v) for u, v in graph.edges() if u != v], dtype=np.int64)
        if len(e):
            d = np.diag(pinv)
            res = d[e[:, 0]] + d[e[:, 1]] - 2.0 * pinv[e[:, 0], e[:, 1]]
            r_max = float(res.max())
    else:
        shifted = sla.eigsh(lap, k=2, sigma=-1e-6, which="LM", return_eigenvectors=False)
        lam2 = float(np.sort(shifted)[1])
        lam_n = float(sla.eigsh(lap, k=1, which="LA", return_eigenvectors=False)[0])
    connected = lam2 > 1e-9 * max(lam_n, 1.0)
    out["laplacian_algebraic_connectivity"] = lam2 if connected else 0.0
    out["laplacian_max_eigenvalue"] = lam_n
    out["max_edge_effective_resistance"] = r_max
    chi1 = m / lam2 if connected and m else math.inf
    chi2 = 0.5 * m * r_max if r_max is not None else None
    out["dadao_chi1"] = chi1
    out["dadao_chi2"] = chi2
    out["dadao_lambda_mix"] = math.sqrt(2.0 * chi1 * chi2) if chi2 is not None else None
    return out


def spectral_facts(graph_or_plan: Any, rule: str | None = None) -> dict[str, Any]:
    """Spectral facts of a static undirected graph or compiled plan (see module doc).

    Parameters
    ----------
    graph_or_plan
        A networkx graph on ``0..n-1`` or a :class:`~fedopt.topology.base.TopologyPlan`.
        For a time-varying plan the Laplacian keys describe the union graph and the
        ``W`` keys (a single ``W_t`` says little) are ``None``.
    rule
        Mixing rule for ``W`` when a graph is given (default ``metropolis``); a plan
        uses its own ``W``.

    Returns
    -------
    dict
        Keys ``spectral_gap``, ``second_largest_eigenvalue_modulus``,
        ``laplacian_algebraic_connectivity``, ``laplacian_max_eigenvalue``,
        ``max_edge_effective_resistance``, ``dadao_chi1``, ``dadao_chi2``,
        ``dadao_lambda_mix``, ``mixing_rule``. ``None`` marks a value skipped because
        ``n > 2000``; a disconnected graph has gap 0 and ``chi1 = inf``.
    """
    w: sp.csr_matrix | None
    if isinstance(graph_or_plan, nx.Graph):
        graph = graph_or_plan
        rule = rule or "metropolis"
        w = mixing_matrix(graph, rule)
    else:
        plan = graph_or_plan
        graph = plan.graph
        if graph is None:
            graph = nx.Graph()
            graph.add_nodes_from(range(plan.n))
            graph.add_edges_from(map(tuple, plan.edges.tolist()))
        w = plan.mixing_static
        rule = plan.weights_rule
    n = graph.number_of_nodes()
    out: dict[str, Any] = {"mixing_rule": rule}
    if n < 2:
        out.update(
            spectral_gap=1.0,
            second_largest_eigenvalue_modulus=0.0,
            laplacian_algebraic_connectivity=None,
            laplacian_max_eigenvalue=0.0,
            max_edge_effective_resistance=None,
            dadao_chi1=None,
            dadao_chi2=None,
            dadao_lambda_mix=None,
        )
        return out
    if w is None:
        out["spectral_gap"] = out["second_largest_eigenvalue_modulus"] = None
    else:
        slem, _ = _w_eigs_dense(w) if n <= DENSE_MAX_N else _w_eigs_sparse(w)
        slem = min(slem, 1.0)
        out["spectral_gap"] = 1.0 - slem
        out["second_largest_eigenvalue_modulus"] = slem
    out.update(_laplacian_facts(graph))
    return out

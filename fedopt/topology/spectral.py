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

Dense ``numpy.linalg.eigh`` is used for ``n <= 2000``. Beyond, ``scipy.sparse.linalg.eigsh``
computes the extreme eigenvalues (shift-invert just outside a Gershgorin or
Anderson-Morley bound when a sparse LU is cheap, e.g. rings, paths and grids; capped
plain Lanczos otherwise) and the resistance-based keys are ``None`` (skipped, ``n`` too
large); a value whose iteration does not converge is also ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import networkx as nx
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as sla
from scipy.sparse.csgraph import reverse_cuthill_mckee

from fedopt.topology.mixing import is_symmetric, mixing_matrix

DENSE_MAX_N = 2000
"""Largest ``n`` handled with dense eigendecompositions."""
LU_BUDGET = 2e9
"""Use shift-invert Lanczos when ``n * bandwidth^2`` (after Cuthill-McKee) is below this."""
MATVEC_WORK = 2e7
"""Plain Lanczos may use ``max(MIN_MATVECS, MATVEC_WORK / n)`` products, then gives up."""
MIN_MATVECS = 200
LANCZOS_MAXITER = 300
"""Cap on implicit restarts of the non-symmetric ``eigs`` fallback."""
_LAPLACIAN_KEYS = (
    "laplacian_algebraic_connectivity",
    "laplacian_max_eigenvalue",
    "max_edge_effective_resistance",
    "dadao_chi1",
    "dadao_chi2",
    "dadao_lambda_mix",
)


def _laplacian(graph: nx.Graph) -> sp.csr_matrix:
    n = graph.number_of_nodes()
    a = nx.to_scipy_sparse_array(graph, nodelist=range(n), weight=None, format="csr")
    a = sp.csr_matrix(a, dtype=np.float64)
    a.setdiag(0.0)
    a.eliminate_zeros()
    deg = np.asarray(a.sum(axis=1)).ravel()
    return (sp.diags(deg) - a).tocsr()


def _symmetrised(w: sp.csr_matrix) -> sp.csr_matrix | None:
    """A symmetric matrix similar to ``W``, or ``None``.

    ``W`` itself when symmetric; for a reversible ``W`` with ``W_ij / W_ii``-balance such
    as the ``uniform`` rule (``(d_i + 1) W_ij = 1``), ``R^{1/2} W R^{-1/2}`` with
    ``R = diag(1 / W_ii)``, which has the same eigenvalues.
    """
    if is_symmetric(w, 1e-12):
        return w
    d = w.diagonal()
    if np.any(d <= 0):
        return None
    r = np.sqrt(1.0 / d)
    s = sp.csr_matrix(sp.diags(r) @ w @ sp.diags(1.0 / r))
    return s if is_symmetric(s, 1e-10) else None


def _start(n: int) -> np.ndarray:
    """Fixed ARPACK start vector (ARPACK would otherwise start from a random one)."""
    return np.random.default_rng(0).standard_normal(n)


class _OutOfBudget(Exception):
    """Raised by :class:`_Capped` when an iteration uses more products than allowed."""


class _Capped(sla.LinearOperator):
    """``m`` as a linear operator that refuses more than ``budget`` products.

    A deterministic work cap (the same graph always gives the same result) for Lanczos
    on large graphs whose extreme eigenvalues cluster and converge slowly.
    """

    def __init__(self, m: sp.spmatrix, budget: int) -> None:
        super().__init__(dtype=np.float64, shape=m.shape)
        self.m = m
        self.budget = budget

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        self.budget -= 1
        if self.budget < 0:
            raise _OutOfBudget
        return self.m @ x


def _cheap_to_factor(m: sp.spmatrix) -> bool:
    """True when a sparse LU of ``m`` is cheap: small bandwidth after Cuthill-McKee."""
    m = sp.csr_matrix(m)
    perm = reverse_cuthill_mckee(m, symmetric_mode=True)
    pos = np.empty_like(perm)
    pos[perm] = np.arange(len(perm))
    coo = m.tocoo()
    band = int(np.abs(pos[coo.row] - pos[coo.col]).max(initial=0))
    return m.shape[0] * band * band <= LU_BUDGET


def _extreme(m: sp.spmatrix, k: int, top: bool, bound: float, cheap: bool) -> np.ndarray | None:
    """The ``k`` largest (``top``) or smallest eigenvalues of a sparse symmetric ``m``.

    ``bound`` is a bound on the spectrum at that end (``>=`` the largest or ``<=`` the
    smallest eigenvalue). With a cheap LU, shift-invert Lanczos just beyond ``bound``
    converges in a few steps even where eigenvalues cluster; otherwise plain Lanczos
    runs with a capped number of matrix-vector products. Returns ``None`` when it does
    not converge. The start vector is fixed, so results are deterministic.
    """
    shift = 1e-8 * max(1.0, abs(bound))
    try:
        if cheap:
            sigma = bound + shift if top else bound - shift
            ev = sla.eigsh(
                m, k=k, sigma=sigma, which="LM", v0=_start(m.shape[0]), return_eigenvectors=False
            )
        else:
            ev = sla.eigsh(
                _Capped(m, max(MIN_MATVECS, int(MATVEC_WORK // m.shape[0]))),
                k=k,
                which="LA" if top else "SA",
                maxiter=10**6,
                tol=1e-8,
                v0=_start(m.shape[0]),
                return_eigenvectors=False,
            )
    except (_OutOfBudget, sla.ArpackNoConvergence, sla.ArpackError, RuntimeError):
        return None
    return np.sort(ev)


def _w_slem(w: sp.csr_matrix) -> float | None:
    """Second largest eigenvalue modulus of a row-stochastic ``W`` (``None``: skipped)."""
    n = w.shape[0]
    s = _symmetrised(w)
    if n <= DENSE_MAX_N:
        if s is None:
            mod = np.sort(np.abs(np.linalg.eigvals(w.toarray())))[::-1]
            return float(mod[1])
        ev = np.linalg.eigvalsh(s.toarray())[::-1]
        return float(max(abs(ev[1]), abs(ev[-1])))
    if s is None:
        try:
            ev = sla.eigs(
                w,
                k=2,
                which="LM",
                maxiter=LANCZOS_MAXITER,
                v0=_start(n),
                return_eigenvectors=False,
            )
        except (sla.ArpackNoConvergence, sla.ArpackError):
            return None
        return float(np.sort(np.abs(ev))[0])
    cheap = _cheap_to_factor(s)
    top = _extreme(s, 2, True, 1.0, cheap)
    low_bound = float((2.0 * s.diagonal() - 1.0).min())  # Gershgorin
    bottom = _extreme(s, 1, False, low_bound, cheap)
    if top is None or bottom is None:
        return None
    return float(max(abs(top[0]), abs(bottom[0])))


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
        cheap = _cheap_to_factor(lap)
        deg = lap.diagonal()
        e = np.array([(u, v) for u, v in graph.edges() if u != v], dtype=np.int64)
        upper = float((deg[e[:, 0]] + deg[e[:, 1]]).max()) if len(e) else 0.0  # Anderson-Morley
        low = _extreme(lap, 2, False, 0.0, cheap)
        high = _extreme(lap, 1, True, upper, cheap)
        if low is None or high is None:
            return dict.fromkeys(_LAPLACIAN_KEYS, None)
        lam2, lam_n = float(low[1]), float(high[0])
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
        ``dadao_lambda_mix``, ``mixing_rule``. ``None`` marks a value skipped
        (resistances when ``n > 2000``, or a large-``n`` iteration that did not converge
        within its work cap); a disconnected graph has gap 0 and ``chi1 = inf``.
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
    slem = None if w is None else _w_slem(w)
    if slem is None:
        out["spectral_gap"] = out["second_largest_eigenvalue_modulus"] = None
    else:
        slem = min(slem, 1.0)
        out["spectral_gap"] = 1.0 - slem
        out["second_largest_eigenvalue_modulus"] = slem
    out.update(_laplacian_facts(graph))
    return out


def dadao_constants(graphs: Sequence[nx.Graph]) -> dict[str, Any]:
    """DADAO's ``chi1``, ``chi2`` and ``lambda_mix`` over a graph sequence: the worst case.

    The one implementation behind a DADAO run (and the baselines that share its rates)
    and ``fedopt topology``. One graph gives its own constants. A time-varying sequence
    gives the largest ``chi1`` and the largest ``chi2`` of any member (spec ``dadao.md``
    1.2, item 5: the graph switches every ``1 / chi1`` time units), and ``lambda_mix =
    sqrt(2 chi1 chi2)`` of those two.

    Parameters
    ----------
    graphs
        Undirected graphs on the same nodes ``0..n-1`` (at least one).

    Returns
    -------
    dict
        ``chi1``, ``chi2``, ``lambda_mix``, ``switch_every = 1 / chi1`` and ``members``
        (how many graphs were examined). A disconnected member has ``chi1 = inf`` (then
        ``switch_every`` is ``None``); the members after it are not examined. ``None``
        marks a value that could not be computed (effective resistances when ``n > 2000``).
    """
    if not graphs:
        raise ValueError("dadao_constants needs at least one graph")
    chi1: float | None = 0.0
    chi2: float | None = 0.0
    members = 0
    for g in graphs:
        members += 1
        facts = _laplacian_facts(g) if g.number_of_nodes() >= 2 else {}
        c1, c2 = facts.get("dadao_chi1"), facts.get("dadao_chi2")
        chi1 = None if chi1 is None or c1 is None else max(chi1, float(c1))
        chi2 = None if chi2 is None or c2 is None else max(chi2, float(c2))
        if chi1 is not None and math.isinf(chi1):
            break
    lam = None if chi1 is None or chi2 is None else math.sqrt(2.0 * chi1 * chi2)
    switch = None if not chi1 or math.isinf(chi1) else 1.0 / chi1
    return {
        "chi1": chi1,
        "chi2": chi2,
        "lambda_mix": lam,
        "switch_every": switch,
        "members": members,
    }

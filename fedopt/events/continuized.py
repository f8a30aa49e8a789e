"""Continuized accelerated gossip: an accelerated dual method on the edges' Poisson clocks.

Even, Berthier, Bach, Flammarion, Hendrikx, Gaillard, Massoulié & Taylor, "Continuized
accelerations of deterministic and stochastic gradient descents, and of gossip
algorithms", NeurIPS 2021 (arXiv 2106.07644), appendix on asynchronous decentralized
optimization; constants as in the public reference code of DADAO's baselines (Nabli &
Oyallon, ICML 2023), which corrects a misplaced factor 2 in eq. (63) of that paper.

The method solves the dual of ``min sum_i f_i(x)`` under consensus constraints: node
``i`` keeps two dual d-vectors ``y_i`` (where its dual gradient is taken) and ``z_i``
(the accelerated copy), both starting at 0, and the time ``t_i`` of its last event. Its
primal iterate is ``x_i = grad f_i*(y_i)``.

Constants come from the rate-weighted Laplacian ``Lam = sum_ij lam_ij (e_i - e_j)(e_i -
e_j)^T`` (``lam_ij`` the rate of edge ``ij``): ``lam2 = lambda_min^+(Lam)``, the
effective resistances ``R_ij = (e_i - e_j)^T Lam^+ (e_i - e_j)`` (no factor 1/2, unlike
DADAO's chi2) and ``R = max_ij R_ij``::

    eta = sqrt(lam2 / R) sqrt(mu / L),   gamma = mu / (2 R),   gamma~ = sqrt(mu L / (2 lam2 R))

Between events every node follows ``dy/dt = eta (z - y)``, ``dz/dt = eta (y - z)``,
whose exact solution over ``dt`` is, with ``b = (1 - exp(-2 eta dt)) / 2``::

    y <- y + b (z - y),   z <- z - b (z - y)

At an event of edge ``(i, j)`` both endpoints are flowed to the event time, each
computes its dual gradient ``g_i = grad f_i*(y_i)`` and sends it to the other (two
messages of ``dim`` floats, two gradient computations), and with ``D = g_i - g_j``::

    y_i <- y_i - gamma R_ij D,   y_j <- y_j + gamma R_ij D
    z_i <- z_i - gamma~ D,       z_j <- z_j + gamma~ D

The ``y`` step ``gamma R_ij <= mu / 2`` never exceeds the inverse curvature of
``sum_i f_i*(y_i)`` along ``e_i - e_j`` (each ``f_i*`` is ``1/mu``-smooth). Jumps and flow
keep ``sum_i y_i = sum_i z_i = 0`` (all nodes read at one time); at a fixed point every
``g_i`` is equal and ``sum_i grad f_i(g_i) = sum_i y_i = 0``, so ``x_i = x*``. The
constants are covariant with a common rescaling of the edge rates: multiplying every
``lam_ij`` by ``c`` multiplies ``eta`` by ``c`` and leaves the jumps unchanged, so only
the time axis changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

Y, Z = range(2)


def laplacian_resistances(n: int, edges: np.ndarray, rates: np.ndarray) -> tuple[float, np.ndarray]:
    """``(lambda_min^+(Lam), R [E])`` of the rate-weighted Laplacian (dense, float64).

    Parameters
    ----------
    n
        Number of nodes.
    edges
        ``[E, 2]`` undirected edges, each listed once.
    rates
        ``[E]`` Poisson rate of each edge's clock (> 0).
    """
    e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    w = np.asarray(rates, dtype=np.float64)
    lap = np.zeros((n, n))
    np.add.at(lap, (e[:, 0], e[:, 0]), w)
    np.add.at(lap, (e[:, 1], e[:, 1]), w)
    np.add.at(lap, (e[:, 0], e[:, 1]), -w)
    np.add.at(lap, (e[:, 1], e[:, 0]), -w)
    lam, vec = np.linalg.eigh(lap)
    tol = 1e-9 * max(float(lam[-1]), 1e-300)
    positive = lam > tol
    if int(positive.sum()) != n - 1:
        raise ValueError(f"the graph is disconnected ({n - int(positive.sum())} components)")
    inv = np.where(positive, 1.0 / np.where(positive, lam, 1.0), 0.0)
    pinv = (vec * inv) @ vec.T
    d = np.diag(pinv)
    res = d[e[:, 0]] + d[e[:, 1]] - 2.0 * pinv[e[:, 0], e[:, 1]]
    return float(lam[positive].min()), res


@dataclass(frozen=True)
class ContinuizedConstants:
    """Flow rate and jump sizes of continuized accelerated gossip (see the module doc)."""

    eta: float
    gamma: float
    gamma_t: float

    @classmethod
    def from_problem(cls, mu: float, L: float, lam2: float, r_max: float) -> ContinuizedConstants:
        """Constants for ``mu``-strongly convex, ``L``-smooth ``f_i`` and the graph's rates.

        ``lam2`` is the smallest positive eigenvalue of the rate-weighted Laplacian and
        ``r_max`` its largest edge effective resistance (without a factor 1/2).
        """
        if mu <= 0 or L < mu:
            raise ValueError(f"continuized gossip needs 0 < mu <= L, got mu={mu}, L={L}")
        if lam2 <= 0 or r_max <= 0:
            raise ValueError(f"the graph must be connected, got lam2={lam2}, r_max={r_max}")
        return cls(
            eta=math.sqrt(lam2 / r_max) * math.sqrt(mu / L),
            gamma=mu / (2.0 * r_max),
            gamma_t=math.sqrt(mu * L / (2.0 * lam2 * r_max)),
        )


class ContinuizedNodes:
    """Dual state ``S [n, 2, dim]`` (``y``, ``z``; float64) plus last-event times ``t [n]``.

    Parameters
    ----------
    n, dim
        Number of nodes and of parameters.
    constants
        Flow rate and jump sizes.
    edges
        ``[E, 2]`` undirected edges, each listed once.
    resistances
        ``[E]`` effective resistance ``R_ij`` of each edge in the rate-weighted Laplacian.
    primal
        ``primal(rows, Y)``: ``grad f_i*(y)`` for those rows (the output map).
    """

    def __init__(
        self,
        n: int,
        dim: int,
        constants: ContinuizedConstants,
        edges: np.ndarray,
        resistances: np.ndarray,
        primal: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> None:
        self.n = n
        self.c = constants
        self.S = torch.zeros(n, 2, dim, dtype=torch.float64)
        self.t = torch.zeros(n, dtype=torch.float64)
        e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
        keys = np.minimum(e[:, 0], e[:, 1]) * n + np.maximum(e[:, 0], e[:, 1])
        order = np.argsort(keys)
        self._keys = torch.from_numpy(keys[order])
        self._res = torch.from_numpy(np.asarray(resistances, dtype=np.float64)[order])
        self._primal = primal

    def resistance(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """``R_ij`` of the edges ``(i[k], j[k])`` (either orientation)."""
        keys = torch.minimum(i, j) * self.n + torch.maximum(i, j)
        pos = torch.searchsorted(self._keys, keys).clamp_max(len(self._keys) - 1)
        if not bool((self._keys[pos] == keys).all()):
            raise KeyError("an edge event names a pair that is not an edge of the graph")
        return self._res[pos]

    def flow(self, nodes: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """States of ``nodes`` flowed exactly to ``times``: ``[k, 2, dim]`` (not stored)."""
        dt = (times - self.t[nodes]).clamp_min(0)
        b = (-0.5 * torch.expm1(-2.0 * self.c.eta * dt)).view(-1, 1)
        S = self.S[nodes].clone()
        gap = S[:, Z] - S[:, Y]
        S[:, Y] += b * gap
        S[:, Z] -= b * gap
        return S

    def apply(
        self,
        grad_nodes: torch.Tensor,
        grad_times: torch.Tensor,
        edge_i: torch.Tensor,
        edge_j: torch.Tensor,
        edge_times: torch.Tensor,
        grad: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> None:
        """Apply a batch of edge events on pairwise-distinct nodes (one gather, one scatter).

        ``grad(nodes, y)`` returns the dual gradients ``grad f_i*(y_i)``. The method has
        no gradient clock, so ``grad_nodes`` must be empty.
        """
        if len(grad_nodes):
            raise ValueError("continuized gossip has no gradient clock: set node_rate to 0")
        ne = len(edge_i)
        if ne == 0:
            return
        nodes = torch.cat([edge_i, edge_j])
        times = torch.cat([edge_times, edge_times])
        S = self.flow(nodes, times)
        g = grad(nodes, S[:, Y]).to(torch.float64)
        diff = g[:ne] - g[ne:]
        step_y = (self.c.gamma * self.resistance(edge_i, edge_j)).view(-1, 1) * diff
        step_z = self.c.gamma_t * diff
        S[:ne, Y] -= step_y
        S[ne:, Y] += step_y
        S[:ne, Z] -= step_z
        S[ne:, Z] += step_z
        self.S[nodes] = S
        self.t[nodes] = times

    @property
    def x(self) -> torch.Tensor:
        """Primal iterates ``x_i = grad f_i*(y_i)``: ``[n, dim]`` float64 (the output)."""
        return self._primal(torch.arange(self.n), self.S[:, Y]).to(torch.float64)

    def x_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Primal iterates of the nodes ``ids`` only: ``[len(ids), dim]`` float64."""
        return self._primal(ids, self.S[ids, Y]).to(torch.float64)

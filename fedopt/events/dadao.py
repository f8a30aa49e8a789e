"""DADAO's exact dynamics: a linear ODE per node between events, jumps at events.

Decoupled Accelerated Decentralized Asynchronous Optimization (Nabli & Oyallon, ICML
2023, arXiv 2208.00779). Each node ``i`` keeps ``s_i = (x, x~, y, y~, z, z~)`` (six
d-vectors) and the time ``t_i`` of its last event. Between events

    ds_i/dt = M s_i,    M = [[-eta,  eta,      0,      0,      0,      0 ],
                             [ eta, -eta,      0,      0,      0,      0 ],
                             [   0,    0, -alpha,  alpha,      0,      0 ],
                             [   0, -theta nu, -theta, 0, -theta,      0 ],
                             [   0,    0,      0,      0, -alpha,  alpha ],
                             [   0,    0,      0,      0, alpha~, -alpha~]]

which is integrated exactly: ``s_i <- expm(M (t - t_i)) s_i`` (batched ``matrix_exp``).

Gradient event at node i (after the flow), with ``g = grad f_i(x) - nu x - y~``::

    x  <- x  - gamma g ;  x~ <- x~ - gamma~ g ;  y~ <- y~ + (delta + delta~) g

Edge event on (i, j) (both flowed), each sends ``u = y + z`` to the other,
``D = u_i - u_j``::

    z_i <- z_i - beta D ;  z~_i <- z~_i - beta~ D ;  z_j <- z_j + beta D ;  z~_j <- z~_j + beta~ D

Constants (``nu = mu/2``, ``r = sqrt(nu/L)``): alpha = r/4, alpha~ = r/8, eta = r/8,
theta = 1/(2r), beta = 1/2, beta~ = 2 chi1(Lambda) / r with chi1(Lambda) = chi1/lambda_mix,
delta = r/4, delta~ = 1, gamma = 1/(4L), gamma~ = 1/(4 sqrt(L nu)); chi1 and lambda_mix
are computed on Lap/|E| (see ``fedopt.topology.spectral``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

X, XT, Y, YT, Z, ZT = range(6)


@dataclass(frozen=True)
class DadaoConstants:
    """All DADAO constants, derived from mu, L and the rate-normalised chi1."""

    nu: float
    alpha: float
    alpha_t: float
    eta: float
    theta: float
    beta: float
    beta_t: float
    delta: float
    delta_t: float
    gamma: float
    gamma_t: float

    @classmethod
    def from_problem(cls, mu: float, L: float, chi1: float, lambda_mix: float) -> DadaoConstants:
        """Constants for strong convexity ``mu``, smoothness ``L`` and the graph's rates."""
        if mu <= 0 or L < mu:
            raise ValueError(f"DADAO needs 0 < mu <= L, got mu={mu}, L={L}")
        if lambda_mix <= 0:
            raise ValueError(f"the communication rate must be > 0, got {lambda_mix}")
        nu = mu / 2
        r = math.sqrt(nu / L)
        return cls(
            nu=nu,
            alpha=r / 4,
            alpha_t=r / 8,
            eta=r / 8,
            theta=1 / (2 * r),
            beta=0.5,
            beta_t=2 * (chi1 / lambda_mix) / r,
            delta=r / 4,
            delta_t=1.0,
            gamma=1 / (4 * L),
            gamma_t=1 / (4 * math.sqrt(L * nu)),
        )

    def generator(self) -> torch.Tensor:
        """The 6x6 generator ``M`` of the between-event ODE (float64)."""
        M = torch.zeros(6, 6, dtype=torch.float64)
        M[X, X], M[X, XT] = -self.eta, self.eta
        M[XT, X], M[XT, XT] = self.eta, -self.eta
        M[Y, Y], M[Y, YT] = -self.alpha, self.alpha
        M[YT, XT], M[YT, Y], M[YT, Z] = -self.theta * self.nu, -self.theta, -self.theta
        M[Z, Z], M[Z, ZT] = -self.alpha, self.alpha
        M[ZT, Z], M[ZT, ZT] = self.alpha_t, -self.alpha_t
        return M


def eigenbasis(M: torch.Tensor, tol: float = 1e-9) -> tuple[torch.Tensor, ...]:
    """A well-conditioned eigenbasis ``(lam, V, V^-1)`` of DADAO's generator.

    The spectrum of ``M`` is always {0 (twice), -r/4, -3r/8, and a complex pair with
    real part -r/8}, distinct apart from the zero. The zero eigenvalue's eigenspace
    (consensus of x and of z) is two-dimensional, so ``M`` is diagonalisable.
    ``torch.linalg.eig`` can still return two nearly parallel vectors for the double
    zero (condition numbers near 1e18 were seen), so the basis is built here: an
    orthonormal null-space basis from the SVD for 0, and the null vector of
    ``M - lam I`` for each other eigenvalue.
    """
    n = M.shape[0]
    Mc = M.to(torch.complex128)
    eye = torch.eye(n, dtype=torch.complex128)
    lams = torch.linalg.eigvals(M)
    _, _, vh = torch.linalg.svd(Mc)
    cols = [vh[-1].conj(), vh[-2].conj()]  # null space of M (smallest singular values)
    values = [0j, 0j]
    for lam in lams.tolist():
        if abs(lam) <= tol:
            continue
        _, _, vh = torch.linalg.svd(Mc - lam * eye)
        cols.append(vh[-1].conj())
        values.append(lam)
    if len(cols) != n:
        raise ValueError(f"DADAO generator: expected 2 zero eigenvalues, found {n + 2 - len(cols)}")
    V = torch.stack(cols, dim=1)
    return torch.tensor(values, dtype=torch.complex128), V, torch.linalg.inv(V)


def expm_eig(
    lam: torch.Tensor, V: torch.Tensor, V_inv: torch.Tensor, dt: torch.Tensor
) -> torch.Tensor:
    """``expm(M dt_k) = Re(V diag(exp(lam dt_k)) V^-1)`` from ``M``'s eigenbasis.

    Built from elementwise products and a sum over a fixed axis, so each matrix gets
    the same bits whatever its batch-mates (batched ``matrix_exp`` does not promise
    that). See :func:`flow_matrices` for the fast form used in the event loop.
    """
    return flow_matrices(rank_one_terms(lam, V, V_inv), lam, dt)


def rank_one_terms(lam: torch.Tensor, V: torch.Tensor, V_inv: torch.Tensor) -> torch.Tensor:
    """``O_k = V[:, k] V^-1[k, :]`` flattened: complex ``[6, 36]`` (one row per eigenvalue)."""
    return (V.T.unsqueeze(2) * V_inv.unsqueeze(1)).reshape(len(lam), -1)


def flow_matrices(terms: torch.Tensor, lam: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    """``expm(M dt_k) = sum_k Re(exp(lam_k dt) O_k)`` for every ``dt``: real ``[b, 6, 6]``.

    ``terms`` is complex ``[6, 36]`` (:func:`rank_one_terms`) or its real stacking
    ``[Re; Im]`` (``[12, 36]``, :func:`real_terms`), the fast form of the event loop:
    ``Re(e O) = Re(e) Re(O) - Im(e) Im(O)`` as one elementwise product and one sum.
    """
    if terms.is_complex():
        terms = real_terms(terms)
    e = torch.exp(lam.unsqueeze(0) * dt.to(torch.float64).unsqueeze(1))  # complex [b, 6]
    w = torch.cat([e.real, -e.imag], dim=1)  # [b, 12]
    P = (w.unsqueeze(2) * terms).sum(1)
    n = round(terms.shape[1] ** 0.5)
    return P.view(-1, n, n)


def real_terms(terms: torch.Tensor) -> torch.Tensor:
    """``[Re(O); Im(O)]``: the complex ``[6, 36]`` terms as one real ``[12, 36]`` tensor."""
    return torch.cat([terms.real, terms.imag]).contiguous()


class DadaoNodes:
    """State of DADAO nodes as one tensor ``S [n, 6, dim]`` plus last-event times.

    Parameters
    ----------
    x0
        ``[n, dim]`` initial primal iterates; every other variable starts at 0 (so
        ``sum_i z_i = 0`` holds, which convergence needs).
    constants
        DADAO constants.
    """

    def __init__(self, x0: torch.Tensor, constants: DadaoConstants) -> None:
        n, d = x0.shape
        self.c = constants
        self.M = constants.generator()
        self._eig = eigenbasis(self.M)
        self._terms = real_terms(rank_one_terms(*self._eig))
        self.S = torch.zeros(n, 6, d, dtype=torch.float64)
        self.S[:, X] = x0.to(torch.float64)
        self.t = torch.zeros(n, dtype=torch.float64)

    def apply(
        self,
        grad_nodes: torch.Tensor,
        grad_times: torch.Tensor,
        edge_i: torch.Tensor,
        edge_j: torch.Tensor,
        edge_times: torch.Tensor,
        grad: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> None:
        """Apply a batch of events on pairwise-distinct nodes: one gather, one scatter.

        Each node is first flowed exactly to its event time, then takes its jump (the
        gradient or the edge rule in the module docstring); ``grad(nodes, x)`` returns
        ``grad f_i(x_i)`` for those nodes.
        """
        c = self.c
        ng, ne = len(grad_nodes), len(edge_i)
        nodes = torch.cat([grad_nodes, edge_i, edge_j])
        times = torch.cat([grad_times, edge_times, edge_times])
        dt = (times - self.t[nodes]).clamp_min(0)
        S = torch.bmm(flow_matrices(self._terms, self._eig[0], dt), self.S[nodes])
        if ng:
            s = S[:ng]
            g = grad(grad_nodes, s[:, X]).to(torch.float64) - c.nu * s[:, X] - s[:, YT]
            s[:, X].sub_(g, alpha=c.gamma)
            s[:, XT].sub_(g, alpha=c.gamma_t)
            s[:, YT].add_(g, alpha=c.delta + c.delta_t)
        if ne:
            si, sj = S[ng : ng + ne], S[ng + ne :]
            diff = (si[:, Y] + si[:, Z]) - (sj[:, Y] + sj[:, Z])
            si[:, Z].sub_(diff, alpha=c.beta)
            si[:, ZT].sub_(diff, alpha=c.beta_t)
            sj[:, Z].add_(diff, alpha=c.beta)
            sj[:, ZT].add_(diff, alpha=c.beta_t)
        self.S[nodes] = S
        self.t[nodes] = times

    @property
    def x(self) -> torch.Tensor:
        """Primal iterates ``[n, dim]`` (the output)."""
        return self.S[:, X]

    def x_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Primal iterates of the nodes ``ids``: ``[len(ids), dim]``."""
        return self.S[ids, X]

"""Time-varying gossip schedules, registered in :data:`TOPOLOGIES` next to static graphs.

A schedule is a **class** registered with ``@TOPOLOGIES.register(name)`` that carries the
class attribute ``time_varying = True`` (this is how the compiler tells it from a static
generator, see :func:`fedopt.topology.builtins.is_time_varying`). Its constructor has the
generator signature ``(n, *, seed, **params)`` and an instance provides

* ``n``, ``period`` (rounds after which ``W_t`` repeats; 1 for schedules resampled
  every round), ``cycle`` (rounds whose union graph contains every possible edge),
  ``rule`` (a short description of ``W_t``);
* ``mixing_at(t) -> scipy.sparse.csr_matrix``: ``n x n`` float64 row-stochastic ``W_t``,
  a pure function of ``(seed, t)``, computed in O(n) (or O(|E| of the base graph)) and
  cached for the last ``t``;
* ``union_edges() -> ndarray [E, 2]``: every directed edge ``(src, dst)`` that any round
  can use (``W_t[dst, src] > 0``).

Instances are picklable (the cache is dropped when pickling).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import networkx as nx
import numpy as np
import scipy.sparse as sp

from fedopt.errors import ConfigError
from fedopt.rng import numpy_seed
from fedopt.topology.builtins import (
    TOPOLOGIES,
    call_generator,
    is_time_varying,
    need_n,
)


def _pairs_to_csr(n: int, a: np.ndarray, b: np.ndarray) -> sp.csr_matrix:
    """``W`` averaging each pair ``(a_k, b_k)`` with weight 1/2; other nodes keep weight 1.

    ``a`` and ``b`` are disjoint sets of nodes (a matching), built in O(n).
    """
    partner = np.full(n, -1, dtype=np.int64)
    partner[a] = b
    partner[b] = a
    matched = partner >= 0
    counts = np.where(matched, 2, 1)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = np.empty(indptr[-1], dtype=np.int64)
    data = np.empty(indptr[-1], dtype=np.float64)
    start = indptr[:-1]
    node = np.arange(n)
    # unmatched rows: one entry (i, i) = 1
    um = ~matched
    indices[start[um]] = node[um]
    data[start[um]] = 1.0
    # matched rows: two sorted entries, 1/2 each
    mi = node[matched]
    lo = np.minimum(mi, partner[mi])
    hi = np.maximum(mi, partner[mi])
    indices[start[mi]] = lo
    indices[start[mi] + 1] = hi
    data[start[mi]] = 0.5
    data[start[mi] + 1] = 0.5
    return sp.csr_matrix((data, indices, indptr), shape=(n, n))


class _Schedule:
    """Common state: size, seed and a one-entry cache of the last ``W_t``."""

    time_varying = True
    period: int
    cycle: int | None
    rule: str

    def __init__(self, n: int, seed: int) -> None:
        self.n = int(n)
        self.seed = int(seed)
        self._cache: tuple[int, sp.csr_matrix] | None = None

    def mixing_at(self, t: int) -> sp.csr_matrix:
        """Row-stochastic ``W_t`` (n x n, CSR, float64) for round ``t >= 0``."""
        t = int(t)
        if self._cache is not None and self._cache[0] == t:
            return self._cache[1]
        w = self._build(t)
        self._cache = (t, w)
        return w

    def _build(self, t: int) -> sp.csr_matrix:  # pragma: no cover - abstract
        raise NotImplementedError

    def union_edges(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = None
        return state


@TOPOLOGIES.register("one_peer_exponential")
class OnePeerExponential(_Schedule):
    """One-peer exponential graph: each node talks to one peer per round.

    With ``tau = ceil(log2 n)`` and ``k = t mod tau``, node ``i`` *receives from*
    ``(i + 2^k) mod n`` (so node ``j`` sends to ``(j - 2^k) mod n``) and

    ``W_t = (I + P_t) / 2``,  ``P_t[i, (i + 2^k) mod n] = 1``.

    ``P_t`` is a permutation, so ``W_t`` is doubly stochastic (but not symmetric unless
    ``2^k = n/2``). When ``n`` is a power of 2, ``W_{tau-1} ... W_1 W_0 = 11^T / n``: one
    cycle of ``tau`` rounds averages exactly. Reference: Ying et al., "Exponential graph
    is provably efficient for decentralized deep training", NeurIPS 2021.
    """

    rule = "(I + P_t)/2, one-peer exponential"

    def __init__(self, n: int, *, seed: int) -> None:
        need_n("one_peer_exponential", n, 2)
        super().__init__(n, seed)
        self.period = max(1, math.ceil(math.log2(self.n)))
        self.cycle = self.period

    def hop(self, t: int) -> int:
        """Offset ``2^(t mod tau)`` of round ``t``."""
        return 1 << (int(t) % self.period)

    def _build(self, t: int) -> sp.csr_matrix:
        n = self.n
        node = np.arange(n, dtype=np.int64)
        peer = (node + self.hop(t)) % n
        lo, hi = np.minimum(node, peer), np.maximum(node, peer)
        indices = np.stack([lo, hi], axis=1).ravel()
        data = np.full(2 * n, 0.5)
        indptr = np.arange(0, 2 * n + 1, 2, dtype=np.int64)
        return sp.csr_matrix((data, indices, indptr), shape=(n, n))

    def union_edges(self) -> np.ndarray:
        """Directed edges ``((i + 2^k) mod n -> i)`` for every ``k < tau``."""
        node = np.arange(self.n, dtype=np.int64)
        src = np.concatenate([(node + self.hop(k)) % self.n for k in range(self.period)])
        dst = np.tile(node, self.period)
        return np.unique(np.stack([src, dst], axis=1), axis=0)


@TOPOLOGIES.register("random_matching")
class RandomMatching(_Schedule):
    """Random maximal matching of a base graph, redrawn every round.

    Round ``t`` draws a maximal matching ``M_t`` of the base graph from the seed
    ``numpy_seed(seed, "topology/matching", t)``; each matched pair averages,

    ``W_t[i, i] = W_t[i, j] = 1/2`` for ``{i, j}`` in ``M_t``,  ``W_t[i, i] = 1`` otherwise,

    so ``W_t`` is symmetric and doubly stochastic. On the complete graph the matching
    pairs consecutive entries of a random permutation (O(n)); on another base graph it
    is the greedy matching of a random edge order (O(|E|)), computed in parallel rounds
    of locally-minimal edges (which gives the same matching as the sequential greedy).
    The base graph (param ``base``, a registered static topology, default
    ``complete``, with ``base_params``) is built once from ``seed``.
    """

    rule = "random maximal matching, pairs average"

    def __init__(
        self,
        n: int,
        *,
        seed: int,
        base: str = "complete",
        base_params: dict[str, Any] | None = None,
    ) -> None:
        need_n("random_matching", n, 2)
        super().__init__(n, seed)
        self.period = 1
        self.cycle = None
        base_params = dict(base_params or {})
        if not isinstance(base, str) or base not in TOPOLOGIES:
            known = [k for k, v in TOPOLOGIES.items() if not is_time_varying(v)]
            raise ConfigError(
                f"topology.params.base: random_matching needs a registered static topology "
                f"as base, got {base!r}. Use one of: {', '.join(known)}"
            )
        gen = TOPOLOGIES.get(base)
        if is_time_varying(gen):
            raise ConfigError(
                f"topology.params.base: {base!r} is itself time-varying; random_matching "
                "needs a static base graph such as complete, ring or erdos_renyi"
            )
        self.base = base
        self.complete = base == "complete"
        if self.complete:
            self._u = self._v = None
        else:
            try:
                g = call_generator(gen, self.n, self.seed, base_params, base)
            except ConfigError as exc:
                raise ConfigError(f"topology.params.base_params (base {base!r}): {exc}") from None
            if not nx.is_connected(g):
                raise ConfigError(f"topology.params.base: the base graph {base!r} is disconnected")
            e = np.array([(u, v) for u, v in g.edges() if u != v], dtype=np.int64).reshape(-1, 2)
            self._u = np.minimum(e[:, 0], e[:, 1])
            self._v = np.maximum(e[:, 0], e[:, 1])

    def matching_at(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Matched pairs ``(a, b)`` of round ``t`` (deterministic in ``(seed, t)``)."""
        rng = np.random.default_rng(numpy_seed(self.seed, "topology/matching", int(t)))
        if self.complete:
            perm = rng.permutation(self.n)
            m = self.n // 2
            return perm[0 : 2 * m : 2], perm[1 : 2 * m : 2]
        return _greedy_matching(self.n, self._u, self._v, rng.permutation(len(self._u)))

    def _build(self, t: int) -> sp.csr_matrix:
        a, b = self.matching_at(t)
        return _pairs_to_csr(self.n, a, b)

    def union_edges(self) -> np.ndarray:
        """Every edge of the base graph, in both directions."""
        if self.complete:
            i, j = np.meshgrid(np.arange(self.n), np.arange(self.n), indexing="ij")
            keep = i != j
            return np.stack([i[keep], j[keep]], axis=1).astype(np.int64)
        e = np.concatenate(
            [np.stack([self._u, self._v], 1), np.stack([self._v, self._u], 1)], axis=0
        )
        return np.unique(e, axis=0)


def _greedy_matching(
    n: int, u: np.ndarray, v: np.ndarray, priority: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy maximal matching taking edges in increasing ``priority`` (distinct ints).

    Each parallel round keeps the edges whose priority is the smallest among the live
    edges at both endpoints; these are exactly the edges the sequential greedy would
    take next, so the result equals the sequential greedy matching.
    """
    live = np.arange(len(u))
    out_a, out_b = [], []
    big = np.iinfo(np.int64).max
    while len(live):
        lu, lv, lp = u[live], v[live], priority[live]
        best = np.full(n, big, dtype=np.int64)
        np.minimum.at(best, lu, lp)
        np.minimum.at(best, lv, lp)
        take = (best[lu] == lp) & (best[lv] == lp)
        out_a.append(lu[take])
        out_b.append(lv[take])
        used = np.zeros(n, dtype=bool)
        used[lu[take]] = True
        used[lv[take]] = True
        live = live[~(used[lu] | used[lv])]
    if not out_a:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(out_a), np.concatenate(out_b)


@TOPOLOGIES.register("random_geometric_sequence")
class RandomGeometricSequence(_Schedule):
    """A cycle of ``count`` connected random geometric graphs (DADAO's time-varying setting).

    Graph ``k`` places ``n`` points uniformly in the unit square (seeded by (seed, k)),
    links points closer than ``radius``, and is made connected by linking the first node
    of each connected component to the first node of the next. Round ``t`` uses graph
    ``t mod count`` with Metropolis weights; event schedules switch graphs in continuous
    time (DADAO: every ``1 / chi1`` time units). Reference: Nabli & Oyallon, ICML 2023.
    """

    rule = "Metropolis on a cycle of connected random geometric graphs"

    def __init__(self, n: int, *, seed: int, count: int = 50, radius: float = 0.4) -> None:
        super().__init__(n, seed)
        if self.n < 2:
            raise ConfigError(f"topology.n: random_geometric_sequence needs n >= 2, got {n}")
        if int(count) < 1:
            raise ConfigError(f"topology.params.count: must be >= 1, got {count}")
        if not 0 < float(radius) <= math.sqrt(2):
            raise ConfigError(f"topology.params.radius: must be in (0, 1.42], got {radius}")
        self.count = int(count)
        self.radius = float(radius)
        self.period = self.count
        self.cycle = self.count
        self.graphs = [self._graph(k) for k in range(self.count)]

    def _graph(self, k: int) -> nx.Graph:
        pts = np.random.default_rng(numpy_seed(self.seed, "topology/rgg", k)).random((self.n, 2))
        d = np.linalg.norm(pts[:, None] - pts[None], axis=2)
        i, j = np.nonzero(np.triu(d < self.radius, k=1))
        g = nx.Graph()
        g.add_nodes_from(range(self.n))
        g.add_edges_from(zip(i.tolist(), j.tolist(), strict=True))
        firsts = sorted(min(c) for c in nx.connected_components(g))
        g.add_edges_from(itertools.pairwise(firsts))
        return g

    def _build(self, t: int) -> sp.csr_matrix:
        from fedopt.topology.mixing import mixing_matrix

        return mixing_matrix(self.graphs[t % self.count], "metropolis")

    def union_edges(self) -> np.ndarray:
        pairs = {(a, b) for g in self.graphs for a, b in g.edges()}
        both = {(a, b) for a, b in pairs} | {(b, a) for a, b in pairs}
        return np.array(sorted(both), dtype=np.int64).reshape(-1, 2)

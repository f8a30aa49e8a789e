"""Registered static topology generators (wrappers around networkx).

Every entry of :data:`TOPOLOGIES` is one of two kinds:

* a **static generator**: a function ``(n: int, *, seed: int, **params) -> nx.Graph``
  returning an undirected simple graph on the nodes ``0..n-1``;
* a **time-varying schedule** (see :mod:`fedopt.topology.schedules`): a class with the
  class attribute ``time_varying = True`` whose constructor has the same signature and
  whose instances provide ``mixing_at(t)``.

Use :func:`is_time_varying` to tell them apart and :func:`call_generator` to call either
with validated parameters. Random generators derive every seed from the experiment seed
with :func:`fedopt.rng.numpy_seed` ``(seed, "topology", attempt)``; no global RNG is used.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import networkx as nx
import numpy as np

from fedopt.errors import ConfigError, closest
from fedopt.registry import Registry
from fedopt.rng import numpy_seed

TOPOLOGIES: Registry[Any] = Registry("topology", field="topology.name")

MAX_TRIES = 100
"""Attempts of a random generator before giving up on drawing a connected graph."""


# ----------------------------------------------------------------------------- helpers


def is_time_varying(entry: Any) -> bool:
    """True when a registry entry is a time-varying schedule class."""
    return bool(getattr(entry, "time_varying", False))


def attempt_seed(seed: int, attempt: int) -> int:
    """Seed of the ``attempt``-th draw of a random generator (derived, never global)."""
    return numpy_seed(seed, "topology", attempt)


def need_n(name: str, n: int, minimum: int) -> None:
    """Raise ``topology.n: <name> needs n >= minimum`` when ``n`` is too small."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ConfigError(f"topology.n: must be an integer number of nodes, got {n!r}")
    if n < minimum:
        raise ConfigError(
            f"topology.n: {name} needs n >= {minimum}, got {n}. Set topology.n to at least "
            f"{minimum}."
        )


def int_param(
    name: str, key: str, value: Any, *, lo: int | None = None, hi: int | None = None
) -> int:
    """Validate an integer parameter ``topology.params.<key>`` of generator ``name``."""
    field = f"topology.params.{key}"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ConfigError(f"{field}: {name} needs an integer {key}, got {value!r}")
    value = int(value)
    if lo is not None and value < lo:
        raise ConfigError(f"{field}: {name} needs {key} >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise ConfigError(f"{field}: {name} needs {key} <= {hi}, got {value}")
    return value


def float_param(
    name: str,
    key: str,
    value: Any,
    *,
    lo: float,
    hi: float,
    lo_open: bool = False,
    hi_open: bool = False,
    hint: str = "",
) -> float:
    """Validate a real parameter ``topology.params.<key>`` in an (open/closed) interval."""
    field = f"topology.params.{key}"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{field}: {name} needs a number {key}, got {value!r}")
    value = float(value)
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    bad_lo = value <= lo if lo_open else value < lo
    bad_hi = value >= hi if hi_open else value > hi
    if math.isnan(value) or bad_lo or bad_hi:
        raise ConfigError(
            f"{field}: {name} needs {key} in {left}{lo:g}, {hi:g}{right}, got {value:g}.{hint}"
        )
    return value


def accepted_params(fn: Callable[..., Any]) -> tuple[list[str], bool]:
    """Keyword parameters of a generator besides ``n``/``seed``, and whether ``**kw`` is taken."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    sig = inspect.signature(target)
    names, var_kw = [], False
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            var_kw = True
        elif p.name not in ("self", "n", "seed") and p.kind in (
            inspect.Parameter.KEYWORD_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            names.append(p.name)
    return names, var_kw


def call_generator(
    fn: Callable[..., Any], n: int | None, seed: int, params: dict[str, Any], label: str
) -> Any:
    """Call a generator or schedule class after checking ``n`` and the parameter names.

    Parameters
    ----------
    fn
        Registered generator, schedule class, or plug-in function.
    n
        ``topology.n`` (required).
    seed
        Experiment seed, passed on as ``seed=``.
    params
        ``topology.params``.
    label
        Display name used in error messages.
    """
    if n is None:
        raise ConfigError(
            f"topology.n: {label!r} generates a graph and needs the number of nodes; "
            "set topology.n (e.g. topology.n: 16)"
        )
    names, var_kw = accepted_params(fn)
    if not var_kw:
        unknown = [k for k in params if k not in names]
        if unknown:
            key = unknown[0]
            hint = closest(key, names)
            did = f" Did you mean {hint!r}?" if hint else ""
            takes = ", ".join(names) if names else "no parameters"
            raise ConfigError(
                f"topology.params.{key}: {label!r} has no parameter {key!r}.{did} "
                f"It takes: {takes}."
            )
    return fn(int(n), seed=int(seed), **params)


def _relabel_sorted(g: nx.Graph, mapping: dict[Any, int]) -> nx.Graph:
    """Relabel with ``mapping`` and return a graph whose nodes are inserted in order."""
    h = nx.relabel_nodes(g, mapping, copy=True)
    out = nx.Graph()
    out.add_nodes_from(sorted(h.nodes(data=True)))
    out.add_edges_from(h.edges(data=True))
    return out


def _draw_connected(name: str, seed: int, make: Callable[[int], nx.Graph], fix: str) -> nx.Graph:
    """Draw ``make(seed_k)`` for k = 0, 1, ... until connected; give up after MAX_TRIES."""
    for attempt in range(MAX_TRIES):
        g = make(attempt_seed(seed, attempt))
        if nx.is_connected(g):
            return g
    raise ConfigError(
        f"topology.params: {name} drew {MAX_TRIES} disconnected graphs in a row; {fix}"
    )


def _square_factors(n: int) -> tuple[int, int]:
    """``(rows, cols)`` with ``rows * cols == n`` and ``rows <= cols`` as close as possible."""
    rows = math.isqrt(n)
    while n % rows:
        rows -= 1
    return rows, n // rows


def _grid_shape(name: str, n: int, rows: Any, cols: Any, minimum: int) -> tuple[int, int]:
    """Resolve the ``rows x cols`` shape of a grid/torus with ``rows * cols == n``."""
    if rows is None and cols is None:
        r, c = _square_factors(n)
    elif rows is not None and cols is not None:
        r = int_param(name, "rows", rows, lo=1)
        c = int_param(name, "cols", cols, lo=1)
    elif rows is not None:
        r = int_param(name, "rows", rows, lo=1)
        if n % r:
            raise ConfigError(
                f"topology.params.rows: {name} with n = {n} needs rows dividing n, got {r}"
            )
        c = n // r
    else:
        c = int_param(name, "cols", cols, lo=1)
        if n % c:
            raise ConfigError(
                f"topology.params.cols: {name} with n = {n} needs cols dividing n, got {c}"
            )
        r = n // c
    if r * c != n:
        raise ConfigError(
            f"topology.params: {name} needs rows * cols == topology.n, got {r} * {c} = "
            f"{r * c} != {n}. Fix rows/cols or set topology.n: {r * c}"
        )
    if min(r, c) < minimum:
        raise ConfigError(
            f"topology.params: {name} needs rows >= {minimum} and cols >= {minimum}, got "
            f"{r} x {c} for n = {n}. Choose n with such a factorisation (e.g. "
            f"{minimum * minimum}, {minimum * (minimum + 1)}) or set rows/cols"
        )
    return r, c


# -------------------------------------------------------------------------- generators


@TOPOLOGIES.register("ring")
def ring(n: int, *, seed: int) -> nx.Graph:
    """Cycle ``C_n``: node ``i`` is linked to ``i +/- 1 mod n``; needs ``n >= 3``."""
    need_n("ring", n, 3)
    return nx.cycle_graph(n)


@TOPOLOGIES.register("path")
def path(n: int, *, seed: int) -> nx.Graph:
    """Path ``P_n``: node ``i`` is linked to ``i + 1``; needs ``n >= 2``."""
    need_n("path", n, 2)
    return nx.path_graph(n)


@TOPOLOGIES.register("star")
def star(n: int, *, seed: int) -> nx.Graph:
    """Star with hub 0 (role ``server``) and leaves ``1..n-1`` (role ``client``)."""
    need_n("star", n, 2)
    g = nx.star_graph(n - 1)
    nx.set_node_attributes(g, {i: ("server" if i == 0 else "client") for i in g}, "role")
    return g


@TOPOLOGIES.register("complete")
def complete(n: int, *, seed: int) -> nx.Graph:
    """Complete graph ``K_n``; needs ``n >= 2``."""
    need_n("complete", n, 2)
    return nx.complete_graph(n)


@TOPOLOGIES.register("grid")
def grid(n: int, *, seed: int, rows: int | None = None, cols: int | None = None) -> nx.Graph:
    """2D grid ``rows x cols`` (non-periodic); node ``(r, c)`` becomes ``r * cols + c``.

    Without ``rows``/``cols`` the most square factorisation of ``n`` is used (a prime
    ``n`` gives a ``1 x n`` grid, i.e. a path).
    """
    need_n("grid", n, 2)
    r, c = _grid_shape("grid", n, rows, cols, 1)
    g = nx.grid_2d_graph(r, c)
    return _relabel_sorted(g, {(i, j): i * c + j for i, j in g})


@TOPOLOGIES.register("torus")
def torus(n: int, *, seed: int, rows: int | None = None, cols: int | None = None) -> nx.Graph:
    """2D periodic grid (torus) ``rows x cols`` with ``rows, cols >= 3`` (4-regular)."""
    need_n("torus", n, 9)
    r, c = _grid_shape("torus", n, rows, cols, 3)
    g = nx.grid_2d_graph(r, c, periodic=True)
    return _relabel_sorted(g, {(i, j): i * c + j for i, j in g})


@TOPOLOGIES.register("hypercube")
def hypercube(n: int, *, seed: int) -> nx.Graph:
    """Hypercube ``Q_d`` on ``n = 2^d`` nodes: ``i ~ j`` when they differ in one bit."""
    need_n("hypercube", n, 2)
    if n & (n - 1):
        lo = 1 << (n.bit_length() - 1)
        raise ConfigError(
            f"topology.n: hypercube needs n to be a power of 2, got {n}. "
            f"Use topology.n: {lo} or {2 * lo}"
        )
    d = n.bit_length() - 1
    g = nx.hypercube_graph(d)
    return _relabel_sorted(g, {v: int("".join(map(str, v)), 2) for v in g})


@TOPOLOGIES.register("erdos_renyi")
def erdos_renyi(n: int, *, seed: int, p: float | None = None) -> nx.Graph:
    """Connected Erdos-Renyi ``G(n, p)`` graph, redrawn until connected.

    ``p`` defaults to ``min(1, 2 ln(n) / n)``, twice the connectivity threshold
    (Erdos & Renyi, 1960). Attempt ``k`` uses the seed ``numpy_seed(seed, "topology", k)``;
    after 100 disconnected draws a ConfigError asks for a larger ``p``.
    """
    need_n("erdos_renyi", n, 2)
    if p is None:
        p = min(1.0, 2.0 * math.log(n) / n)
    p = float_param("erdos_renyi", "p", p, lo=0.0, hi=1.0, lo_open=True)
    threshold = math.log(n) / n
    return _draw_connected(
        "erdos_renyi",
        seed,
        lambda s: nx.fast_gnp_random_graph(n, p, seed=s),
        f"topology.params.p = {p:g} is too small for n = {n}: use a larger p "
        f"(the connectivity threshold is ln(n)/n = {threshold:.3g}; try p >= {2 * threshold:.3g})",
    )


@TOPOLOGIES.register("random_regular")
def random_regular(n: int, *, seed: int, degree: int = 4) -> nx.Graph:
    """Connected random ``degree``-regular graph, redrawn until connected.

    Needs ``degree < n``, ``n * degree`` even and ``degree >= 2`` when ``n > 2``.
    """
    need_n("random_regular", n, 2)
    lo = 1 if n == 2 else 2
    d = int_param("random_regular", "degree", degree, lo=lo, hi=n - 1)
    if (n * d) % 2:
        raise ConfigError(
            f"topology.params.degree: random_regular needs n * degree even, got n = {n}, "
            f"degree = {d}. Use an even degree or an even n"
        )
    return _draw_connected(
        "random_regular",
        seed,
        lambda s: nx.random_regular_graph(d, n, seed=s),
        f"use a larger topology.params.degree than {d}",
    )


@TOPOLOGIES.register("small_world")
def small_world(n: int, *, seed: int, k: int = 4, p: float = 0.1) -> nx.Graph:
    """Connected Watts-Strogatz small world (Watts & Strogatz, Nature 1998).

    Start from a ring where each node links to its ``k`` nearest neighbours (``k`` even),
    rewire each edge with probability ``p``; redraw until connected.
    """
    need_n("small_world", n, 3)
    k = int_param("small_world", "k", k, lo=2, hi=n - 1)
    if k % 2:
        raise ConfigError(
            f"topology.params.k: small_world needs an even k (k/2 neighbours per side), "
            f"got {k}. Use k: {k - 1 if k > 2 else 2} or {k + 1}"
        )
    p = float_param("small_world", "p", p, lo=0.0, hi=1.0)
    return _draw_connected(
        "small_world",
        seed,
        lambda s: nx.watts_strogatz_graph(n, k, p, seed=s),
        "use a smaller topology.params.p or a larger k",
    )


@TOPOLOGIES.register("barabasi_albert")
def barabasi_albert(n: int, *, seed: int, m: int = 2) -> nx.Graph:
    """Barabasi-Albert preferential attachment (Barabasi & Albert, Science 1999).

    Each new node attaches to ``m`` existing nodes (``1 <= m < n``); always connected.
    """
    need_n("barabasi_albert", n, 2)
    m = int_param("barabasi_albert", "m", m, lo=1, hi=n - 1)
    return nx.barabasi_albert_graph(n, m, seed=attempt_seed(seed, 0))


@TOPOLOGIES.register("exponential")
def exponential(n: int, *, seed: int) -> nx.Graph:
    """Static exponential graph: ``i ~ (i +/- 2^k) mod n`` for every ``2^k < n``.

    Undirected version of the static exponential graph of Ying et al., "Exponential
    graph is provably efficient for decentralized deep training", NeurIPS 2021.
    """
    need_n("exponential", n, 2)
    g = nx.empty_graph(n)
    i = np.arange(n)
    hop = 1
    while hop < n:
        j = (i + hop) % n
        g.add_edges_from(zip(i.tolist(), j.tolist(), strict=True))
        hop *= 2
    return g


@TOPOLOGIES.register("barbell")
def barbell(n: int, *, seed: int) -> nx.Graph:
    """Two cliques of ``n / 2`` nodes joined by a single edge; ``n`` even, ``n >= 4``."""
    need_n("barbell", n, 4)
    if n % 2:
        raise ConfigError(
            f"topology.n: barbell needs an even n (two cliques of n/2), got {n}. "
            f"Use topology.n: {n + 1}"
        )
    return nx.barbell_graph(n // 2, 0)

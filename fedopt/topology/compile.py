"""Compile a ``topology`` config into a :class:`TopologyPlan` and check it for an algorithm."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from fedopt.errors import ConfigError
from fedopt.rng import check_seed
from fedopt.topology.base import LINK_ATTRS, TopologyConfig, TopologyPlan
from fedopt.topology.builtins import call_generator, is_time_varying
from fedopt.topology.custom import is_custom_name, load_custom, lookup_registered, validate_graph
from fedopt.topology.mixing import (
    column_sum_range,
    is_doubly_stochastic,
    is_symmetric,
    mixing_matrix,
)
from fedopt.topology.spectral import _LAPLACIAN_KEYS, DENSE_MAX_N, dadao_constants, spectral_facts

SCHEDULE_CHECK_ROUNDS = 64
"""Rounds of a time-varying schedule whose ``W_t`` are checked by :func:`check_topology`."""


# ------------------------------------------------------------------------------- build


def _edge_arrays(graph: nx.Graph) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Directed edges (both directions, sorted by ``(src, dst)``) and link attributes."""
    n = graph.number_of_nodes()
    rows = [(u, v, d) for u, v, d in graph.edges(data=True) if u != v]
    und = np.array([(u, v) for u, v, _ in rows], dtype=np.int64).reshape(-1, 2)
    edges = np.concatenate([und, und[:, ::-1]], axis=0)
    order = np.argsort(edges[:, 0] * n + edges[:, 1], kind="stable")
    edges = np.ascontiguousarray(edges[order])
    attrs: dict[str, np.ndarray] = {}
    for key in LINK_ATTRS:
        if any(key in d for _, _, d in rows):
            col = np.array([float(d.get(key, np.nan)) for _, _, d in rows], dtype=np.float64)
            attrs[key] = np.concatenate([col, col])[order]
    return edges, attrs


def _is_undirected(n: int, edges: np.ndarray) -> bool:
    keys = edges[:, 0] * n + edges[:, 1]
    twins = edges[:, 1] * n + edges[:, 0]
    return bool(np.isin(twins, keys).all())


def _check_weights_fields(config: TopologyConfig, *, schedule: str | None) -> None:
    set_fields = config.model_fields_set
    if schedule is not None:
        if "weights" in set_fields or config.laplacian_alpha is not None:
            raise ConfigError(
                f"topology.weights: the schedule {schedule!r} defines its own W_t; remove "
                "topology.weights and topology.laplacian_alpha"
            )
        return
    if config.laplacian_alpha is not None and config.weights != "laplacian":
        raise ConfigError(
            f"topology.laplacian_alpha: only used with weights: laplacian, but weights is "
            f"{config.weights!r}; remove laplacian_alpha or set weights: laplacian"
        )


def _schedule_plan(config: TopologyConfig, entry: Any, seed: int) -> TopologyPlan:
    _check_weights_fields(config, schedule=config.name)
    schedule = call_generator(entry, config.n, seed, dict(config.params), config.name)
    n = int(schedule.n)
    edges = np.asarray(schedule.union_edges(), dtype=np.int64).reshape(-1, 2)
    edges = edges[np.argsort(edges[:, 0] * n + edges[:, 1], kind="stable")]
    return TopologyPlan(
        n=n,
        roles=("gossip",) * n,
        edges=np.ascontiguousarray(edges),
        edge_attrs={},
        undirected=_is_undirected(n, edges),
        name=config.name,
        weights_rule=str(getattr(schedule, "rule", config.name)),
        mixing_static=None,
        schedule=schedule,
        period=int(getattr(schedule, "period", 1)),
        graph=None,
    )


def build_topology(
    config: TopologyConfig,
    *,
    seed: int,
    base_dir: Path | None = None,
    memory_budget_gb: float | None = None,
) -> TopologyPlan:
    """Build the graph or schedule named by ``config`` and compile it into a plan.

    Before anything is built, the seed is checked (:func:`fedopt.rng.check_seed`) and
    the graph's size is bounded from the config and held against the memory budget
    (:func:`fedopt.engine.budget.check_graph_memory`).

    Parameters
    ----------
    config
        The ``topology`` section: a registered name, ``file.py:function`` or graph file.
    seed
        Experiment seed; random generators derive their seeds from it.
    base_dir
        Folder of the experiment file, first place to look for relative paths.
    memory_budget_gb
        ``engine.memory_budget_gb`` (None: the default share of the available memory).

    Raises
    ------
    ConfigError
        For a seed outside ``[0, 2**63 - 1]`` (:func:`fedopt.rng.check_seed`), a graph
        that would exceed the memory budget, or a graph or generator the topology
        cannot have.

    Returns
    -------
    TopologyPlan
        Nodes without a ``role`` attribute get ``gossip``; static graphs get the mixing
        matrix of ``config.weights``; schedules keep their own ``W_t``.
    """
    from fedopt.engine.budget import check_graph_memory

    seed = check_seed(seed, "seed")
    check_graph_memory(config, base_dir, memory_budget_gb)
    name = config.name
    params = dict(config.params)
    if is_custom_name(name):
        graph = load_custom(name, n=config.n, seed=seed, params=params, base_dir=base_dir)
    else:
        entry = lookup_registered(name)
        if is_time_varying(entry):
            return _schedule_plan(config, entry, seed)
        try:
            graph = call_generator(entry, config.n, seed, params, name)
        except ConfigError:
            raise
        except Exception as exc:  # a plug-in registered by the user
            raise ConfigError(
                f"topology.name: generator {name!r} raised {type(exc).__name__}: {exc}"
            ) from exc
    _check_weights_fields(config, schedule=None)
    graph = validate_graph(graph, n=config.n, source=name)
    n = graph.number_of_nodes()
    roles = tuple(str(graph.nodes[i].get("role", "gossip")) for i in range(n))
    edges, attrs = _edge_arrays(graph)
    w = mixing_matrix(graph, config.weights, config.laplacian_alpha)
    return TopologyPlan(
        n=n,
        roles=roles,
        edges=edges,
        edge_attrs=attrs,
        undirected=True,
        name=name,
        weights_rule=config.weights,
        mixing_static=w,
        schedule=None,
        period=None,
        graph=graph,
    )


# ------------------------------------------------------------------------------- check


def union_graph(plan: TopologyPlan) -> nx.Graph:
    """The static graph, or the undirected union of every round's edges of a schedule."""
    if plan.graph is not None:
        return plan.graph
    g = nx.Graph()
    g.add_nodes_from(range(plan.n))
    g.add_edges_from(map(tuple, plan.edges.tolist()))
    return g


def _components(plan: TopologyPlan) -> np.ndarray:
    """Component sizes (strong components for a directed union), largest first."""
    e = plan.edges
    a = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(plan.n, plan.n))
    _, labels = connected_components(a, directed=True, connection="strong")
    return np.sort(np.bincount(labels))[::-1]


def _star_hub(plan: TopologyPlan) -> int | None:
    """Hub of a static star graph (one node adjacent to all, leaves of degree 1)."""
    if plan.is_time_varying or plan.n < 2 or len(plan.edges) != 2 * (plan.n - 1):
        return None
    deg = np.bincount(plan.edges[:, 0], minlength=plan.n)
    hubs = np.flatnonzero(deg == plan.n - 1)
    servers = plan.role_nodes("server")
    if len(servers) == 1 and servers[0] in hubs:
        return int(servers[0])
    return int(hubs[0]) if len(hubs) else None


def _star_roles(plan: TopologyPlan) -> tuple[str, ...] | None:
    """Server/client roles of a star plan, or ``None`` when it is not a valid star."""
    hub = _star_hub(plan)
    if hub is None:
        return None
    given = set(plan.roles)
    if given == {"gossip"}:
        return tuple("server" if i == hub else "client" for i in range(plan.n))
    expected = tuple("server" if i == hub else "client" for i in range(plan.n))
    return expected if plan.roles == expected else None


def _not_star_error(plan: TopologyPlan, algorithm: str | None) -> ConfigError:
    who = f"algorithm {algorithm!r} needs" if algorithm else "this needs"
    reason = f"{plan.name!r} is not a star"
    if _star_hub(plan) is not None:
        counts = Counter(plan.roles)
        reason = (
            f"{plan.name!r} is a star but its roles ({dict(counts)}) are not one server at "
            "the hub and clients at the leaves"
        )
    return ConfigError(
        f"topology: {who} a star (one server + clients); {reason}. Use topology.name: star"
    )


def assign_star_roles(plan: TopologyPlan) -> TopologyPlan:
    """Return ``plan`` with hub = ``server`` and leaves = ``client`` (it must be a star)."""
    roles = _star_roles(plan)
    if roles is None:
        raise _not_star_error(plan, None)
    return plan if roles == plan.roles else dataclasses.replace(plan, roles=roles)


def _round_matrices(plan: TopologyPlan) -> list[tuple[int | None, sp.csr_matrix]]:
    if not plan.is_time_varying:
        return [(None, plan.mixing_static)]
    rounds = min(SCHEDULE_CHECK_ROUNDS, max(int(plan.period or 1), 8))
    return [(t, plan.mixing_at(t)) for t in range(rounds)]


def _weights_subject(plan: TopologyPlan, t: int | None) -> tuple[str, str, str]:
    """``(field, description, fix)`` used in weight errors."""
    if t is None:
        irregular = ""
        if plan.graph is not None:
            degrees = {d for _, d in plan.graph.degree()}
            irregular = " on this irregular graph" if len(degrees) > 1 else ""
        return (
            "topology.weights",
            f"rule {plan.weights_rule!r}{irregular} gives a W that",
            "use weights: metropolis",
        )
    return (
        "topology.name",
        f"the schedule {plan.name!r} gives a W_t (t = {t}) that",
        "use topology.name: random_matching or a static graph",
    )


def check_topology(
    plan: TopologyPlan,
    *,
    connected: bool,
    doubly_stochastic: bool,
    symmetric: bool,
    star: bool,
    algorithm: str,
) -> TopologyPlan:
    """Check that ``plan`` suits ``algorithm``; raise a ConfigError naming the fix.

    Parameters
    ----------
    plan
        Compiled topology.
    connected
        Require a connected graph (strongly connected union over one cycle for a
        time-varying schedule).
    doubly_stochastic
        Require every ``W_t`` to have unit row and column sums.
    symmetric
        Require every ``W_t`` to be symmetric.
    star
        Require one server linked to every client (and nothing else).
    algorithm
        Algorithm name, quoted in messages.

    Returns
    -------
    TopologyPlan
        ``plan``, with server/client roles assigned when ``star`` is required and the
        roles were unset (see :func:`assign_star_roles`).
    """
    if star:
        if _star_roles(plan) is None:
            raise _not_star_error(plan, algorithm)
        plan = assign_star_roles(plan)
    if connected:
        sizes = _components(plan)
        if len(sizes) > 1:
            shown = ", ".join(str(s) for s in sizes[:10]) + (", ..." if len(sizes) > 10 else "")
            kind = "disconnected" if plan.undirected else "not strongly connected"
            what = f"the graph {plan.name!r}"
            if plan.is_time_varying:
                what = f"the union over one cycle of the schedule {plan.name!r}"
            raise ConfigError(
                f"topology: {what} is {kind} ({len(sizes)} components: sizes {shown}); "
                f"algorithm {algorithm!r} needs a connected graph. Connect the components "
                "or choose another topology"
            )
    if doubly_stochastic or symmetric:
        for t, w in _round_matrices(plan):
            field, subject, fix = _weights_subject(plan, t)
            if doubly_stochastic and not is_doubly_stochastic(w, 1e-9):
                lo, hi = column_sum_range(w)
                raise ConfigError(
                    f"{field}: {subject} is not doubly stochastic (column sums range "
                    f"{lo:.2f}..{hi:.2f}); algorithm {algorithm!r} needs doubly stochastic "
                    f"weights: {fix}"
                )
            if symmetric and not is_symmetric(w, 1e-12):
                raise ConfigError(
                    f"{field}: {subject} is not symmetric; algorithm {algorithm!r} needs "
                    f"symmetric weights: {fix}"
                )
    return plan


# ------------------------------------------------------------------------- describe/draw


def sequence_graphs(plan: TopologyPlan) -> tuple[list[nx.Graph], bool]:
    """The undirected graphs a time-varying plan switches between, and whether DADAO takes them.

    A schedule with a fixed list of graphs (``random_geometric_sequence``) gives that
    list: the sequence a DADAO run switches between (``True``). Any other schedule gives
    the graphs of ``W_t`` over one cycle, or over the first
    :data:`SCHEDULE_CHECK_ROUNDS` rounds when it is resampled every round (``False``:
    DADAO refuses such schedules).
    """
    fixed = getattr(plan.schedule, "graphs", None)
    if fixed is not None:
        return list(fixed), True
    cycle = getattr(plan.schedule, "cycle", None)
    rounds = int(cycle) if cycle else SCHEDULE_CHECK_ROUNDS
    graphs = []
    for t in range(rounds):
        w = plan.mixing_at(t).tocoo()
        off = w.row != w.col
        g = nx.Graph()
        g.add_nodes_from(range(plan.n))
        g.add_edges_from(zip(w.row[off].tolist(), w.col[off].tolist(), strict=True))
        graphs.append(g)
    return graphs, False


def _time_varying_spectral(plan: TopologyPlan, facts: dict[str, Any]) -> dict[str, Any]:
    """Relabel the union graph's Laplacian facts and add DADAO's worst case over the sequence."""
    out = {(f"union_{k}" if k in _LAPLACIAN_KEYS else k): v for k, v in facts.items()}
    graphs, accepted = sequence_graphs(plan)
    worst = dadao_constants(graphs)
    out.update(
        sequence_members=worst["members"],
        dadao_chi1_worst=worst["chi1"],
        dadao_chi2_worst=worst["chi2"],
        dadao_lambda_mix_worst=worst["lambda_mix"],
        dadao_switch_every=worst["switch_every"],
        dadao_accepts=accepted and worst["chi1"] is not None and not math.isinf(worst["chi1"]),
    )
    return out


def describe(plan: TopologyPlan) -> dict[str, Any]:
    """Summary of a plan: size, degrees, connectivity, diameter, period, spectral facts.

    Degrees, edge count and diameter refer to the undirected union graph. ``diameter``
    is ``None`` when disconnected or ``n > 2000``. For a time-varying plan the Laplacian
    facts of the union graph are labelled ``union_*``, and ``dadao_chi1_worst``,
    ``dadao_chi2_worst``, ``dadao_lambda_mix_worst`` and ``dadao_switch_every`` are the
    worst case over the sequence (:func:`sequence_graphs`), computed by the function a
    DADAO run uses (:func:`~fedopt.topology.spectral.dadao_constants`); a disconnected
    member makes ``chi1`` infinite.
    """
    g = union_graph(plan)
    deg = np.array([d for _, d in g.degree()], dtype=np.float64)
    connected = bool(len(_components(plan)) == 1)
    spectral = spectral_facts(plan)
    if plan.is_time_varying:
        spectral = _time_varying_spectral(plan, spectral)
    diameter = None
    if connected and plan.n <= DENSE_MAX_N:
        diameter = int(nx.diameter(g)) if plan.n > 1 else 0
    return {
        "name": plan.name,
        "n": plan.n,
        "edges": int(g.number_of_edges()),
        "degree_min": int(deg.min()),
        "degree_mean": float(deg.mean()),
        "degree_max": int(deg.max()),
        "connected": connected,
        "diameter": diameter,
        "time_varying": plan.is_time_varying,
        "period": plan.period,
        "weights_rule": plan.weights_rule,
        "roles": dict(sorted(Counter(plan.roles).items())),
        "link_attrs": sorted(plan.edge_attrs),
        "spectral": spectral,
    }


ROLE_COLORS = {"gossip": "#4C72B0", "client": "#55A868", "server": "#C44E52"}


def draw(plan: TopologyPlan, path: str | Path, *, seed: int = 0) -> Path:
    """Save a PNG drawing of the (union) graph, nodes coloured by role.

    Uses a seeded spring layout and matplotlib's Agg canvas (imported here, so that
    importing :mod:`fedopt.topology` does not import matplotlib).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    g = union_graph(plan)
    pos = nx.spring_layout(g, seed=seed)
    fig = Figure(figsize=(6, 6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    size = max(10.0, 300.0 / max(1.0, plan.n**0.5))
    colors = [ROLE_COLORS.get(r, "#8172B2") for r in plan.roles]
    nx.draw_networkx_edges(g, pos, ax=ax, alpha=0.4, width=0.8)
    nx.draw_networkx_nodes(g, pos, ax=ax, node_color=colors, node_size=size)
    if plan.n <= 40:
        nx.draw_networkx_labels(g, pos, ax=ax, font_size=7)
    for role, color in ROLE_COLORS.items():
        if role in plan.roles:
            ax.scatter([], [], c=color, label=role)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"{plan.name} (n = {plan.n})")
    ax.set_axis_off()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out

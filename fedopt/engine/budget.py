"""Refuse up front what cannot fit: a memory estimate of a run before anything is built.

:func:`check_run_memory` is the first thing :func:`~fedopt.engine.compile.compile_plan`
does (so ``fedopt run`` and ``fedopt validate`` refuse before any graph, data or node
state exists), and :func:`check_graph_memory` guards
:func:`~fedopt.topology.build_topology` (so ``fedopt topology`` refuses too). The
estimate is an honest upper bound built from the configuration alone, in microseconds:

* **graph**: ``n * NODE_BYTES + E * (PLAN_EDGE_BYTES + RUN_EDGE_BYTES) + U * NX_EDGE_BYTES``
  with ``E`` directed edges of the plan and ``U`` undirected edges held as networkx
  graphs, bounded per generator from ``n`` and its parameters (complete: ``n(n-1)/2``,
  ring: ``n``, erdos_renyi: the mean plus six standard deviations, ...), per graph file
  from the file (lines of an edge list, ``<edge`` tags, the ``.npy`` header), plus the
  dense temporaries of generators that have them (``random_geometric_sequence``'s
  ``n x n`` distances). A plug-in generator's edges are unknown until it has run, so
  only its nodes are counted before and the built graph is checked right after;
* **node state**: ``n * dim * itemsize * T``, where ``T`` is what the algorithm declares
  (:attr:`~fedopt.algorithms.base.Algorithm.state_tensors`: its ``[k, dim]`` state
  plus the temporaries of one round) and ``itemsize`` the problem's dtype (float64 for
  event-schedule algorithms);
* **problem data**: the problem's own bound
  (:meth:`~fedopt.problems.base.Problem.data_bytes`: samples per node times features,
  plus evaluation temporaries), which knows its ``data: regenerate`` mode.

The limit is ``engine.memory_budget_gb`` when set, else :data:`DEFAULT_FRACTION` of the
memory available when the run is compiled (``MemAvailable`` of ``/proc/meminfo``,
capped by a cgroup limit; ``os.sysconf`` elsewhere). With ``engine.device: cuda`` (or
``auto`` on a GPU) and no explicit budget, node state and data are held against the
GPU's free memory and the graph against the host's. On the Ray engine the budget is per
process: every actor holds the graph and ``1/actors`` of the nodes; with an automatic
actor count (known only once the cluster is seen) only the graph is checked here.

The same module refuses runs whose byte counters could leave int64
(:func:`check_counters`); :class:`~fedopt.network.meter.Meter` never wraps either.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedopt.errors import ConfigError
from fedopt.fields import INT64_MAX

if TYPE_CHECKING:
    from fedopt.config.schema import ExperimentConfig
    from fedopt.topology.base import TopologyConfig, TopologyPlan

NODE_BYTES = 512
"""Per node: the networkx node, role, clocks, speeds, data rows and padded mixing rows."""
PLAN_EDGE_BYTES = 64
"""Per directed edge of the compiled plan: the edge list, its sort keys and temporaries."""
RUN_EDGE_BYTES = 96
"""Per directed edge in a run: meter counters, link columns, mixing matrix, neighbour table."""
NX_EDGE_BYTES = 256
"""Per undirected edge held in a networkx graph (two adjacency entries, an attribute dict)."""
PY_PAIR_BYTES = 160
"""Per directed edge collected as a Python tuple in a set (``random_geometric_sequence``)."""
DEFAULT_FRACTION = 0.8
"""Share of the available memory used as the default ``engine.memory_budget_gb``."""
GPU_FRACTION = 0.9
"""Share of a GPU's free memory used for node state and data when no budget is set."""
EVAL_BYTES = 32
"""Per element of the reported models, beyond two copies of them: the float64 copy,
deviations and squares of an evaluation (the driver's average and consensus distance)."""
SLACK = 1.2
"""Allocator overhead on top of the estimated parts (freed blocks kept for reuse)."""
BASE_BYTES = 64 << 20
"""Fixed bytes of a running engine beyond its imports (buffers, records, run files)."""

_GiB = 1 << 30
SPARSE = ("ring", "torus", "random_regular", "exponential")


# ----------------------------------------------------------------------------- format


def fmt_bytes(b: float) -> str:
    """``1.5 GiB``-style size (binary units, three significant digits)."""
    units = (("EiB", 1 << 60), ("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", _GiB))
    units += (("MiB", 1 << 20), ("KiB", 1 << 10))
    for unit, size in units:
        if b >= size:
            x = b / size
            return f"{x:.0f} {unit}" if x >= 100 else f"{x:.3g} {unit}"
    return f"{int(b)} B"


def _num(x: int) -> str:
    """An integer with thousands separators."""
    return f"{x:,}"


# ----------------------------------------------------------------------------- the budget


def _cgroup_free() -> int | None:
    """Bytes left under this process's cgroup memory limit (v2 or v1), if any."""
    pairs = (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    )
    for limit_path, usage_path in pairs:
        try:
            limit = Path(limit_path).read_text().strip()
            usage = int(Path(usage_path).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 1 << 60:
            return None
        return max(0, int(limit) - usage)
    return None


def available_memory() -> int | None:
    """Bytes of memory this process could still get, or None when unknown.

    ``MemAvailable`` from ``/proc/meminfo`` (Linux), else ``os.sysconf`` free pages (or
    all pages), capped by a cgroup memory limit when one is set.
    """
    avail: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        avail = None
    if avail is None:
        for pages in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
            try:
                avail = int(os.sysconf(pages)) * int(os.sysconf("SC_PAGE_SIZE"))
                break
            except (ValueError, OSError, AttributeError):
                continue
    cg = _cgroup_free()
    if cg is not None:
        avail = cg if avail is None else min(avail, cg)
    return avail


@dataclass(frozen=True)
class Limit:
    """A memory limit in bytes and where it comes from (quoted in messages)."""

    bytes: int
    how: str


def host_limit(memory_budget_gb: float | None) -> Limit | None:
    """The budget of this process: ``engine.memory_budget_gb`` or the default share."""
    if memory_budget_gb is not None:
        b = int(memory_budget_gb * _GiB)
        return Limit(b, f"engine.memory_budget_gb = {memory_budget_gb:g}")
    avail = available_memory()
    if avail is None:
        return None
    pct = round(DEFAULT_FRACTION * 100)
    return Limit(
        int(avail * DEFAULT_FRACTION),
        f"the default engine.memory_budget_gb: {pct}% of the {fmt_bytes(avail)} available now",
    )


def _gpu_limit(config: ExperimentConfig) -> Limit | None:
    """Free GPU memory share for a local run on CUDA without an explicit budget."""
    eng = config.engine
    if eng.kind != "local" or eng.device == "cpu" or eng.memory_budget_gb is not None:
        return None
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        free, _ = torch.cuda.mem_get_info()
    except Exception:
        return None
    pct = round(GPU_FRACTION * 100)
    return Limit(int(free * GPU_FRACTION), f"{pct}% of the GPU's {fmt_bytes(free)} free")


# ----------------------------------------------------------------------------- graphs


@dataclass(frozen=True)
class GraphSize:
    """Upper bound of a topology's size, known before it is built.

    Attributes
    ----------
    n
        Nodes (None: a graph file without ``topology.n``, known once read).
    edges
        Directed edges of the plan (both directions of every undirected edge).
    graph_edges
        Undirected edges held in networkx graphs while building and after.
    transient
        Bytes of dense temporaries while building.
    how
        How ``edges`` was bounded (quoted in messages).
    known
        False when the edges are unknown before building (plug-in generators).
    """

    n: int | None
    edges: int
    graph_edges: int
    transient: int = 0
    how: str = ""
    known: bool = True

    def bytes(self, run: bool) -> int:
        """Bytes of the compiled topology (``run``: plus the run's per-edge tables)."""
        per_edge = PLAN_EDGE_BYTES + (RUN_EDGE_BYTES if run else 0)
        return (
            (self.n or 0) * NODE_BYTES
            + self.edges * per_edge
            + self.graph_edges * NX_EDGE_BYTES
            + self.transient
        )


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def _log2ceil(n: int) -> int:
    return max(1, (n - 1).bit_length())


def _static(u: int, how: str, copies: int = 1, transient: int = 0) -> tuple[int, int, int, str]:
    return 2 * u, copies * u, transient, how


def _builtin_bound(name: str, n: int, params: dict[str, Any]) -> tuple[int, int, int, str] | None:
    """``(directed edges, networkx edges, transient bytes, how)`` of a built-in, or None."""
    p = params.get
    if name == "ring":
        return _static(n, "ring: n undirected edges")
    if name in ("path", "star"):
        return _static(n - 1, f"{name}: n - 1 undirected edges")
    if name == "complete":
        return _static(_pairs(n), "complete: n(n-1)/2 undirected edges")
    if name in ("grid", "torus"):
        return _static(2 * n, f"{name}: at most 2n edges", copies=2)
    if name == "hypercube":
        return _static(n * _log2ceil(n) // 2, "hypercube: n log2(n)/2 edges", copies=2)
    if name == "erdos_renyi":
        prob = p("p")
        prob = min(1.0, 2.0 * math.log(n) / n) if prob is None else float(prob)
        mean = max(0.0, min(1.0, prob)) * _pairs(n)
        u = min(_pairs(n), int(mean + 6.0 * math.sqrt(mean)) + 1)
        return _static(u, f"erdos_renyi: p n(n-1)/2 = {_num(int(mean))} edges (+6 sd)")
    if name == "random_regular":
        d = int(p("degree", 4))
        return _static(min(_pairs(n), n * d // 2), "random_regular: n degree/2 edges")
    if name == "small_world":
        k = int(p("k", 4))
        return _static(min(_pairs(n), n * k // 2), "small_world: n k/2 edges")
    if name == "barabasi_albert":
        m = int(p("m", 2))
        return _static(min(_pairs(n), n * m), "barabasi_albert: at most n m edges")
    if name == "exponential":
        return _static(min(_pairs(n), n * _log2ceil(n)), "exponential: n log2(n) edges")
    if name == "barbell":
        return _static(2 * _pairs(n // 2) + 1, "barbell: two cliques of n/2")
    if name == "one_peer_exponential":
        return min(2 * _pairs(n), n * _log2ceil(n)), 0, 0, "one_peer_exponential: n log2(n)"
    if name == "random_matching":
        base = p("base", "complete")
        if base == "complete":
            # union_edges: meshgrid (2 n^2 int64), mask (n^2), stacked pairs
            return 2 * _pairs(n), 0, 50 * n * n, "random_matching on complete: n(n-1)"
        inner = _builtin_bound(str(base), n, dict(p("base_params") or {}))
        if inner is None:
            return None
        e, g, t, how = inner
        return e, g, t + 16 * e, f"random_matching on {how}"
    if name == "random_geometric_sequence":
        count, radius = int(p("count", 50)), float(p("radius", 0.4))
        share = min(1.0, math.pi * radius * radius)
        per_graph = int(share * _pairs(n)) + n
        union = min(2 * _pairs(n), 2 * count * per_graph)
        dense = 40 * n * n  # pairwise differences and distances of one graph's points
        return (
            union,
            count * per_graph,
            dense + union * PY_PAIR_BYTES,
            f"random_geometric_sequence: {count} graphs of pi r^2 n(n-1)/2 edges",
        )
    return None


@lru_cache(maxsize=64)
def _count_in_file(path: str, size: int, mtime: float, token: bytes) -> int:
    """Occurrences of ``token`` in a file, read in blocks (memory: one block)."""
    count, tail, keep = 0, b"", len(token) - 1
    with open(path, "rb") as fh:
        while block := fh.read(1 << 24):
            chunk = tail + block  # a token split across blocks is counted once
            count += chunk.count(token)
            tail = chunk[-keep:] if keep else b""  # too short to hold a whole token
    return count


def _file_bound(path: Path) -> tuple[int, int | None, str]:
    """``(undirected edges, nodes or None, how)`` bound of a graph file from its content."""
    st = path.stat()
    ext = path.suffix.lower()

    def count(token: bytes) -> int:
        return _count_in_file(str(path), st.st_size, st.st_mtime, token)

    if ext in (".edgelist", ".txt", ".csv"):
        return count(b"\n") + 1, None, f"{path.name}: at most one edge per line"
    if ext == ".graphml":
        return count(b"<edge"), None, f"{path.name}: <edge> elements"
    if ext == ".gml":
        return count(b"edge"), None, f"{path.name}: edge entries"
    if ext == ".npy":
        import numpy as np

        try:
            with open(path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                read = {
                    (1, 0): np.lib.format.read_array_header_1_0,
                    (2, 0): np.lib.format.read_array_header_2_0,
                }[version]
                shape, _, _ = read(fh)
            n = int(shape[0]) if len(shape) == 2 and shape[0] == shape[1] else None
        except Exception:
            n = None
        if n is None:
            return st.st_size, None, f"{path.name}: at most one edge per byte"
        return _pairs(n) + n, n, f"{path.name}: a {n} x {n} adjacency matrix"
    # .adjlist and unknown text: every neighbour takes at least two bytes
    return st.st_size // 2 + 1, None, f"{path.name}: at most one edge per two bytes"


def graph_size(config: TopologyConfig, base_dir: Path | None) -> GraphSize:
    """Upper bound of the topology's size from its config alone (see the module doc)."""
    from fedopt.topology.builtins import TOPOLOGIES
    from fedopt.topology.custom import GRAPH_EXTS, find_file, is_custom_name, split_plugin

    name, n = config.name, config.n
    if is_custom_name(name):
        if split_plugin(name) is None and not name.endswith(".py") and name.endswith(GRAPH_EXTS):
            try:
                path = find_file(name, base_dir, what="graph file")
            except ConfigError:
                return GraphSize(n, 0, 0, known=False)  # the loader reports it
            u, file_n, how = _file_bound(path)
            if file_n is not None:
                u = min(u, _pairs(file_n) + file_n)
            nodes = n if n is not None else file_n
            if nodes is not None:
                u = min(u, _pairs(nodes) + nodes)
            transient = path.stat().st_size * 4  # the file's text or array while parsing
            return GraphSize(nodes, 2 * u, u, transient, how)
        return GraphSize(n, 0, 0, how=f"plug-in {name!r}: edges known once built", known=False)
    if n is None or name not in TOPOLOGIES:
        return GraphSize(n, 0, 0, known=False)  # the builder reports what is missing
    try:
        bound = _builtin_bound(name, int(n), dict(config.params))
    except (TypeError, ValueError, OverflowError):
        bound = None  # malformed parameters: the generator reports them
    if bound is None:
        return GraphSize(n, 0, 0, how=f"generator {name!r}: edges known once built", known=False)
    e, g, t, how = bound
    return GraphSize(int(n), int(e), int(g), int(t), how)


def built_size(plan: TopologyPlan) -> GraphSize:
    """Size of a compiled topology (exact edges)."""
    graphs = [plan.graph] if plan.graph is not None else []
    graphs += list(getattr(plan.schedule, "graphs", None) or [])
    u = sum(g.number_of_edges() for g in graphs)
    return GraphSize(plan.n, len(plan.edges), u, 0, f"{plan.name}: as built")


# ----------------------------------------------------------------------------- estimate


@dataclass(frozen=True)
class Part:
    """One term of an estimate: bytes, the field to change, how it was computed."""

    name: str
    bytes: int
    field: str
    detail: str
    fix: str
    device: str = "host"  # "host" or "gpu"


@dataclass(frozen=True)
class MemoryEstimate:
    """An upper-bound memory estimate of one process of a run, by part.

    :attr:`need` adds the runtime's overhead to the parts: :data:`SLACK` of them for the
    allocator (freed blocks it keeps) and :data:`BASE_BYTES` for the process's own
    structures beyond the imports.
    """

    parts: tuple[Part, ...]
    note: str = ""

    @property
    def total(self) -> int:
        """Bytes the process needs (:meth:`need` over every device)."""
        return self.need(None)

    def need(self, device: str | None) -> int:
        """Bytes of the parts on ``device`` (None: all) with the runtime's overhead."""
        held = sum(p.bytes for p in self.parts if device is None or p.device == device)
        return int(held * SLACK) + (BASE_BYTES if device != "gpu" else 0)

    def describe(self) -> str:
        """``graph 1.2 GiB (...) + node state ...`` (the parts with nonzero bytes)."""
        shown = [f"{p.name} {fmt_bytes(p.bytes)} ({p.detail})" for p in self.parts if p.bytes]
        pct = round((SLACK - 1) * 100)
        shown.append(f"runtime {fmt_bytes(BASE_BYTES)} + {pct}%")
        return " + ".join(shown)


def _graph_part(size: GraphSize, topo_name: str, run: bool) -> Part:
    n = size.n
    what = f"{_num(n)} nodes" if n is not None else "the nodes"
    detail = f"{what}, {_num(size.edges)} directed edges ({size.how})"
    if not size.known:
        detail = f"{what}; {size.how or 'edges unknown before building'}"
    return Part(
        "graph",
        size.bytes(run),
        "topology.n" if n is not None else "topology.name",
        detail,
        f"use fewer nodes (topology.n) or a sparser topology than {topo_name!r} "
        f"({', '.join(x for x in SPARSE if x != topo_name)}); the Ray engine does not help "
        "here: every worker holds the graph",
    )


def _actors(config: ExperimentConfig, n: int) -> int | None:
    """Actors of a Ray run when the config fixes them (None: chosen from the cluster)."""
    eng = config.engine
    if eng.one_node_per_actor:
        return n
    if eng.actors is not None:
        return eng.actors
    if eng.nodes_per_actor is not None:
        return max(1, math.ceil(n / eng.nodes_per_actor))
    return None


def estimate(
    config: ExperimentConfig,
    base_dir: Path | None = None,
    topology: TopologyPlan | None = None,
) -> MemoryEstimate:
    """Upper-bound memory of the largest process of a run (see the module doc).

    Parameters
    ----------
    config
        The validated experiment.
    base_dir
        Folder of the experiment file (to find graph files).
    topology
        The compiled topology when it exists (exact edges and nodes); otherwise the
        bound of :func:`graph_size`.
    """
    from fedopt.algorithms.base import ALGORITHMS
    from fedopt.problems import PROBLEMS

    size = built_size(topology) if topology is not None else graph_size(config.topology, base_dir)
    topo_name = config.topology.name
    parts = [_graph_part(size, topo_name, run=True)]
    n = size.n
    if n is None:  # a graph file without topology.n: nodes are known once it is read
        return MemoryEstimate(tuple(parts), "node state is checked once the graph is read")
    algo = ALGORITHMS.get(config.algorithm.name)
    problem = PROBLEMS.get(config.problem.name)
    pcfg = config.problem
    dim = problem.param_dim(pcfg)
    itemsize = algo.state_itemsize or problem.param_itemsize(pcfg)
    device = "gpu" if _gpu_limit(config) is not None else "host"
    on_ray = config.engine.kind == "ray"
    ray_fix = (
        "engine.kind: ray with more actors (each holds its share of the nodes)"
        if on_ray
        else "engine.kind: ray with actors on several machines (each holds n/actors nodes)"
    )
    hosted, note = n, ""
    if on_ray:
        actors = _actors(config, n)
        if actors is None:
            return MemoryEstimate(
                tuple(parts),
                "Ray with an automatic actor count: only the graph is checked before the "
                "cluster is seen",
            )
        hosted = math.ceil(n / max(1, min(actors, n)))
        note = f"per Ray actor: {_num(hosted)} of {_num(n)} nodes"
    worker = list(parts)
    if dim is not None:
        tensors = algo.node_tensors(config.algorithm, n)
        dim_fix = "a smaller problem.dim" if "dim" in type(pcfg).model_fields else "a smaller model"
        worker.append(
            Part(
                "node state",
                hosted * dim * itemsize * tensors,
                "problem.dim" if "dim" in type(pcfg).model_fields else "problem.name",
                f"{_num(hosted)} nodes x {_num(dim)} parameters x {tensors} tensors "
                f"({config.algorithm.name}) x {itemsize} B",
                f"use fewer nodes (topology.n), {dim_fix}, or {ray_fix}",
                device,
            )
        )
    data, detail = problem.data_bytes(pcfg, hosted)
    if data:
        regen = _regenerate_saves(problem, pcfg, hosted, data)
        worker.append(_data_part(pcfg, data, detail, ray_fix, device, regen))
    if dim is None:
        return MemoryEstimate(tuple(worker), note)
    rows = algo.output_rows(config.algorithm, n)
    evaluation = Part(
        "evaluation",
        rows * dim * (2 * itemsize + EVAL_BYTES),
        "problem.dim" if "dim" in type(pcfg).model_fields else "problem.name",
        f"{_num(rows)} reported models x {_num(dim)} x {2 * itemsize + EVAL_BYTES} B",
        "use fewer nodes (topology.n) or a smaller problem.dim; the driver averages every "
        "reported model",
    )
    if not on_ray:
        return MemoryEstimate((*worker, evaluation), note)
    driver = MemoryEstimate((*parts, evaluation), "the Ray driver")
    actor = MemoryEstimate(tuple(worker), note)
    return driver if driver.total > actor.total else actor


def _regenerate_saves(problem: Any, pcfg: Any, hosted: int, data: int) -> bool:
    """Whether the problem's ``data: regenerate`` mode would hold less than ``data``."""
    field = type(pcfg).model_fields.get("data")
    if field is None or "regenerate" not in str(field.annotation):
        return False
    less, _ = problem.data_bytes(pcfg.model_copy(update={"data": "regenerate"}), hosted)
    return less < data


def _data_part(
    pcfg: Any, data: int, detail: str, ray_fix: str, device: str, regenerate: bool
) -> Part:
    """The problem-data part, blaming the field that drives it and naming the fixes."""
    fields = type(pcfg).model_fields
    field, fixes = "problem.name", ["a smaller problem"]
    if "dim" in fields:
        field, fixes = "problem.dim", ["a smaller problem.dim"]
    if "samples_per_node" in fields:
        field = "problem.samples_per_node"
        fixes.insert(0, "fewer samples (problem.samples_per_node)")
    if regenerate:
        fixes.insert(0, "problem.data: regenerate (data rebuilt from the seed when used)")
    fixes += ["fewer nodes (topology.n)", ray_fix]
    return Part("problem data", data, field, detail, "use " + ", ".join(fixes), device)


# ----------------------------------------------------------------------------- checks


def _refuse(est: MemoryEstimate, limit: Limit, where: str, device: str | None = None) -> None:
    held = [p for p in est.parts if device is None or p.device == device]
    need = est.need(device)
    if need <= limit.bytes or not held:
        return
    top = max(held, key=lambda p: p.bytes)
    if sum(p.bytes for p in held) * SLACK < BASE_BYTES and device != "gpu":
        top = Part(  # the budget is below what any run needs
            "runtime",
            BASE_BYTES,
            "engine.memory_budget_gb",
            "",
            f"raise engine.memory_budget_gb: a run needs at least {fmt_bytes(BASE_BYTES)}",
        )
    on = " on the GPU" if device == "gpu" else ""
    tail = ""
    if top.field != "engine.memory_budget_gb":
        tail = "; or set engine.memory_budget_gb if you know the memory is there"
    note = f"; {est.note}" if est.note else ""
    raise ConfigError(
        f"{top.field}: {where} would need about {fmt_bytes(need)}{on}, more than the memory "
        f"budget of {fmt_bytes(limit.bytes)} ({limit.how}); refused before anything is "
        f"built. Estimate: "
        f"{est.describe()}{note}. Fix: {top.fix}{tail}"
    )


def check_run_memory(
    config: ExperimentConfig,
    base_dir: Path | None = None,
    topology: TopologyPlan | None = None,
) -> MemoryEstimate:
    """Raise a ConfigError when the run's estimate exceeds its memory budget.

    Called by :func:`~fedopt.engine.compile.compile_plan` twice: before the topology is
    built (the bound from the config) and right after (exact edges), both before any
    data or node state exists.

    Returns
    -------
    MemoryEstimate
        The estimate that was checked.
    """
    est = estimate(config, base_dir, topology)
    what = f"this run ({config.algorithm.name}, {config.problem.name}, {config.topology.name!r})"
    gpu = _gpu_limit(config)
    host = host_limit(config.engine.memory_budget_gb)
    if gpu is not None:
        _refuse(est, gpu, what, "gpu")
        if host is not None:
            _refuse(est, host, what, "host")
    elif host is not None:
        _refuse(est, host, what)
    check_counters(config)
    return est


def check_graph_memory(
    config: TopologyConfig, base_dir: Path | None, memory_budget_gb: float | None = None
) -> GraphSize:
    """Raise a ConfigError when building the topology alone would exceed the budget."""
    size = graph_size(config, base_dir)
    limit = host_limit(memory_budget_gb)
    if limit is not None:
        est = MemoryEstimate((_graph_part(size, config.name, run=False),))
        _refuse(est, limit, f"the topology {config.name!r}")
    return size


def check_counters(config: ExperimentConfig) -> None:
    """Refuse a run whose byte counters would leave int64 with one message per round.

    A single message of ``dim * itemsize + header_bytes`` bytes sent once per round (or
    per event) on one edge must stay below ``2**63`` bytes over the whole run; the meter
    also refuses to wrap at run time (:class:`~fedopt.network.meter.Meter`).
    """
    from fedopt.algorithms.base import ALGORITHMS
    from fedopt.problems import PROBLEMS

    problem = PROBLEMS.get(config.problem.name)
    algo = ALGORITHMS.get(config.algorithm.name)
    dim = problem.param_dim(config.problem)
    if dim is None:
        return
    itemsize = algo.state_itemsize or problem.param_itemsize(config.problem)
    header = config.network.header_bytes
    if not isinstance(header, int):  # 'measured': bounded by the calibration's cap
        from fedopt.transport.calibrate import MEASURED_MAX

        header = MEASURED_MAX
    message = dim * itemsize + header
    stop = config.stop
    if algo.schedule == "rounds":
        field, steps = "stop.rounds", stop.rounds
    elif stop.events is not None:
        field, steps = "stop.events", stop.events
    else:
        field, steps = "stop.communications", stop.communications
    if steps and message * steps > INT64_MAX:
        raise ConfigError(
            f"{field}: {steps} x messages of {message} bytes exceed 2**63 - 1 bytes, the "
            "range of the byte counters; stop sooner or use a smaller problem.dim"
        )

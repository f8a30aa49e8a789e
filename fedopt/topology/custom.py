"""User topologies: Python plug-ins, plug-in folders and graph files.

``topology.name`` that is not a registered name is resolved here:

* ``path/to/file.py:function``: the file is imported by path and
  ``function(n, seed=seed, **params)`` must return a networkx graph;
* a graph file, chosen by extension: ``.edgelist``/``.txt``/``.csv`` (edge list, see
  :func:`read_edge_list`), ``.adjlist``, ``.graphml``, ``.gml``, ``.npy`` (square
  adjacency matrix, 0/1 or weighted);
* any other name: every ``*.py`` file in the repository's ``topologies/`` folder is
  imported (once, lazily) so that generators registered there with
  ``@TOPOLOGIES.register("name")`` become known.

Relative paths are looked up against ``base_dir`` (the experiment file's folder), the
working directory, then the repository's ``topologies/`` folder.

Every graph, built-in or not, goes through :func:`validate_graph`: nodes ``0..n-1``, no
self loops, roles in ``ROLES``, link attributes ``latency_s >= 0``,
``bandwidth_Bps > 0``, ``0 <= loss < 1``.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import math
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import networkx as nx
import numpy as np

from fedopt.errors import ConfigError, closest
from fedopt.topology.base import LINK_ATTRS, ROLES
from fedopt.topology.builtins import TOPOLOGIES

EDGE_LIST_EXTS = (".edgelist", ".txt", ".csv")
GRAPH_EXTS = (*EDGE_LIST_EXTS, ".adjlist", ".graphml", ".gml", ".npy")
EDGE_ATTRS = (*LINK_ATTRS, "weight")
"""Edge attributes a graph file may set."""
NODE_ATTRS = ("role", "self_weight")
"""Node attributes an edge list may set (``self_weight``: ``W_ii`` under ``weights: given``)."""

_MODULES: dict[Path, ModuleType] = {}
_PLUGIN_FAILURES: dict[Path, str] = {}
_PLUGINS_SCANNED = False


TOPOLOGIES_ENV = "FEDOPT_TOPOLOGIES"
"""Environment variable naming the ``topologies/`` folder (set in the Docker image)."""


def repo_topologies_dir() -> Path:
    """The repository's ``topologies/`` folder.

    ``$FEDOPT_TOPOLOGIES`` when set, else the folder next to the ``fedopt`` package (a
    source checkout or an editable install). A non-editable install (``pip install .``,
    the Docker image) has no such folder beside the package, so the image sets the
    variable to its copy of ``topologies/``.
    """
    env = os.environ.get(TOPOLOGIES_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parents[2] / "topologies"


# ------------------------------------------------------------------------- name parsing


def split_plugin(name: str) -> tuple[str, str] | None:
    """``("file.py", "function")`` for ``file.py:function``, else ``None``."""
    if ":" in name:
        left, right = name.rsplit(":", 1)
        if left.endswith(".py"):
            return left, right
    return None


def is_custom_name(name: str) -> bool:
    """True when ``name`` is a plug-in reference or a graph file (not a registry name)."""
    return split_plugin(name) is not None or name.endswith(".py") or name.endswith(GRAPH_EXTS)


def find_file(name: str, base_dir: Path | None, what: str = "file") -> Path:
    """Resolve a user path: absolute, else ``base_dir``, cwd, then repository ``topologies/``.

    Raises a ConfigError listing every place looked at when the file is missing.
    """
    p = Path(name).expanduser()
    if p.is_absolute():
        candidates = [p]
    else:
        candidates = []
        if base_dir is not None:
            candidates.append(Path(base_dir) / p)
        candidates.append(Path.cwd() / p)
        repo = repo_topologies_dir()
        candidates.append(repo / p)
        if p.parts and p.parts[0] == "topologies" and len(p.parts) > 1:
            candidates.append(repo.joinpath(*p.parts[1:]))
    for c in candidates:
        if c.is_file():
            return c.resolve()
    for c in candidates:
        if c.is_dir():
            raise ConfigError(
                f"topology.name: {what} {name!r} is a folder ({c}), not a file; name the "
                "file inside it"
            )
    looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise ConfigError(
        f"topology.name: {what} {name!r} not found; looked in: {looked}. Give a path "
        "relative to the experiment file, the working directory or the repository's "
        "topologies/ folder, or an absolute path"
    )


# ------------------------------------------------------------------------ python plug-ins


def import_file(path: Path, label: str) -> ModuleType:
    """Import a Python file by path, once per resolved path (so registrations run once)."""
    path = path.resolve()
    if path in _MODULES:
        return _MODULES[path]
    digest = hashlib.blake2b(str(path).encode(), digest_size=6).hexdigest()
    mod_name = f"fedopt_user_topology_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"topology.name: cannot import {label!r} ({path}) as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # lets pickle find functions and classes defined there
    try:
        spec.loader.exec_module(module)
    except ConfigError:
        sys.modules.pop(mod_name, None)
        raise
    except Exception as exc:  # the user's code: report whatever it raised
        sys.modules.pop(mod_name, None)
        raise ConfigError(
            f"topology.name: importing plug-in {label!r} ({path}) failed: "
            f"{type(exc).__name__}: {exc}. Fix the error in that file"
        ) from exc
    _MODULES[path] = module
    return module


def load_plugin_function(name: str, base_dir: Path | None) -> Any:
    """Return the callable named by ``file.py:function``."""
    parts = split_plugin(name)
    if parts is None:
        raise ConfigError(
            f"topology.name: {name!r} names a Python file but no function; "
            f"write it as {name}:function_name"
        )
    file, func = parts
    path = find_file(file, base_dir, what="plug-in file")
    module = import_file(path, name)
    fn = getattr(module, func, None)
    if fn is None or not callable(fn):
        functions = sorted(
            k
            for k, v in vars(module).items()
            if not k.startswith("_")
            and (inspect.isfunction(v) or inspect.isclass(v))
            and getattr(v, "__module__", None) == module.__name__
        )
        hint = closest(func, functions)
        did = f" Did you mean {hint!r}?" if hint else ""
        raise ConfigError(
            f"topology.name: plug-in {file!r} has no function {func!r}.{did} "
            f"Functions defined there: {', '.join(functions) or '(none)'}"
        )
    return fn


def scan_plugins() -> dict[Path, str]:
    """Import every ``*.py`` of the repository's ``topologies/`` folder once.

    Returns the files that failed to import, with the error text (they are reported
    only if the wanted name is still unknown afterwards).
    """
    global _PLUGINS_SCANNED
    if not _PLUGINS_SCANNED:
        _PLUGINS_SCANNED = True
        folder = repo_topologies_dir()
        for path in sorted(folder.glob("*.py")) if folder.is_dir() else []:
            if path.name.startswith("_"):
                continue
            try:
                import_file(path, path.name)
            except ConfigError as exc:
                _PLUGIN_FAILURES[path.resolve()] = str(exc)
    return dict(_PLUGIN_FAILURES)


def lookup_registered(name: str) -> Any:
    """``TOPOLOGIES.get(name)``, importing the repository plug-ins first if needed."""
    if name in TOPOLOGIES:
        return TOPOLOGIES.get(name)
    if "." in name or "/" in name or "\\" in name:
        raise ConfigError(
            f"topology.name: {name!r} is neither a registered topology, a Python plug-in "
            f"'path/file.py:function' nor a graph file with a known extension "
            f"({', '.join(GRAPH_EXTS)}); rename the file or convert it"
        )
    failures = scan_plugins()
    try:
        return TOPOLOGIES.get(name)
    except ConfigError as exc:
        broken = " Some plug-ins failed to import: " + "; ".join(failures.values())
        raise ConfigError(
            f"{exc} Or give a Python plug-in 'path/file.py:function' or a graph file "
            f"({', '.join(GRAPH_EXTS)}).{broken if failures else ''}"
        ) from None


# -------------------------------------------------------------------------- graph files


def _parse_value(key: str, text: str, where: str) -> Any:
    if key == "role":
        return text
    try:
        return float(text)
    except ValueError:
        raise ConfigError(
            f"topology.name: {where}: attribute {key}={text!r} is not a number"
        ) from None


def _check_key(key: str, allowed: tuple[str, ...], where: str) -> None:
    if key not in allowed:
        hint = closest(key, allowed)
        did = f" Did you mean {hint!r}?" if hint else ""
        raise ConfigError(
            f"topology.name: {where}: unknown attribute {key!r}.{did} Allowed: {', '.join(allowed)}"
        )


def _node_id(token: str) -> Any:
    try:
        return int(token)
    except ValueError:
        return token


ENDPOINT_NAMES = ("u", "v", "source", "target", "src", "dst", "from", "to", "i", "j")


def _is_header(tokens: list[str]) -> bool:
    """A header names the endpoint columns (``u,v``...) and/or the attribute columns."""
    if len(tokens) < 2 or tokens[0] == "node" or any("=" in t for t in tokens):
        return False
    if any(isinstance(_node_id(t), int) for t in tokens[:2]):
        return False
    return tokens[0].lower() in ENDPOINT_NAMES or any(t in EDGE_ATTRS for t in tokens[2:])


def read_text_file(path: Path) -> str:
    """The UTF-8 text of a graph file; a binary file is a ConfigError naming it."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"topology.name: graph file {str(path)!r} is not UTF-8 text (byte "
            f"0x{raw[exc.start]:02x} at offset {exc.start}); a {path.suffix} file is text: "
            "one edge per line as 'u v' (a binary adjacency matrix goes in a .npy file)"
        ) from None


def read_edge_list(path: Path) -> nx.Graph:
    """Read an edge list (``.edgelist``/``.txt``/``.csv``).

    Format, one item per line, ``#`` starts a comment, fields separated by commas (if the
    line has one) or whitespace:

    * ``u v [key=value ...]``: an edge with optional attributes among ``latency_s``,
      ``bandwidth_Bps``, ``loss``, ``weight``; a networkx dict literal
      (``u v {'weight': 2}``) is also accepted;
    * ``u``: an isolated node;
    * ``node u role=server``: node attributes (``role``; ``self_weight``, the diagonal
      ``W_ii`` under ``topology.weights: given``);
    * or a header line first (``u,v,latency_s,...``; the first two columns are the
      endpoints, the others attribute names) and then plain value rows.

    An edge given twice (in either direction) and a self loop ``u u`` are refused with
    the file, the line and the edge: a silent merge would keep only the last
    attributes.
    """
    g = nx.Graph()
    header: list[str] | None = None
    first = True
    seen: dict[frozenset[Any], int] = {}

    def add_edge(u: Any, v: Any, attrs: dict[str, Any], lineno: int) -> None:
        where = f"{path.name} line {lineno}"
        if u == v:
            raise ConfigError(
                f"topology.name: {where}: edge ({u}, {v}) is a self loop; remove that line "
                "(the mixing rule sets the diagonal)"
            )
        pair = frozenset((u, v))
        if pair in seen:
            raise ConfigError(
                f"topology.name: {where}: edge ({u}, {v}) is already given on line "
                f"{seen[pair]} (edges are undirected, so 'u v' and 'v u' are the same); "
                "keep one line per edge"
            )
        seen[pair] = lineno
        g.add_edge(u, v, **attrs)

    for lineno, raw in enumerate(read_text_file(path).splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{path.name} line {lineno}"
        if "{" in line:
            head, _, literal = line.partition("{")
            tokens = head.replace(",", " ").split()
            try:
                attrs = ast.literal_eval("{" + literal)
            except (ValueError, SyntaxError):
                raise ConfigError(
                    f"topology.name: {where}: cannot parse attributes {'{' + literal!r}"
                ) from None
            if len(tokens) != 2 or not isinstance(attrs, dict):
                raise ConfigError(f"topology.name: {where}: expected 'u v {{...}}', got {raw!r}")
            for k in attrs:
                _check_key(str(k), EDGE_ATTRS, where)
            add_edge(_node_id(tokens[0]), _node_id(tokens[1]), attrs, lineno)
            first = False
            continue
        tokens = [t.strip() for t in line.split(",")] if "," in line else line.split()
        if first:
            first = False
            if _is_header(tokens):
                header = [t.lower() if t.lower() in ("u", "v") else t for t in tokens]
                for key in header[2:]:
                    _check_key(key, EDGE_ATTRS, f"{path.name} header")
                continue
        if tokens[0] == "node" and header is None:
            if len(tokens) < 2:
                raise ConfigError(f"topology.name: {where}: expected 'node u key=value'")
            attrs = {}
            for tok in tokens[2:]:
                key, sep, val = tok.partition("=")
                if not sep:
                    raise ConfigError(f"topology.name: {where}: expected key=value, got {tok!r}")
                _check_key(key, NODE_ATTRS, where)
                attrs[key] = _parse_value(key, val, where)
            g.add_node(_node_id(tokens[1]), **attrs)
            continue
        if len(tokens) == 1:
            g.add_node(_node_id(tokens[0]))
            continue
        u, v = _node_id(tokens[0]), _node_id(tokens[1])
        attrs = {}
        if header is not None:
            if len(tokens) != len(header):
                raise ConfigError(
                    f"topology.name: {where}: {len(tokens)} fields but the header has "
                    f"{len(header)} ({', '.join(header)})"
                )
            for key, val in zip(header[2:], tokens[2:], strict=True):
                if val != "":
                    attrs[key] = _parse_value(key, val, where)
        else:
            for tok in tokens[2:]:
                key, sep, val = tok.partition("=")
                if not sep:
                    raise ConfigError(
                        f"topology.name: {where}: expected 'u v key=value ...', got {tok!r}"
                    )
                _check_key(key, EDGE_ATTRS, where)
                attrs[key] = _parse_value(key, val, where)
        add_edge(u, v, attrs, lineno)
    if g.number_of_nodes() == 0:
        raise ConfigError(
            f"topology.name: graph file {path.name} ({path}) has no edges or nodes (it is "
            "empty or only comments); write one edge per line as 'u v'"
        )
    return g


def _intify(g: nx.Graph) -> nx.Graph:
    """Turn string labels like ``"3"`` into ints when every label is one."""
    try:
        mapping = {v: int(v) for v in g.nodes}
    except (TypeError, ValueError):
        return g
    if all(isinstance(v, (int, np.integer)) for v in g.nodes):
        return g
    if len(set(mapping.values())) != len(mapping):
        return g
    return nx.relabel_nodes(g, mapping, copy=True)


def read_npy(path: Path) -> nx.Graph:
    """Read a square adjacency matrix: nonzero ``A[i, j]`` is an edge (weight if not 1)."""
    try:
        a = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ConfigError(
            f"topology.name: cannot read {str(path)!r} as a .npy adjacency matrix ({exc}); "
            "write it with numpy.save(path, A) for a numeric n x n array A"
        ) from exc
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ConfigError(
            f"topology.name: {path.name} must hold a square n x n adjacency matrix, "
            f"got shape {a.shape}"
        )
    if not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
        raise ConfigError(f"topology.name: {path.name} must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)) or (a < 0).any():
        raise ConfigError(f"topology.name: {path.name}: adjacency entries must be finite and >= 0")
    if not np.allclose(a, a.T):
        i, j = np.argwhere(~np.isclose(a, a.T))[0]
        raise ConfigError(
            f"topology.name: {path.name}: the adjacency matrix is not symmetric "
            f"(A[{i},{j}] = {a[i, j]:g} but A[{j},{i}] = {a[j, i]:g}); fedopt topologies "
            "are undirected: save (A + A.T) / 2 or fix the entries"
        )
    g = nx.Graph()
    g.add_nodes_from(range(a.shape[0]))
    weighted = not np.all((a == 0) | (a == 1))
    for i, j in zip(*np.nonzero(np.triu(a)), strict=True):
        if weighted:
            g.add_edge(int(i), int(j), weight=float(a[i, j]))
        else:
            g.add_edge(int(i), int(j))
    return g


def _simple_undirected(g: nx.Graph, source: str) -> nx.Graph:
    if g.is_directed():
        raise ConfigError(
            f"topology.name: the graph {source!r} is directed; fedopt's static topologies "
            "are undirected: save it undirected (networkx: G.to_undirected())"
        )
    if g.is_multigraph():
        if any(g.number_of_edges(u, v) > 1 for u, v in set(g.edges())):
            raise ConfigError(
                f"topology.name: the graph {source!r} has parallel edges; keep one edge "
                "per pair (networkx: nx.Graph(G))"
            )
        g = nx.Graph(g)
    return g


def read_graph_file(path: Path, source: str) -> nx.Graph:
    """Load a graph file by extension (see the module doc); labels become ints when possible."""
    ext = path.suffix.lower()
    try:
        if ext in EDGE_LIST_EXTS:
            g = read_edge_list(path)
        elif ext == ".npy":
            g = read_npy(path)
        elif ext == ".adjlist":
            g = nx.read_adjlist(path)
        elif ext == ".graphml":
            g = nx.read_graphml(path)
        elif ext == ".gml":
            g = nx.read_gml(path, label="id")
        else:
            raise ConfigError(
                f"topology.name: unknown graph file type {ext!r} for {source!r}; use one "
                f"of {', '.join(GRAPH_EXTS)}"
            )
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"topology.name: cannot read graph file {source!r} ({path}): "
            f"{type(exc).__name__}: {exc}; fix the file (networkx must read it as {ext}) or "
            "convert it to an edge list"
        ) from exc
    return _intify(_simple_undirected(g, source))


def load_custom(
    name: str, *, n: int | None, seed: int, params: dict[str, Any], base_dir: Path | None
) -> nx.Graph:
    """Build the graph for a plug-in reference ``file.py:function`` or a graph file."""
    from fedopt.topology.builtins import call_generator

    if split_plugin(name) is not None or name.endswith(".py"):
        fn = load_plugin_function(name, base_dir)
        try:
            g = call_generator(fn, n, seed, params, name)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"topology.name: plug-in {name!r} raised {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(g, nx.Graph):
            raise ConfigError(
                f"topology.name: plug-in {name!r} must return a networkx graph, got "
                f"{type(g).__name__}"
            )
        return _simple_undirected(g, name)
    if params:
        raise ConfigError(
            f"topology.params: the graph file {name!r} takes no parameters, got "
            f"{', '.join(params)}; remove topology.params"
        )
    return read_graph_file(find_file(name, base_dir, what="graph file"), name)


# -------------------------------------------------------------------------- validation


def _fmt(labels: list[Any], limit: int = 8) -> str:
    shown = ", ".join(repr(x) for x in labels[:limit])
    return shown + (f", ... ({len(labels)} in all)" if len(labels) > limit else "")


def validate_graph(g: Any, *, n: int | None, source: str) -> nx.Graph:
    """Check a topology graph and return it with nodes inserted in order ``0..n-1``.

    Rules: a networkx graph (undirected, simple), nodes labelled ``0..n-1``, ``n`` equal
    to ``topology.n`` when given, no self loops, ``role`` in ``ROLES``, ``latency_s >= 0``,
    ``bandwidth_Bps > 0``, ``0 <= loss < 1`` (finite numbers).
    """
    if not isinstance(g, nx.Graph):
        raise ConfigError(
            f"topology.name: {source!r} must give a networkx graph, got {type(g).__name__}"
        )
    g = _simple_undirected(g, source)
    size = g.number_of_nodes()
    if size == 0:
        raise ConfigError(f"topology.name: the graph {source!r} has no nodes")
    expected = set(range(size))
    labels = set(g.nodes)
    if labels != expected:
        bad = sorted((x for x in labels if x not in expected), key=repr)
        missing = sorted(x for x in expected if x not in labels)
        raise ConfigError(
            f"topology.name: the graph {source!r} must have nodes labelled 0..{size - 1}; "
            f"unexpected labels: {_fmt(bad)}"
            + (f"; missing: {_fmt(missing)}" if missing else "")
            + ". Relabel with networkx.convert_node_labels_to_integers(G)"
        )
    if n is not None and size != n:
        raise ConfigError(
            f"topology.n: the graph {source!r} has {size} nodes but topology.n is {n}; "
            f"set topology.n: {size} or remove it"
        )
    loops = list(nx.selfloop_edges(g))
    if loops:
        raise ConfigError(
            f"topology.name: the graph {source!r} has self loops at nodes "
            f"{_fmt(sorted(u for u, _ in loops))}; remove them (the mixing rule sets the "
            "diagonal): networkx: G.remove_edges_from(nx.selfloop_edges(G))"
        )
    for v, role in g.nodes(data="role"):
        if role is not None and role not in ROLES:
            raise ConfigError(
                f"topology.name: node {v} of {source!r} has unknown role {role!r}; "
                f"use one of {', '.join(ROLES)}"
            )
    rules = {
        "latency_s": (lambda x: x >= 0, "latency_s >= 0"),
        "bandwidth_Bps": (lambda x: x > 0, "bandwidth_Bps > 0"),
        "loss": (lambda x: 0 <= x < 1, "0 <= loss < 1"),
    }
    for u, v, data in g.edges(data=True):
        for key, (ok, text) in rules.items():
            if key not in data:
                continue
            x = data[key]
            good = isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)
            if not good or not math.isfinite(float(x)) or not ok(float(x)):
                raise ConfigError(
                    f"topology.name: edge ({u}, {v}) of {source!r} has {key} = {x!r}; "
                    f"link attributes need {text}"
                )
    nodes = list(g.nodes)
    if nodes != list(range(size)) or any(type(v) is not int for v in nodes):
        h = nx.Graph()
        h.graph.update(g.graph)
        h.add_nodes_from(sorted((int(v), d) for v, d in g.nodes(data=True)))
        h.add_edges_from((int(u), int(v), d) for u, v, d in g.edges(data=True))
        g = h
    return g

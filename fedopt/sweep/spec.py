"""The sweep file: a base experiment and the axes that vary it, parsed and checked.

See :mod:`fedopt.sweep` for the format. :func:`parse_sweep` turns the YAML mapping into
a :class:`SweepSpec` and reports every problem of the file at once (unknown keys with
the closest one, empty axes, lists of unequal length in a ``zip``, malformed halving,
selection and metric rules) as one :class:`~fedopt.errors.ConfigError`. Whether the
axis keys exist in the experiment, and whether every cell validates, is checked when
the cells are built (:mod:`fedopt.sweep.expand`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedopt.errors import ConfigError, closest
from fedopt.sweep.metrics import parse_metric

TOP_KEYS = (
    "name",
    "experiment",
    "set",
    "grid",
    "zip",
    "cells",
    "seeds",
    "exclude",
    "halving",
    "select",
    "report",
    "resources",
)
"""Keys a sweep file may have."""

LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+,\-]*$")
"""What an option name (a cell-name component, so a folder name) may look like."""

_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.=+,\-]+")
EXPERIMENT = "experiment"
"""The reserved axis key naming the base experiment file of a cell."""


@dataclass(frozen=True)
class Option:
    """One value of an axis.

    Attributes
    ----------
    label
        Its component of the cell name (``lr=0.1``, ``dadao``, ``lsq_cycle``).
    text
        The value as the table shows it (``0.1``, ``dadao``).
    sets
        ``(dotted key, value)`` pairs the option applies (``experiment`` names a base file).
    values
        ``{key: value}`` for exclusion rules and tables (every key it sets).
    """

    label: str
    text: str
    sets: tuple[tuple[str, Any], ...]
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Axis:
    """One dimension of a grid.

    Attributes
    ----------
    name
        How rules refer to it: the dotted key (a list axis), the option set's name (a
        named axis), ``cell`` (the ``cells:`` section), ``seed``.
    kind
        ``"values"`` (a list over one key), ``"zip"`` (paired lists), ``"named"``
        (named options, each a set of keys) or ``"seed"``.
    keys
        The config keys it sets (a named axis: those of all its options).
    options
        Its values, in order.
    where
        Where the file defines it, for messages (``grid.algorithm.lr``, ``zip[0]``).
    """

    name: str
    kind: str
    keys: tuple[str, ...]
    options: tuple[Option, ...]
    where: str


@dataclass(frozen=True)
class Halving:
    """Step-size halving until the run is stable (DIFF2, spec diff2.md §4.6).

    For each point of the grid, ``key`` takes ``start * factor**k`` for ``k = 0, 1, ...,
    steps - 1`` in turn, until a step's runs are stable (:mod:`fedopt.sweep.stability`:
    no NaN or divergence, and ``metric`` never above ``tolerance`` times its running
    minimum at ``window`` consecutive evaluations). ``decide: all`` runs every seed at a
    step and needs all of them stable; ``decide: first`` decides on the first seed and
    then runs the other seeds at the chosen step only.
    """

    key: str
    start: float | None = None
    factor: float = 0.5
    steps: int = 10
    metric: str = "loss"
    window: int = 5
    tolerance: float = 1.05
    decide: str = "all"

    def values(self, start: float) -> list[float]:
        """The steps tried, largest first."""
        return [start * self.factor**k for k in range(self.steps)]


@dataclass(frozen=True)
class Selection:
    """Model selection: per group (the values of ``by``), the point with the best
    ``metric`` (mean over seeds; ``mode`` ``min`` or ``max``)."""

    metric: str
    mode: str = "min"
    by: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportSpec:
    """Defaults of ``fedopt sweep-report``: table metrics, the axis plots are grouped
    by, and the record keys of the curves (``y`` against ``x``)."""

    metrics: tuple[str, ...] = ()
    by: str | None = None
    x: str = "round"
    y: str = "loss"


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep file (see :mod:`fedopt.sweep` for the format).

    Attributes
    ----------
    name
        The sweep's name (its identity in ``sweep.json``; default: the file's stem).
    source
        The sweep file (None for a sweep given as a mapping).
    folder
        Relative experiment paths resolve here (the sweep file's folder).
    experiment
        The base experiment: a path, an inline mapping, or None (every cell names one).
    sets
        Overrides applied to every cell, before the axes.
    products
        The grids whose union is the sweep: each a tuple of axes crossed together.
    seeds
        The seeds every point runs with (None: the experiment's own seed).
    exclude
        Rules removing cells: ``{axis or key: value, pattern or list}``.
    halving, select, report
        The optional search, selection and report rules.
    cpus
        CPUs (torch threads) per cell (None: cores / jobs locally, 1 on Ray).
    """

    name: str
    source: Path | None
    folder: Path
    experiment: str | dict[str, Any] | None
    sets: tuple[tuple[str, Any], ...]
    products: tuple[tuple[Axis, ...], ...]
    seeds: tuple[int, ...] | None
    exclude: tuple[dict[str, Any], ...]
    halving: Halving | None
    select: Selection | None
    report: ReportSpec
    cpus: int | None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    def axes(self) -> list[Axis]:
        """Every axis of every product once (by name, first definition), seeds last."""
        seen: dict[str, Axis] = {}
        for product in self.products:
            for axis in product:
                seen.setdefault(axis.name, axis)
        return list(seen.values())

    def dotted_keys(self) -> list[str]:
        """Every config key an axis or the halving rule sets, in order of appearance."""
        keys: list[str] = []
        for axis in self.axes():
            for key in axis.keys:
                if key not in keys:
                    keys.append(key)
        if self.halving is not None and self.halving.key not in keys:
            keys.append(self.halving.key)
        return keys


# ----------------------------------------------------------------------------- labels


def value_text(value: Any) -> str:
    """A value as a short string: ``0.1``, ``1e-06``, ``true``, ``[1,2]``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value)) if value != 0 or math.copysign(1, value) > 0 else "-0"
        return format(value, ".12g")
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{value_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def safe_label(text: str) -> str:
    """``text`` with every run of characters unfit for a folder name replaced by ``_``."""
    out = _UNSAFE.sub("_", text).strip("_")
    if not out or not out[0].isalnum():
        out = "v" + out
    return out


def short_names(keys: list[str]) -> dict[str, str]:
    """The shortest dotted suffix of each key that no other key shares.

    ``[algorithm.lr, problem.partition.alpha]`` gives ``lr`` and ``alpha``;
    ``[algorithm.name, topology.name]`` gives both keys in full.
    """
    out = {}
    for key in keys:
        parts = key.split(".")
        for k in range(1, len(parts) + 1):
            cand = ".".join(parts[-k:])
            clash = any(
                o != key and ".".join(o.split(".")[-k:]) == cand and len(o.split(".")) >= k
                for o in keys
            )
            if not clash:
                out[key] = cand
                break
        else:
            out[key] = key
    return out


# ----------------------------------------------------------------------------- parsing


def _where(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _check_key(key: Any, where: str, problems: list[str]) -> bool:
    """A dotted config key (``algorithm.lr``), or the reserved ``experiment``."""
    if not isinstance(key, str) or not key.strip():
        problems.append(f"{where}: {key!r} is not a dotted config key; write e.g. algorithm.lr")
        return False
    parts = key.split(".")
    if any(not p.strip() or p != p.strip() for p in parts):
        problems.append(f"{where}: {key!r} is not a dotted config key; write e.g. algorithm.lr")
        return False
    if key.startswith(EXPERIMENT + "."):
        problems.append(
            f"{where}: {key!r}: 'experiment' names a base file; set keys of the experiment "
            "directly (algorithm.lr, not experiment.algorithm.lr)"
        )
        return False
    return True


def _experiment_value(value: Any, where: str, problems: list[str]) -> bool:
    if isinstance(value, str) and value.strip():
        return True
    if isinstance(value, dict) and value:
        return True
    problems.append(
        f"{where}: expected an experiment file path or an inline experiment mapping, got {value!r}"
    )
    return False


def _sets(raw: Any, where: str, problems: list[str]) -> tuple[tuple[str, Any], ...]:
    """A mapping of dotted keys to values (``set:``, a named option, a cell)."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        problems.append(
            f"{where}: expected a mapping of dotted keys to values (e.g. {{algorithm.lr: "
            f"0.1}}), got {raw!r}"
        )
        return ()
    out = []
    for key, value in raw.items():
        if not _check_key(key, f"{where}.{key}", problems):
            continue
        if key == EXPERIMENT and not _experiment_value(value, f"{where}.{key}", problems):
            continue
        out.append((key, value))
    return tuple(out)


def _values_axis(key: str, values: list[Any], where: str, problems: list[str]) -> Axis | None:
    if not values:
        problems.append(
            f"{where}: empty list; an axis needs at least one value (remove the key to use "
            "the experiment's value)"
        )
        return None
    if key == EXPERIMENT:
        bad = [v for v in values if not (isinstance(v, str) and v.strip())]
        if bad:
            problems.append(
                f"{where}: expected experiment file paths, got {bad[0]!r}; an inline "
                "experiment goes in a named option ({name: {experiment: {...}}})"
            )
            return None
        options = tuple(
            Option(safe_label(Path(v).stem), Path(v).stem, ((EXPERIMENT, v),), {EXPERIMENT: v})
            for v in values
        )
    else:
        options = tuple(
            Option("", value_text(v), ((key, v),), {key: v}) for v in values
        )  # labels need the short names: filled in by parse_sweep
    return Axis(key, "values", (key,), options, where)


def _named_axis(name: str, raw: dict[str, Any], where: str, problems: list[str]) -> Axis | None:
    if not raw:
        problems.append(f"{where}: no options; a named axis needs at least one")
        return None
    options = []
    keys: list[str] = []
    for label, body in raw.items():
        if not isinstance(label, str) or not LABEL_RE.match(label):
            problems.append(
                f"{where}: option name {label!r} is not a valid cell-name part; use letters, "
                "digits and _ . = + , - (it becomes a folder name)"
            )
            continue
        sets = _sets(body, f"{where}.{label}", problems)
        for key, _ in sets:
            if key not in keys:
                keys.append(key)
        options.append(Option(label, label, sets, dict(sets)))
    if not options:
        return None
    return Axis(name, "named", tuple(keys), tuple(options), where)


def _grid(raw: Any, where: str, problems: list[str]) -> list[Axis]:
    if not isinstance(raw, dict) or not raw:
        problems.append(
            f"{where}: expected a mapping of axes (dotted key: [values], or name: "
            f"{{option: {{key: value}}}}), got {raw!r}"
        )
        return []
    axes = []
    for key, value in raw.items():
        sub = f"{where}.{key}"
        if isinstance(value, list):
            if _check_key(key, sub, problems):
                axis = _values_axis(key, value, sub, problems)
                if axis is not None:
                    axes.append(axis)
        elif isinstance(value, dict):
            if not isinstance(key, str) or not LABEL_RE.match(key) or "." in key:
                problems.append(
                    f"{sub}: a named axis needs a plain name (letters, digits, _ -), got {key!r}"
                )
                continue
            axis = _named_axis(key, value, sub, problems)
            if axis is not None:
                axes.append(axis)
        else:
            problems.append(
                f"{sub}: expected a list of values, or a mapping of named options, got "
                f"{value!r}; write [{value_text(value)}] for one value, or put it under set:"
            )
    return axes


def _zip(raw: Any, where: str, problems: list[str]) -> Axis | None:
    if not isinstance(raw, dict) or not raw:
        problems.append(
            f"{where}: expected a mapping of dotted keys to lists of equal length, got {raw!r}"
        )
        return None
    keys, lists = [], []
    for key, value in raw.items():
        if not _check_key(key, f"{where}.{key}", problems):
            continue
        if not isinstance(value, list):
            problems.append(f"{where}.{key}: expected a list, got {value!r}")
            continue
        if not value:
            problems.append(f"{where}.{key}: empty list; an axis needs at least one value")
            continue
        keys.append(key)
        lists.append(value)
    if len(keys) != len(raw):
        return None
    lengths = {len(v) for v in lists}
    if len(lengths) > 1:
        sizes = ", ".join(f"{k}: {len(v)}" for k, v in zip(keys, lists, strict=True))
        problems.append(
            f"{where}: lists of different lengths ({sizes}); zip pairs the i-th values of "
            "each key, so give them equal lengths (or use grid: for every combination)"
        )
        return None
    options = tuple(
        Option(
            "",
            "",
            tuple((k, lst[i]) for k, lst in zip(keys, lists, strict=True)),
            {k: lst[i] for k, lst in zip(keys, lists, strict=True)},
        )
        for i in range(len(lists[0]))
    )
    return Axis("+".join(keys), "zip", tuple(keys), options, where)


def _seeds(raw: Any, problems: list[str]) -> tuple[int, ...] | None:
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw < 1:
            problems.append(f"seeds: {raw}: give a count >= 1 (seeds 0..N-1) or a list of seeds")
            return None
        return tuple(range(raw))
    if isinstance(raw, list):
        if not raw:
            problems.append("seeds: empty list; give at least one seed (or a count)")
            return None
        bad = [s for s in raw if not isinstance(s, int) or isinstance(s, bool) or s < 0]
        if bad:
            problems.append(f"seeds: {bad[0]!r} is not a seed; seeds are integers >= 0")
            return None
        dup = sorted({s for s in raw if raw.count(s) > 1})
        if dup:
            problems.append(f"seeds: {dup[0]} appears twice; list each seed once")
            return None
        return tuple(raw)
    problems.append(f"seeds: expected a count (3 = seeds 0, 1, 2) or a list of seeds, got {raw!r}")
    return None


def _known_keys(raw: Any, allowed: tuple[str, ...], where: str, problems: list[str]) -> bool:
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a mapping, got {raw!r}")
        return False
    ok = True
    for key in raw:
        if key not in allowed:
            hint = closest(str(key), allowed)
            did = f" Did you mean {hint!r}?" if hint else ""
            problems.append(
                f"{where}.{key}: unknown key {key!r}.{did} Allowed keys: {', '.join(allowed)}."
            )
            ok = False
    return ok


def _number(raw: dict[str, Any], key: str, where: str, problems: list[str]) -> float | None:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        problems.append(f"{where}.{key}: expected a finite number, got {value!r}")
        return None
    return float(value)


def _integer(
    raw: dict[str, Any], key: str, where: str, low: int, problems: list[str]
) -> int | None:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        problems.append(f"{where}.{key}: expected an integer >= {low}, got {value!r}")
        return None
    return value


def _halving(raw: Any, problems: list[str]) -> Halving | None:
    if raw is None:
        return None
    allowed = ("key", "start", "factor", "steps", "metric", "window", "tolerance", "decide")
    if not _known_keys(raw, allowed, "halving", problems):
        return None
    n0 = len(problems)
    key = raw.get("key")
    if key is None:
        problems.append("halving.key: required: the step-size key to halve, e.g. algorithm.lr")
    elif _check_key(key, "halving.key", problems) and key == EXPERIMENT:
        problems.append("halving.key: 'experiment' is not a step size; name e.g. algorithm.lr")
    kw: dict[str, Any] = {"key": key}
    if "start" in raw:
        start = _number(raw, "start", "halving", problems)
        if start is not None and start <= 0:
            problems.append(f"halving.start: {start:g}: a step size must be > 0")
        kw["start"] = start
    if "factor" in raw:
        factor = _number(raw, "factor", "halving", problems)
        if factor is not None and not 0 < factor < 1:
            problems.append(
                f"halving.factor: {factor:g}: each try multiplies the step by it, so it must be "
                "in (0, 1) (0.5 halves)"
            )
        kw["factor"] = factor
    if "steps" in raw:
        kw["steps"] = _integer(raw, "steps", "halving", 1, problems)
    if "window" in raw:
        kw["window"] = _integer(raw, "window", "halving", 1, problems)
    if "tolerance" in raw:
        tol = _number(raw, "tolerance", "halving", problems)
        if tol is not None and tol < 1:
            problems.append(
                f"halving.tolerance: {tol:g}: the loss is compared with tolerance x its running "
                "minimum, so it must be >= 1 (DIFF2: 1.05)"
            )
        kw["tolerance"] = tol
    if "metric" in raw:
        metric = raw["metric"]
        if not isinstance(metric, str) or not metric:
            problems.append(f"halving.metric: expected a record key such as loss, got {metric!r}")
        kw["metric"] = metric
    if "decide" in raw:
        decide = raw["decide"]
        if decide not in ("all", "first"):
            problems.append(
                f"halving.decide: {decide!r}: 'all' (every seed must be stable) or 'first' "
                "(decide on the first seed, then run the others at the chosen step)"
            )
        kw["decide"] = decide
    if len(problems) > n0:
        return None
    return Halving(**kw)


def _metric(raw: Any, where: str, problems: list[str]) -> str | None:
    if not isinstance(raw, str) or not raw.strip():
        problems.append(f"{where}: expected a metric such as final_loss or min(loss), got {raw!r}")
        return None
    try:
        parse_metric(raw)
    except ConfigError as exc:
        problems.append(f"{where}: {exc}")
        return None
    return raw


def _refs(raw: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (raw,)
    if isinstance(raw, list) and all(isinstance(r, str) for r in raw):
        return tuple(raw)
    problems.append(f"{where}: expected an axis name or a list of them, got {raw!r}")
    return ()


def _select(raw: Any, problems: list[str]) -> Selection | None:
    if raw is None:
        return None
    if not _known_keys(raw, ("metric", "mode", "by"), "select", problems):
        return None
    if "metric" not in raw:
        problems.append("select.metric: required, e.g. min(loss) (the lowest train loss)")
        return None
    metric = _metric(raw["metric"], "select.metric", problems)
    mode = raw.get("mode", "min")
    if mode not in ("min", "max"):
        problems.append(f"select.mode: {mode!r}: 'min' (lowest is best) or 'max'")
    by = _refs(raw.get("by"), "select.by", problems)
    if metric is None or mode not in ("min", "max"):
        return None
    return Selection(metric, mode, by)


def _report(raw: Any, problems: list[str]) -> ReportSpec:
    if raw is None:
        return ReportSpec()
    if not _known_keys(raw, ("metrics", "by", "x", "y"), "report", problems):
        return ReportSpec()
    metrics = raw.get("metrics", [])
    if isinstance(metrics, str):
        metrics = [metrics]
    if not isinstance(metrics, list):
        problems.append(f"report.metrics: expected a list of metrics, got {metrics!r}")
        metrics = []
    checked = tuple(
        m for i, m in enumerate(metrics) if _metric(m, f"report.metrics[{i}]", problems)
    )
    by = raw.get("by")
    if by is not None and not isinstance(by, str):
        problems.append(f"report.by: expected an axis name, got {by!r}")
        by = None
    x, y = raw.get("x", "round"), raw.get("y", "loss")
    for k, v in (("x", x), ("y", y)):
        if not isinstance(v, str) or not v:
            problems.append(f"report.{k}: expected a record key such as round or loss, got {v!r}")
    return ReportSpec(checked, by, str(x), str(y))


def _exclude(raw: Any, problems: list[str]) -> tuple[dict[str, Any], ...]:
    if raw is None:
        return ()
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(r, dict) and r for r in raw):
        problems.append(
            "exclude: expected a list of rules such as {method: msda, experiment: 'logreg_*'} "
            f"(each a mapping of axis to value, pattern or list), got {raw!r}"
        )
        return ()
    return tuple(raw)


def parse_sweep(data: Any, source: Path | None = None, folder: Path | None = None) -> SweepSpec:
    """Parse a sweep file's mapping; raise one ConfigError listing every problem.

    Parameters
    ----------
    data
        The YAML mapping.
    source
        The sweep file (its stem is the default name; its folder is ``folder``).
    folder
        Where relative experiment paths resolve (default: the sweep file's folder, or
        the working directory).
    """
    what = f"sweep file {str(source)!r}" if source is not None else "sweep"
    if not isinstance(data, dict):
        raise ConfigError(
            f"{what}: the top level must be a mapping (experiment:, grid:, seeds:, ...), got "
            f"a {type(data).__name__}"
        )
    problems: list[str] = []
    for key in data:
        if key not in TOP_KEYS:
            hint = closest(str(key), TOP_KEYS)
            did = f" Did you mean {hint!r}?" if hint else ""
            problems.append(
                f"{key}: unknown key {key!r}.{did} A sweep file has: {', '.join(TOP_KEYS)} "
                "(experiment keys go under set: or an axis)"
            )
    stem = source.name.split(".")[0] if source is not None else "sweep"  # x.sweep.yaml: x
    name = data.get("name", stem)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        problems.append(
            f"name: {name!r}: a sweep name is letters, digits and _ . - (it names runs/<name>)"
        )
    experiment = data.get(EXPERIMENT)
    if experiment is not None:
        _experiment_value(experiment, EXPERIMENT, problems)
    sets = _sets(data.get("set"), "set", problems)
    if any(k == EXPERIMENT for k, _ in sets):
        problems.append("set.experiment: name the base experiment at the top (experiment: FILE)")

    # axes, in the order the file gives grid / zip / cells
    grids: list[list[Axis]] = [[]]
    shared: list[Axis] = []
    for key in data:
        if key == "grid":
            raw = data["grid"]
            if isinstance(raw, list):
                if not raw:
                    problems.append("grid: empty list; give one grid mapping or several")
                grids = [_grid(g, f"grid[{i}]", problems) for i, g in enumerate(raw)] or [[]]
            else:
                grids = [_grid(raw, "grid", problems)]
        elif key == "zip":
            raw = data["zip"]
            groups = raw if isinstance(raw, list) else [raw]
            for i, group in enumerate(groups):
                where = f"zip[{i}]" if isinstance(raw, list) else "zip"
                axis = _zip(group, where, problems)
                if axis is not None:
                    shared.append(axis)
        elif key == "cells":
            raw = data["cells"]
            if not isinstance(raw, dict) or not raw:
                problems.append(
                    "cells: expected a mapping of cell names to overrides "
                    f"({{crash: {{experiment: crash.yaml}}, ...}}), got {raw!r}"
                )
            else:
                axis = _named_axis("cell", raw, "cells", problems)
                if axis is not None:
                    shared.append(axis)
    seeds = _seeds(data.get("seeds"), problems)
    halving = _halving(data.get("halving"), problems)
    select = _select(data.get("select"), problems)
    report = _report(data.get("report"), problems)
    exclude = _exclude(data.get("exclude"), problems)
    cpus = None
    if "resources" in data:
        res = data["resources"]
        if _known_keys(res, ("cpus",), "resources", problems) and "cpus" in res:
            cpus = _integer(res, "cpus", "resources", 1, problems)

    # position in the file: grid axes first where grid comes first, and so on
    order = [k for k in data if k in ("grid", "zip", "cells")]
    products = []
    for grid_axes in grids:
        product: list[Axis] = []
        for key in order:
            if key == "grid":
                product.extend(grid_axes)
            elif key == "zip":
                product.extend(a for a in shared if a.kind == "zip")
            else:
                product.extend(a for a in shared if a.name == "cell")
        products.append(product)

    # labels of list and zip axes need short names over every key of the sweep
    keys: list[str] = []
    for product in products:
        for axis in product:
            if axis.kind in ("values", "zip"):
                keys.extend(k for k in axis.keys if k != EXPERIMENT and k not in keys)
    if halving is not None and isinstance(halving.key, str) and halving.key not in keys:
        keys.append(halving.key)
    shorts = short_names(keys)
    products = [tuple(_labelled(a, shorts) for a in product) for product in products]

    # a key set twice within a product, and seeds set two ways
    for i, product in enumerate(products):
        owner: dict[str, str] = {}
        for axis in product:
            if axis.kind == "named":
                continue  # options may set different keys: checked per cell
            for key in axis.keys:
                if key in owner and owner[key] != axis.where:
                    problems.append(
                        f"{axis.where}: {key!r} is also set by {owner[key]}; a cell takes one "
                        "value per key (pair them with zip:, or drop one)"
                    )
                owner.setdefault(key, axis.where)
        if seeds is not None and "seed" in owner:
            problems.append(
                f"{owner['seed']}: seeds: also sets the seed; use one of them (seeds: N runs "
                "every point with seeds 0..N-1)"
            )
        if halving is not None and halving.key in owner:
            problems.append(
                f"halving.key: {halving.key!r} is also an axis ({owner[halving.key]}); the "
                "halving rule chooses its values, so remove the axis"
            )
        if len(products) > 1 and not product:
            problems.append(f"grid[{i}]: no axes")
    names = [a.name for a in shared]
    for product in grids:
        for axis in product:
            if axis.name in names:
                problems.append(
                    f"{axis.where}: axis {axis.name!r} is also defined under "
                    f"{next(a.where for a in shared if a.name == axis.name)}"
                )
    if experiment is None and not any(
        any(EXPERIMENT in o.values for o in a.options) for p in products for a in p
    ):
        problems.append(
            "experiment: required: the base experiment, a file (experiment: base.yaml) or an "
            "inline mapping (experiment: {name: ..., algorithm: ..., problem: ...})"
        )
    if problems:
        raise ConfigError(f"invalid {what}:\n  " + "\n  ".join(problems))
    base = folder or (source.resolve().parent if source is not None else Path.cwd())
    return SweepSpec(
        name=name,
        source=source.resolve() if source is not None else None,
        folder=base,
        experiment=experiment,
        sets=sets,
        products=tuple(products),
        seeds=seeds,
        exclude=exclude,
        halving=halving,
        select=select,
        report=report,
        cpus=cpus,
        raw=data,
    )


def _labelled(axis: Axis, shorts: dict[str, str]) -> Axis:
    """Fill in the cell-name labels of a list or zip axis (``lr=0.1``, ``name=dsgd,n=16``)."""
    if axis.kind not in ("values", "zip") or axis.keys == (EXPERIMENT,):
        return axis
    options = []
    for opt in axis.options:
        parts = [f"{shorts.get(k, k)}={value_text(v)}" for k, v in opt.sets]
        text = ", ".join(value_text(v) for _, v in opt.sets)
        options.append(Option(safe_label(",".join(parts)), text, opt.sets, opt.values))
    return Axis(axis.name, axis.kind, axis.keys, tuple(options), axis.where)


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and parse a sweep file (see :mod:`fedopt.sweep`)."""
    from fedopt.config import read_yaml

    p = Path(path)
    try:
        data = read_yaml(p)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("experiment file", "sweep file", 1)) from None
    return parse_sweep(data, p)

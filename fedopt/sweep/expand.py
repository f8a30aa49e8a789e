"""From a sweep spec to its cells, each a complete experiment validated before any runs.

A cell is one run: one option of every axis of one grid (``grid`` x ``zip`` x ``cells``),
one seed, and with a halving rule one step size. Its experiment is the base file (or
the one an option names) with, in order: the sweep's ``set:``, each axis's values in
axis order, the seed, the step. That is exactly what ``fedopt run BASE --set ...``
builds, so a cell's run directory equals that run's.

:func:`expand` builds the cells (exclusion rules applied); :func:`prepare` validates and
compiles every one of them, and reports every problem of the whole sweep at once: an
axis key that does not exist (with the closest key), a value a cell refuses (per cell,
identical messages grouped), two cells with one name.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fedopt.config.load import apply_values, read_yaml, validate
from fedopt.config.schema import ExperimentConfig
from fedopt.errors import ConfigError, closest
from fedopt.sweep.spec import EXPERIMENT, Axis, Option, SweepSpec, short_names, value_text


@dataclass(frozen=True)
class Cell:
    """One run of a sweep.

    Attributes
    ----------
    name
        Its name, also its folder under the sweep directory (``lsq_cycle/dadao``,
        ``lr=0.1/seed0``).
    point
        The name without the seed part: the row of the sweep table.
    search
        With a halving rule: the name without seed and step (the point whose step is
        searched); else None.
    columns
        ``(column, text)`` per axis for tables (the seed excluded).
    refs
        ``{axis name or key: (value, text)}`` for exclusion and grouping rules.
    seed
        The seed the sweep gives it (None: the experiment's own).
    step_index, step
        With a halving rule: which try (0 = the start value) and its step size.
    raw
        The experiment mapping, overrides applied.
    base_dir
        The experiment file's folder (inputs resolve there).
    experiment
        Where the base experiment came from (a path, or ``inline``).
    index
        Its position in the sweep (tables list cells in this order).
    """

    name: str
    point: str
    search: str | None
    columns: tuple[tuple[str, str], ...]
    refs: dict[str, tuple[Any, str]]
    seed: int | None
    step_index: int | None
    step: float | None
    raw: dict[str, Any] = field(repr=False)
    base_dir: Path
    experiment: str
    index: int = 0


@dataclass
class Prepared:
    """A validated cell: its config, what its ``config.yaml`` holds, and that file's hash."""

    cell: Cell
    config: ExperimentConfig
    saved: dict[str, Any]
    digest: str
    index: int = 0


def saved_digest(saved: dict[str, Any]) -> str:
    """Hash of a run's ``config.yaml`` content without ``output`` (where it is written).

    Equal for a cell and the run directory of ``fedopt run`` of the same experiment, so
    a finished cell is recognised on resume whatever wrote it.
    """
    data = {k: v for k, v in saved.items() if k != "output"}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------- matching


def _match_one(pattern: Any, value: Any, text: str) -> bool:
    if isinstance(pattern, str):
        if fnmatch.fnmatchcase(text, pattern):
            return True
        return isinstance(value, str) and fnmatch.fnmatchcase(value, pattern)
    if isinstance(pattern, bool) or isinstance(value, bool):
        return pattern is value
    return pattern == value


def matches(pattern: Any, value: Any, text: str) -> bool:
    """Whether an exclusion pattern (a value, a glob string, or a list of them) matches."""
    if isinstance(pattern, list):
        return any(_match_one(p, value, text) for p in pattern)
    return _match_one(pattern, value, text)


# ----------------------------------------------------------------------------- building


def _option_refs(axis: Axis, opt: Option, shorts: dict[str, str]) -> dict[str, tuple[Any, str]]:
    refs: dict[str, tuple[Any, str]] = {}
    if axis.kind == "named":
        refs[axis.name] = (opt.label, opt.label)
        for key, value in opt.sets:
            text = Path(value).stem if key == EXPERIMENT and isinstance(value, str) else None
            refs.setdefault(key, (value, text or value_text(value)))
    else:
        for key, value in opt.sets:
            text = opt.label if key == EXPERIMENT else value_text(value)
            refs[key] = (value, text)
            refs.setdefault(shorts.get(key, key), (value, text))
    return refs


def _option_columns(axis: Axis, opt: Option, shorts: dict[str, str]) -> list[tuple[str, str]]:
    if axis.kind == "named":
        return [(axis.name, opt.label)]
    if axis.keys == (EXPERIMENT,):
        return [(EXPERIMENT, opt.label)]
    return [(shorts.get(k, k), value_text(v)) for k, v in opt.sets]


class _Bases:
    """Base experiments read once each: ``(mapping, base_dir, where)`` by source."""

    def __init__(self, spec: SweepSpec, problems: list[str]) -> None:
        self.spec = spec
        self.problems = problems
        self.cache: dict[str, tuple[dict[str, Any], Path, str] | None] = {}

    def get(self, source: Any, where: str) -> tuple[dict[str, Any], Path, str] | None:
        if isinstance(source, dict):
            return source, self.spec.folder, "inline"
        key = str(source)
        if key not in self.cache:
            path = Path(source).expanduser()
            if not path.is_absolute():
                path = self.spec.folder / path
            try:
                self.cache[key] = (read_yaml(path), path.resolve().parent, str(path))
            except ConfigError as exc:
                self.problems.append(f"{where}: {exc}")
                self.cache[key] = None
        return self.cache[key]


def expand(spec: SweepSpec, note: Callable[[str], None] | None = None) -> list[Cell]:
    """Every cell of the sweep, in order (exclusion rules applied).

    Raises
    ------
    ConfigError
        Listing every problem: unreadable base files, a key two axes of one cell set, an
        exclusion rule naming no axis (with the closest) or matching no cell, two cells
        with the same name.
    """
    problems: list[str] = []
    notes: list[str] = []
    bases = _Bases(spec, problems)
    shorts = short_names(spec.dotted_keys())
    cells: list[Cell] = []
    for product in spec.products:
        for combo in itertools.product(*(axis.options for axis in product)):
            cells.extend(_cells_of(spec, product, combo, shorts, bases, problems, notes))
    cells = [replace(c, index=i) for i, c in enumerate(_exclude(spec, cells, problems))]
    names: dict[str, int] = {}
    for cell in cells:
        names[cell.name] = names.get(cell.name, 0) + 1
    dup = [n for n, k in names.items() if k > 1]
    if dup:
        problems.append(
            f"cells: {len(dup)} names are given to more than one cell ({', '.join(dup[:5])}"
            f"{', ...' if len(dup) > 5 else ''}): two options print alike; give the values "
            "distinct names with a named axis ({name: {key: value}})"
        )
    folders = set(names)
    nested = [
        n
        for n in names
        if any("/".join(n.split("/")[:i]) in folders for i in range(1, n.count("/") + 1))
    ]
    if nested:
        problems.append(
            f"cells: {nested[0]!r} would be a folder inside another cell's run directory; "
            "give every cell the same axes (or distinct option names)"
        )
    if problems:
        raise ConfigError("invalid sweep:\n  " + "\n  ".join(_unique(problems)))
    if note is not None:
        for line in _grouped_notes(notes):
            note(line)
    return cells


def _grouped_notes(notes: list[str]) -> list[str]:
    """One line per distinct note, with how many cells it concerns."""
    groups: dict[str, list[str]] = {}
    for line in notes:
        m = re.match(r"^sweep cell '([^']*)': (.*)$", line)
        cell, text = (m.group(1), m.group(2)) if m else ("", line)
        groups.setdefault(text, [])
        if cell not in groups[text]:
            groups[text].append(cell)
    out = []
    for text, cells in groups.items():
        shown = ", ".join(cells[:2]) + (", ..." if len(cells) > 2 else "")
        out.append(f"{text} [{len(cells)} cell{'s' if len(cells) > 1 else ''}: {shown}]")
    return out


def _unique(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(lines))


def _cells_of(
    spec: SweepSpec,
    product: tuple[Axis, ...],
    combo: tuple[Option, ...],
    shorts: dict[str, str],
    bases: _Bases,
    problems: list[str],
    notes: list[str],
) -> list[Cell]:
    """The cells of one combination of options: its seeds and halving steps."""
    labels = [opt.label for opt in combo]
    point = "/".join(labels)
    source: Any = spec.experiment
    where_exp = "experiment"
    owner: dict[str, str] = {}
    values: list[tuple[str, Any]] = []
    refs: dict[str, tuple[Any, str]] = {}
    columns: list[tuple[str, str]] = []
    for axis, opt in zip(product, combo, strict=True):
        refs.update(_option_refs(axis, opt, shorts))
        columns.extend(_option_columns(axis, opt, shorts))
        for key, value in opt.sets:
            if key in owner:
                problems.append(
                    f"{axis.where}.{opt.label}: {key!r} is also set by {owner[key]}; a cell "
                    "takes one value per key"
                )
                continue
            owner[key] = f"{axis.where}.{opt.label}" if axis.kind == "named" else axis.where
            if key == EXPERIMENT:
                source, where_exp = value, f"{axis.where}.{opt.label}"
            else:
                values.append((key, value))
    if source is None:
        problems.append(
            f"{point}: no experiment: set experiment: at the top, or in every option of an axis"
        )
        return []
    base = bases.get(source, where_exp)
    if base is None:
        return []
    data, base_dir, origin = base
    seeds: list[int | None] = list(spec.seeds) if spec.seeds is not None else [None]
    label = point or "run"
    try:
        raw = apply_values(
            data,
            [*spec.sets, *values],
            source=f"sweep cell {label!r}",
            base_dir=base_dir,
            note=notes.append,
        )
    except ConfigError as exc:
        problems.append(str(exc))
        return []
    steps: list[tuple[int | None, float | None]] = [(None, None)]
    halving = spec.halving
    if halving is not None:
        start = halving.start
        if start is None:
            start = _resolved(raw, halving.key, base_dir)
            if not isinstance(start, (int, float)) or isinstance(start, bool) or start <= 0:
                problems.append(
                    f"halving.start: not given, and {halving.key} in {label!r} is {start!r}, "
                    "not a positive step size; give halving.start"
                )
                return []
        steps = list(enumerate(halving.values(float(start))))
    out = []
    for index, step in steps:
        cell_raw = raw
        parts = list(labels)
        cols = list(columns)
        cell_refs = dict(refs)
        if step is not None:
            assert halving is not None
            short = shorts.get(halving.key, halving.key)
            parts.append(f"{short}={value_text(step)}")
            cols.append((short, value_text(step)))
            cell_refs.setdefault(halving.key, (step, value_text(step)))
            cell_raw = apply_values(
                cell_raw,
                [(halving.key, step)],
                source=f"halving {label!r}",
                base_dir=base_dir,
                note=notes.append,
            )
        step_point = "/".join(parts) or "run"
        for seed in seeds:
            names = [*parts, f"seed{seed}"] if seed is not None else parts
            final_raw = cell_raw
            if seed is not None:
                final_raw = apply_values(cell_raw, [("seed", seed)], source="seeds")
                cell_refs = {**cell_refs, "seed": (seed, str(seed))}
            out.append(
                Cell(
                    name="/".join(names) or "run",
                    point=step_point,
                    search=(point or "run") if step is not None else None,
                    columns=tuple(cols),
                    refs=cell_refs,
                    seed=seed,
                    step_index=index,
                    step=step,
                    raw=final_raw,
                    base_dir=base_dir,
                    experiment=origin,
                )
            )
    return out


def _resolved(raw: dict[str, Any], key: str, base_dir: Path) -> Any:
    """The value of dotted ``key`` in the experiment, its default filled in."""
    node: Any = raw
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is not None:
        return node
    try:
        dump = validate(raw, base_dir).model_dump(mode="json")
    except ConfigError:
        return None
    for part in key.split("."):
        dump = dump.get(part) if isinstance(dump, dict) else None
    return dump


def _exclude(spec: SweepSpec, cells: list[Cell], problems: list[str]) -> list[Cell]:
    if not spec.exclude:
        return cells
    known: dict[str, set[str]] = {}
    for cell in cells:
        for ref, (_, text) in cell.refs.items():
            known.setdefault(ref, set()).add(text)
    rules = []
    for i, rule in enumerate(spec.exclude):
        ok = True
        for ref in rule:
            if ref not in known:
                hint = closest(str(ref), known)
                did = f" Did you mean {hint!r}?" if hint else ""
                problems.append(
                    f"exclude[{i}]: {ref!r} is not an axis or a key of this sweep.{did} "
                    f"Axes and keys: {', '.join(sorted(known))}"
                )
                ok = False
        if ok:
            rules.append((i, rule))
    used = {i: 0 for i, _ in rules}
    kept = []
    for cell in cells:
        hit = None
        for i, rule in rules:
            if all(ref in cell.refs and matches(pat, *cell.refs[ref]) for ref, pat in rule.items()):
                hit = i
                break
        if hit is None:
            kept.append(cell)
        else:
            used[hit] += 1
    for i, rule in rules:
        if used[i] == 0:
            shown = "; ".join(f"{ref} takes {', '.join(sorted(known[ref])[:8])}" for ref in rule)
            problems.append(f"exclude[{i}]: {rule!r} matches no cell (a typo in a value?); {shown}")
    if rules and not kept:
        problems.append("exclude: every cell is excluded; nothing would run")
    return kept


# ----------------------------------------------------------------------------- validation


def prepare(spec: SweepSpec, cells: list[Cell], compile_plans: bool = True) -> list[Prepared]:
    """Validate (and compile) every cell; one ConfigError lists every problem.

    Unknown-key errors for a key the sweep sets are reported once per key, with the
    closest existing key; other errors once per distinct message, with the cells that
    have it.
    """
    from fedopt.engine.compile import compile_plan
    from fedopt.results.inputs import collect_inputs, portable_config

    sweep_keys = {k: "set" for k, _ in spec.sets}
    for axis in spec.axes():
        for key in axis.keys:
            sweep_keys.setdefault(key, axis.where)
    if spec.halving is not None:
        sweep_keys.setdefault(spec.halving.key, "halving.key")
    by_message: dict[str, list[str]] = {}
    out: list[Prepared] = []
    for cell in cells:
        try:
            config = validate(cell.raw, cell.base_dir)
            if compile_plans:
                compile_plan(config, base_dir=cell.base_dir)
            inputs = collect_inputs(config, cell.base_dir)
        except ConfigError as exc:
            lines = str(exc).splitlines()
            if lines and lines[0].strip() == "invalid experiment:":
                lines = lines[1:]
            for line in lines:
                by_message.setdefault(_sweep_line(line.strip(), sweep_keys), []).append(cell.name)
            continue
        saved = portable_config(config.model_dump(mode="json"), inputs)
        out.append(Prepared(cell, config, saved, saved_digest(saved), cell.index))
    if by_message:
        problems = []
        for message, names in by_message.items():
            more = ", ..." if len(names) > 3 else ""
            where = (
                f"cell {names[0]!r}"
                if len(names) == 1
                else f"{len(names)} cells ({', '.join(names[:3])}{more})"
            )
            problems.append(f"{message} [{where}]")
        total = len({n for names in by_message.values() for n in names})
        raise ConfigError(
            f"invalid sweep: {total} of {len(cells)} cells do not validate (nothing was run):\n  "
            + "\n  ".join(problems)
        )
    return out


def _sweep_line(line: str, sweep_keys: dict[str, str]) -> str:
    """Point an unknown-key error for a key the sweep sets at the sweep file."""
    path, _, rest = line.partition(":")
    if path not in sweep_keys or "unknown key" not in rest:
        return line
    m = re.search(r"Did you mean '([^']+)'\?", rest)
    parent = path.rpartition(".")[0]
    hint = f" Did you mean {parent + '.' + m.group(1) if parent else m.group(1)!r}?" if m else ""
    allowed = rest.split("Allowed keys:", 1)[1].strip() if "Allowed keys:" in rest else ""
    there = f" Keys of {parent or 'the experiment'}: {allowed}" if allowed else ""
    return f"{sweep_keys[path]}: the key {path!r} does not exist in the experiment.{hint}{there}"


def ref_columns(spec: SweepSpec) -> dict[str, str]:
    """``{ref: table column}`` for every axis name, axis key and short key name."""
    shorts = short_names(spec.dotted_keys())
    out: dict[str, str] = {}
    for axis in spec.axes():
        if axis.kind == "named":
            out[axis.name] = axis.name
        elif axis.keys == (EXPERIMENT,):
            out[EXPERIMENT] = EXPERIMENT
        else:
            for key in axis.keys:
                out[key] = out[shorts.get(key, key)] = shorts.get(key, key)
    if spec.halving is not None:
        key = spec.halving.key
        out[key] = out[shorts.get(key, key)] = shorts.get(key, key)
    return out

"""Reading a sweep directory: its cells, their metrics, points, groups and selection.

This is the API experiment scripts build their own tables on::

    from fedopt.sweep.results import SweepResults

    res = SweepResults.load("runs/dadao-grid")
    for point in res.points():
        values = [res.metric(c, "gradients_total@relative_sq_distance<=1e-6") for c in point.cells]

A *point* is a row of the sweep table: the cells that differ only in their seed. A ref
(in ``--by``, ``select.by``) is an axis name, a key an axis sets or its short name, a
table column, or any dotted config key (read from each cell's ``config.yaml``).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from fedopt.errors import ConfigError, closest
from fedopt.sweep.manifest import MANIFEST, read_manifest
from fedopt.sweep.metrics import Metric, evaluate, parse_metric
from fedopt.sweep.spec import value_text

DONE = ("complete", "diverged")


@dataclass
class CellResult:
    """One cell of a sweep directory (its run directory read on demand)."""

    name: str
    path: Path
    entry: dict[str, Any]

    @property
    def status(self) -> str:
        """``complete``, ``diverged``, ``failed``, ``pending`` or ``running``."""
        return self.entry.get("status", "pending")

    @property
    def done(self) -> bool:
        """Whether its run directory is finished (diverged runs included)."""
        return self.status in DONE and (self.path / "summary.json").is_file()

    @property
    def point(self) -> str:
        """Its name without the seed part."""
        return self.entry.get("point") or self.name

    @property
    def columns(self) -> dict[str, str]:
        """``{column: text}`` of its axes (seed excluded)."""
        return dict(self.entry.get("columns") or {})

    @cached_property
    def summary(self) -> dict[str, Any]:
        """Its ``summary.json`` (empty when it has none)."""
        try:
            return json.loads((self.path / "summary.json").read_text())
        except (OSError, ValueError):
            return {}

    @cached_property
    def records(self) -> list[dict[str, Any]]:
        """Its ``metrics.jsonl`` records."""
        try:
            text = (self.path / "metrics.jsonl").read_text()
        except OSError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    @cached_property
    def config(self) -> dict[str, Any]:
        """Its ``config.yaml`` (the resolved experiment)."""
        try:
            data = yaml.safe_load((self.path / "config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            return {}
        return data if isinstance(data, dict) else {}


@dataclass
class Point:
    """Cells that differ only by seed: one row of the table."""

    name: str
    columns: dict[str, str]
    cells: list[CellResult] = field(default_factory=list)
    search: str | None = None
    step: float | None = None


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation over seeds (``std`` None for one value)."""

    mean: float | None
    std: float | None
    n: int
    of: int

    def text(self, fmt: str = ".4g") -> str:
        """``0.123 ± 0.004``, ``0.123`` (one seed), ``-`` (none); ``(k/n)`` when some
        seeds lack the value."""
        if self.mean is None:
            return "-"
        s = format(self.mean, fmt)
        if self.std is not None:
            s += f" ± {format(self.std, fmt)}"
        if self.n < self.of:
            s += f" ({self.n}/{self.of})"
        return s


def stat(values: list[float | None], of: int | None = None) -> Stat:
    """:class:`Stat` of the finite values among ``values``."""
    xs = [v for v in values if v is not None and math.isfinite(v)]
    total = of if of is not None else len(values)
    if not xs:
        return Stat(None, None, 0, total)
    mean = math.fsum(xs) / len(xs)
    std = statistics.stdev(xs) if len(xs) > 1 else None
    return Stat(mean, std, len(xs), total)


class SweepResults:
    """A sweep directory as the report reads it.

    Parameters
    ----------
    folder
        The sweep directory.
    manifest
        Its ``sweep.json``.
    """

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.folder = folder
        self.manifest = manifest
        cells = sorted(
            manifest["cells"].items(),
            key=lambda kv: (kv[1].get("index") is None, kv[1].get("index") or 0),
        )
        self.cells = [CellResult(name, folder / name, entry) for name, entry in cells]
        self._metrics: dict[str, Metric] = {}

    @classmethod
    def load(cls, folder: str | Path) -> SweepResults:
        """Read ``folder``'s manifest.

        Raises
        ------
        ConfigError
            When ``folder`` is not a sweep directory.
        """
        path = Path(folder)
        if not path.is_dir():
            raise ConfigError(
                f"sweep-report: {str(path)!r} is not a folder; give a sweep directory"
            )
        manifest = read_manifest(path)
        if manifest is None:
            raise ConfigError(
                f"sweep-report: {str(path)!r} is not a sweep directory (no {MANIFEST}); run "
                "`fedopt sweep SWEEP.yaml --out DIR` first"
            )
        return cls(path, manifest)

    # ------------------------------------------------------------------ lookups

    def metric(self, cell: CellResult, expr: str) -> float | None:
        """The value of metric ``expr`` (:mod:`fedopt.sweep.metrics`) for a done cell."""
        if not cell.done:
            return None
        m = self._metrics.get(expr)
        if m is None:
            m = self._metrics[expr] = parse_metric(expr)
        return evaluate(m, cell.summary, cell.records if m.needs_records else None)

    def columns(self) -> list[str]:
        """The table's axis columns, in axis order."""
        return list(self.manifest.get("columns") or [])

    def refs(self) -> dict[str, str]:
        """``{ref: column}``: every name a rule may use for a column."""
        out: dict[str, str] = {c: c for c in self.columns()}
        out.update(self.manifest.get("refs") or {})
        return out

    def value(self, cell: CellResult, ref: str) -> str:
        """The text of ``ref`` for a cell: its column, else its config's dotted key."""
        col = self.refs().get(ref)
        if col is not None and col in cell.columns:
            return cell.columns[col]
        if ref == "seed":
            return str(cell.entry.get("seed"))
        node: Any = cell.config
        for part in ref.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return value_text(node) if node is not None else "-"

    def check_ref(self, ref: str, where: str) -> None:
        """Refuse a ref that names no column and no key of the cells' configs."""
        if ref in self.refs() or ref == "seed":
            return
        for cell in self.cells:
            if cell.done:
                node: Any = cell.config
                for part in ref.split("."):
                    node = node.get(part) if isinstance(node, dict) else None
                if node is not None:
                    return
                break
        hint = closest(ref, list(self.refs()))
        did = f" Did you mean {hint!r}?" if hint else ""
        raise ConfigError(
            f"{where} {ref!r}: not an axis of this sweep nor a key of its experiments.{did} "
            f"Axes: {', '.join(self.columns()) or '(none)'}"
        )

    # ------------------------------------------------------------------ grouping

    def points(self) -> list[Point]:
        """The table's rows, in cell order."""
        out: dict[str, Point] = {}
        for cell in self.cells:
            p = out.get(cell.point)
            if p is None:
                p = out[cell.point] = Point(
                    cell.point, cell.columns, [], cell.entry.get("search"), cell.entry.get("step")
                )
            p.cells.append(cell)
        return list(out.values())

    def chosen_points(self) -> tuple[list[Point], list[str]]:
        """With a halving rule: the points at each search's chosen step, and the searches
        that found none. Without one: every point, and ``[]``."""
        points = self.points()
        searches = self.manifest.get("searches") or {}
        if not searches:
            return points, []
        chosen = {s["chosen_point"] for s in searches.values() if s.get("chosen_point")}
        missing = [n for n, s in searches.items() if not s.get("chosen_point")]
        return [p for p in points if p.search is None or p.name in chosen], missing

    def groups(self, points: list[Point], by: list[str]) -> dict[tuple[str, ...], list[Point]]:
        """Points by the values of ``by`` (each point's first cell decides)."""
        out: dict[tuple[str, ...], list[Point]] = {}
        for p in points:
            key = tuple(self.value(p.cells[0], ref) for ref in by)
            out.setdefault(key, []).append(p)
        return out

    def point_stat(self, point: Point, expr: str) -> Stat:
        """:class:`Stat` of a metric over a point's seeds."""
        return stat([self.metric(c, expr) for c in point.cells], len(point.cells))

    def select(
        self, metric: str, mode: str = "min", by: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """Model selection: per group of ``by``, the point with the best mean ``metric``.

        With a halving rule only each search's chosen step competes. Returns one row per
        group: ``group`` (values of ``by``), ``point`` (None when no point has the
        metric), its :class:`Stat` and the candidates compared.
        """
        by = list(by or [])
        points, _ = self.chosen_points()
        rows = []
        for key, members in self.groups(points, by).items():
            scored = [(self.point_stat(p, metric), p) for p in members]
            scored = [(s, p) for s, p in scored if s.mean is not None]
            best = None
            if scored:
                pick = min if mode == "min" else max
                best = pick(scored, key=lambda sp: sp[0].mean)
            rows.append(
                {
                    "group": dict(zip(by, key, strict=True)),
                    "point": best[1] if best else None,
                    "stat": best[0] if best else Stat(None, None, 0, 0),
                    "candidates": len(members),
                }
            )
        return rows

"""``fedopt sweep-report``: tables and plots of a sweep directory.

Writes, into the sweep directory (or ``--out``):

``table.csv``, ``table.md``
    One row per point (the cells that differ only by seed): its axis values, how many
    seeds are done, and per metric the mean and sample standard deviation over seeds
    (``statistics.stdev``: ``sqrt(sum (x - mean)^2 / (n - 1))``; none for one seed).
``selection.csv``, ``selection.md``
    With a selection rule (the sweep's ``select:`` or ``--select``): per group, the
    point with the best mean metric; with a halving rule only the chosen steps compete.
``halving.md``
    With a halving rule: per point, each step tried, its verdict and the chosen step.
``curves.png``
    ``y`` against ``x`` (default loss against rounds), one panel per value of the
    ``--by`` axis, one line per point (mean over seeds, min-max band).
``metrics.png``
    Each table metric against the ``--by`` axis, one line per value of the other axes
    (mean, error bar one standard deviation).
``selection.png``
    The curves of the selected points, one per group.

Every file is written through a temporary file and a rename; ``.fedopt-report`` lists
them, and only files listed there (or new ones) are replaced.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from fedopt.errors import ConfigError
from fedopt.sweep.metrics import parse_metric
from fedopt.sweep.results import Point, Stat, SweepResults

REPORT_MARKER = ".fedopt-report"
"""Lists the files a report wrote into its folder."""

DEFAULT_METRICS = (
    "final_loss",
    "min(loss)",
    "final_accuracy",
    "final_test_accuracy",
    "final_distance_to_opt",
    "final_relative_sq_distance",
    "bytes_total",
    "sim_time_s",
    "wall_time_s",
)


class ReportFiles:
    """Writes report files atomically, replacing only files an earlier report wrote."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self.known = set(json.loads((folder / REPORT_MARKER).read_text()).get("files", []))
            self.known.add(REPORT_MARKER)
        except (OSError, ValueError, AttributeError, TypeError):
            self.known = set()
        self.written: list[str] = []

    def _target(self, name: str) -> Path:
        path = self.folder / name
        if path.exists() and name not in self.known:
            raise ConfigError(
                f"sweep-report: {str(path)!r} exists and was not written by a report; fedopt "
                "never replaces it: move it away, or write the report elsewhere (--out DIR)"
            )
        return path

    def text(self, name: str, text: str) -> None:
        """Write a text file."""
        self.bytes(name, text.encode())

    def bytes(self, name: str, data: bytes) -> None:
        """Write a binary file."""
        path = self._target(name)
        tmp = path.with_name(f".{name}.tmp-{os.getpid()}")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.written.append(name)

    def figure(self, name: str, fig: Any) -> None:
        """Save a matplotlib figure as PNG."""
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        self.bytes(name, buf.getvalue())

    def close(self) -> None:
        """Record the files written (with those of earlier reports still there)."""
        files = sorted({*self.written, *(f for f in self.known if (self.folder / f).exists())})
        self.bytes(REPORT_MARKER, (json.dumps({"files": files}, indent=1) + "\n").encode())


# ----------------------------------------------------------------------------- tables


def _status(point: Point) -> str:
    counts: dict[str, int] = {}
    for c in point.cells:
        counts[c.status] = counts.get(c.status, 0) + 1
    return ", ".join(f"{v} {k}" for k, v in counts.items() if k != "complete") or ""


def table_rows(
    res: SweepResults, metrics: list[str]
) -> tuple[list[str], list[list[str]], list[list[Any]]]:
    """The sweep table: ``(header, markdown rows, csv rows)``."""
    cols = res.columns()
    searches = res.manifest.get("searches") or {}
    chosen = {s.get("chosen_point") for s in searches.values()}
    halving = bool(searches)
    header = [*cols, "seeds"] + (["halving"] if halving else []) + metrics + ["status"]
    md, rows = [], []
    for p in res.points():
        done = sum(c.done for c in p.cells)
        head = [p.columns.get(c, "") for c in cols] + [f"{done}/{len(p.cells)}"]
        if halving:
            head.append("chosen" if p.name in chosen else "")
        stats = [res.point_stat(p, m) for m in metrics]
        md.append(head + [s.text() for s in stats] + [_status(p)])
        csv_row: list[Any] = [p.columns.get(c, "") for c in cols] + [done]
        if halving:
            csv_row.append(head[-1])
        for s in stats:
            csv_row += [_num(s.mean), _num(s.std), s.n]
        rows.append([*csv_row, _status(p)])
    return header, md, rows


def _num(v: float | None) -> str:
    return "" if v is None else repr(float(v))


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""

    def esc(s: str) -> str:
        return str(s).replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def to_csv(header: list[str], rows: list[list[Any]]) -> str:
    """CSV text."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    return buf.getvalue()


def present_metrics(res: SweepResults, metrics: list[str] | None) -> list[str]:
    """The metrics to tabulate: those given, else the defaults some cell has."""
    if metrics:
        for m in metrics:
            parse_metric(m)  # a clear error for a malformed one
        return list(metrics)
    chosen = list((res.manifest.get("report") or {}).get("metrics") or [])
    if chosen:
        return chosen
    done = [c for c in res.cells if c.done][:20]
    return [m for m in DEFAULT_METRICS if any(res.metric(c, m) is not None for c in done)]


# ----------------------------------------------------------------------------- plots


def _curve(points: list[Point], res: SweepResults, x: str, y: str) -> dict[str, Any]:
    """Mean, min and max of ``y`` over a point's seeds at each ``x``."""
    from fedopt.sweep.metrics import _x_value

    by_x: dict[float, list[float]] = {}
    for p in points:
        for c in p.cells:
            if not c.done:
                continue
            for r in c.records:
                xv, yv = _x_value(r, x), r.get(y)
                if _finite(xv) and _finite(yv):
                    by_x.setdefault(float(xv), []).append(float(yv))
    xs = sorted(by_x)
    return {
        "x": xs,
        "mean": [math.fsum(by_x[v]) / len(by_x[v]) for v in xs],
        "lo": [min(by_x[v]) for v in xs],
        "hi": [max(by_x[v]) for v in xs],
    }


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _label(p: Point, drop: list[str]) -> str:
    parts = [f"{k}={v}" for k, v in p.columns.items() if k not in drop]
    return ", ".join(parts) or p.name


def _log_ok(values: list[float]) -> bool:
    return bool(values) and min(values) > 0 and min(values) <= 1e-2 * max(values)


def _panels(n: int) -> tuple[int, int]:
    cols = min(n, 3)
    return math.ceil(n / cols), cols


def curves_figure(
    res: SweepResults, points: list[Point], by: str | None, x: str, y: str, title: str
) -> Any:
    """``y`` against ``x``: one panel per value of ``by``, one line per point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = res.groups(points, [by]) if by else {(): points}
    rows, cols = _panels(len(groups))
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 3.6 * rows), squeeze=False)
    drop = [res.refs().get(by, by)] if by else []
    for ax, (key, members) in zip(axes.flat, groups.items(), strict=False):
        ys: list[float] = []
        for i, p in enumerate(members):
            cur = _curve([p], res, x, y)
            if not cur["x"]:
                continue
            color = f"C{i % 10}"
            ax.plot(cur["x"], cur["mean"], color=color, lw=1.2, label=_label(p, drop))
            if len(p.cells) > 1:
                ax.fill_between(cur["x"], cur["lo"], cur["hi"], color=color, alpha=0.15, lw=0)
            ys += cur["lo"] + cur["hi"]
        if _log_ok(ys):
            ax.set_yscale("log")
        ax.set_title(f"{by} = {key[0]}" if by else title, fontsize=9)
        ax.set_xlabel(x, fontsize=8)
        ax.set_ylabel(y, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if len(members) <= 12:
            ax.legend(fontsize=6, frameon=False)
    for ax in list(axes.flat)[len(groups) :]:
        ax.set_visible(False)
    fig.suptitle(f"{title}: {y} against {x} (mean over seeds, band: min-max)", fontsize=9)
    fig.tight_layout()
    return fig


def metrics_figure(res: SweepResults, points: list[Point], metrics: list[str], by: str) -> Any:
    """Each metric against the values of ``by``; one line per value of the other axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = _panels(len(metrics))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    col = res.refs().get(by, by)
    xs = list(dict.fromkeys(res.value(p.cells[0], by) for p in points))
    numeric = all(_is_number(v) for v in xs)
    if numeric:
        xs = sorted(xs, key=float)
    lines: dict[str, dict[str, Stat]] = {}
    for p in points:
        lines.setdefault(_label(p, [col]), {})
    for ax, m in zip(axes.flat, metrics, strict=False):
        for i, line in enumerate(lines):
            pts = []
            for p in points:
                if _label(p, [col]) != line:
                    continue
                s = res.point_stat(p, m)
                if s.mean is not None:
                    xv = res.value(p.cells[0], by)
                    pts.append((float(xv) if numeric else xs.index(xv), s.mean, s.std or 0.0))
            pts.sort()
            if pts:
                ax.errorbar(
                    [a for a, _, _ in pts],
                    [b for _, b, _ in pts],
                    yerr=[c for _, _, c in pts],
                    fmt="-o",
                    ms=3,
                    lw=1,
                    capsize=2,
                    color=f"C{i % 10}",
                    label=line,
                )
        if not numeric:
            ax.set_xticks(range(len(xs)), xs, fontsize=7, rotation=30)
        elif all(float(v) > 0 for v in xs) and len(xs) > 2:
            big = max(float(v) for v in xs) / min(float(v) for v in xs)
            if big >= 100:
                ax.set_xscale("log")
        ax.set_xlabel(by, fontsize=8)
        ax.set_ylabel(m, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if len(lines) <= 12 and any(lines):
            ax.legend(fontsize=6, frameon=False)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    fig.suptitle(f"metrics against {by} (mean ± std over seeds)", fontsize=9)
    fig.tight_layout()
    return fig


def _is_number(s: str) -> bool:
    try:
        return math.isfinite(float(s))
    except ValueError:
        return False


def default_by(res: SweepResults) -> str | None:
    """The first axis column with more than one value (None when there is none)."""
    points = res.points()
    for col in res.columns():
        if len({p.columns.get(col) for p in points}) > 1:
            return col
    return None


# ----------------------------------------------------------------------------- the report


def sweep_report(
    folder: str | Path,
    out: str | Path | None = None,
    *,
    metrics: list[str] | None = None,
    by: str | None = None,
    x: str | None = None,
    y: str | None = None,
    select: str | None = None,
    select_by: list[str] | None = None,
    mode: str | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Write the tables and plots of a sweep directory (see the module docstring).

    Parameters
    ----------
    folder
        The sweep directory.
    out
        Where to write (default: the sweep directory).
    metrics
        Table metrics (default: the sweep's ``report.metrics``, else the usual summary
        figures the runs have).
    by
        The axis plots are grouped by (default: ``report.by``, else the first axis that
        varies).
    x, y
        Record keys of the curves (default ``report.x``/``report.y``: round, loss).
    select, select_by, mode
        A selection rule overriding the sweep's ``select:``.
    plots
        Draw the PNG files (False: tables only).

    Returns
    -------
    dict
        ``{"folder", "files", "markdown"}``: where, what was written, the tables.
    """
    res = SweepResults.load(folder)
    spec_report = res.manifest.get("report") or {}
    metrics = present_metrics(res, metrics)
    by = by or spec_report.get("by") or default_by(res)
    if by:
        res.check_ref(by, "--by")
    x = x or spec_report.get("x") or "round"
    y = y or spec_report.get("y") or "loss"
    rule = res.manifest.get("select") or {}
    if select:
        rule = {"metric": select, "mode": mode or "min", "by": list(select_by or [])}
    elif rule and (mode or select_by):
        rule = {
            **rule,
            **({"mode": mode} if mode else {}),
            **({"by": select_by} if select_by else {}),
        }
    if rule:
        parse_metric(rule["metric"])
        for ref in rule.get("by") or []:
            res.check_ref(ref, "select.by")
    files = ReportFiles(Path(out) if out is not None else res.folder)
    header, md_rows, csv_rows = table_rows(res, metrics)
    csv_header = [*res.columns(), "seeds"]
    if "halving" in header:
        csv_header.append("halving")
    for m in metrics:
        csv_header += [f"{m} mean", f"{m} std", f"{m} n"]
    csv_header.append("status")
    files.text("table.csv", to_csv(csv_header, csv_rows))
    name = res.manifest.get("sweep", "sweep")
    counts: dict[str, int] = {}
    for c in res.cells:
        counts[c.status] = counts.get(c.status, 0) + 1
    state = ", ".join(f"{v} {k}" for k, v in counts.items())
    parts = [
        f"**{name}**: {len(res.cells)} cells ({state}); mean ± sample std over seeds.",
        "",
        markdown(header, md_rows),
    ]
    files.text("table.md", "\n".join(parts) + "\n")
    text = "\n".join(parts)
    if rule:
        sel = res.select(rule["metric"], rule.get("mode", "min"), list(rule.get("by") or []))
        sel_by = list(rule.get("by") or [])
        head = [*sel_by, "selected", rule["metric"], "candidates"]
        rows_md, rows_csv = [], []
        for row in sel:
            p = row["point"]
            s = row["stat"]
            g = [row["group"][b] for b in sel_by]
            rows_md.append([*g, p.name if p else "(none)", s.text(), str(row["candidates"])])
            rows_csv.append(
                [*g, p.name if p else "", _num(s.mean), _num(s.std), s.n, row["candidates"]]
            )
        word = "lowest" if rule.get("mode", "min") == "min" else "highest"
        sel_md = (
            f"**Selection**: per {', '.join(sel_by) or 'sweep'}, the point with the {word} "
            f"mean {rule['metric']}.\n\n" + markdown(head, rows_md)
        )
        files.text("selection.md", sel_md + "\n")
        files.text(
            "selection.csv",
            to_csv([*sel_by, "selected", "mean", "std", "n", "candidates"], rows_csv),
        )
        text += "\n\n" + sel_md
    searches = res.manifest.get("searches") or {}
    if searches:
        hv = halving_markdown(searches)
        files.text("halving.md", hv + "\n")
        text += "\n\n" + hv
    if plots and any(c.done for c in res.cells):
        import matplotlib.pyplot as plt

        points, _ = res.chosen_points()
        points = [p for p in points if any(c.done for c in p.cells)]
        fig = curves_figure(res, points, by, x, y, name)
        files.figure("curves.png", fig)
        plt.close(fig)
        if by and metrics:
            fig = metrics_figure(res, points, metrics, by)
            files.figure("metrics.png", fig)
            plt.close(fig)
        if rule:
            chosen = [r["point"] for r in sel if r["point"] is not None]
            if chosen:
                fig = curves_figure(res, chosen, None, x, y, f"{name}: selected")
                files.figure("selection.png", fig)
                plt.close(fig)
    files.close()
    return {"folder": files.folder, "files": files.written, "markdown": text}


def halving_markdown(searches: dict[str, dict[str, Any]]) -> str:
    """Per searched point: the steps tried, each verdict, the step chosen."""
    lines = [
        "**Halving**: steps tried per point (largest first) until the runs were stable.",
        "",
        "| point | key | chosen | tried |",
        "|---|---|---|---|",
    ]
    for name, s in searches.items():
        tried = []
        for t in s.get("tried", []):
            verdicts = [v for v in t["runs"].values()]
            ok = all(v is not None and v["stable"] for v in verdicts)
            why = next(
                (
                    ("run failed" if v is None else v["reason"])
                    for v in verdicts
                    if v is None or not v["stable"]
                ),
                "",
            )
            tried.append(f"{t['step']:g}: " + ("stable" if ok else f"unstable ({why})"))
        chosen = s.get("chosen")
        shown = f"{chosen:g}" if chosen is not None else s.get("status", "")
        lines.append(f"| {name} | {s.get('key')} | {shown} | {'; '.join(tried)} |")
    return "\n".join(lines)

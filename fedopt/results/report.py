"""``fedopt report``: plots and a summary table for one or more run directories.

Draws, with every run overlaid, a grid of panels (two per row): loss against rounds,
against simulated time and against bytes sent (the three axes decentralized-learning
papers compare on), plus accuracy, distance to the optimum, test loss and the squared
gradient norm against rounds when the runs report them, the DADAO paper's axes
(gradients, communications) for runs that count gradients, and for private runs the
loss against the privacy ledger's epsilon spent and against per-sample gradients.

Loss is drawn on a log axis only where that is honest. When the smallest loss is near
zero compared with the largest, the loss itself goes on the log axis. Otherwise (a
regularised or noisy objective whose optimum is far from zero) the panels show the gap
``loss - best``, where ``best`` is the smallest loss any of the runs reached, on a log
axis whose label names that value; points at the best value itself (gap 0) are left
out.

Runs are labelled by their folder name, lengthened by as many parent folders as it takes
to tell apart runs whose folders have the same name (``a/run`` and ``b/run``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedopt.errors import ConfigError

_AXES = (
    ("round", "rounds"),
    ("sim_time_s", "simulated time"),
    ("bytes_total", "bytes sent"),
)
_EXTRA = (
    ("accuracy", "train accuracy"),
    ("test_accuracy", "test accuracy"),
    ("distance_to_opt", "distance to optimum"),
    ("relative_sq_distance", "mean ||x_i - x*||^2 / start"),
    ("test_loss", "test loss"),
    ("grad_norm_sq", "||grad F||^2 (train)"),
    ("loss_gap", "F(x) - F* (closed form)"),
    ("attack_success", "attack success (ensemble margin < 0)"),
)
_LOG_METRICS = ("distance_to_opt", "relative_sq_distance", "grad_norm_sq", "loss_gap")
EPSILON_AXIS = "epsilon_rdp"
"""x axis of private runs: the privacy ledger's epsilon spent so far (RDP accountant)."""
_NEAR_ZERO = 1e-2
"""The loss goes on a log axis as it is when its minimum is below this share of its maximum."""

_RERUN = "the run directory is damaged or the run did not finish; rerun it with `fedopt run`"


@dataclass(frozen=True)
class Run:
    """One run directory as the report reads it."""

    path: Path
    label: str
    records: list[dict[str, Any]]
    summary: dict[str, Any]


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"report: {str(path)!r} is not UTF-8 text; {_RERUN}") from None
    except OSError as exc:
        raise ConfigError(
            f"report: cannot read {str(path)!r} ({exc.strerror or exc}); check its permissions"
        ) from None


def _json_error(path: Path, exc: json.JSONDecodeError, line: int | None = None) -> ConfigError:
    where = f"line {line}: " if line is not None else f"line {exc.lineno}: "
    return ConfigError(
        f"report: {str(path)!r} is not valid JSON ({where}{exc.msg}, column {exc.colno}); {_RERUN}"
    )


def load_run(run_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Metrics records and summary of a run directory.

    Raises
    ------
    ConfigError
        When the directory is missing or a file, or ``metrics.jsonl``/``summary.json``
        is missing, empty, unreadable or not the JSON that ``fedopt run`` writes; the
        message names the file and, for a garbled one, the line.
    """
    if not run_dir.exists():
        raise ConfigError(f"report: run directory {str(run_dir)!r} does not exist; check the path")
    if not run_dir.is_dir():
        raise ConfigError(
            f"report: {str(run_dir)!r} is a file, not a run directory; pass the folders "
            "written by `fedopt run` (they hold summary.json and metrics.jsonl)"
        )
    for name in ("metrics.jsonl", "summary.json"):
        if (run_dir / name).exists() and not (run_dir / name).is_file():
            raise ConfigError(f"report: {str(run_dir / name)!r} is not a file; {_RERUN}")
    missing = [n for n in ("metrics.jsonl", "summary.json") if not (run_dir / n).is_file()]
    if missing:
        raise ConfigError(
            f"report: {str(run_dir)!r} is not a fedopt run directory (no "
            f"{' or '.join(missing)}); pass directories written by `fedopt run`"
        )
    summary_path = run_dir / "summary.json"
    text = _read_text(summary_path)
    if not text.strip():
        raise ConfigError(f"report: {str(summary_path)!r} is empty; {_RERUN}")
    try:
        summary = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _json_error(summary_path, exc) from None
    if not isinstance(summary, dict):
        raise ConfigError(
            f"report: {str(summary_path)!r} holds a {type(summary).__name__}, not the "
            f"summary object; {_RERUN}"
        )
    metrics_path = run_dir / "metrics.jsonl"
    records = []
    for lineno, line in enumerate(_read_text(metrics_path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _json_error(metrics_path, exc, lineno) from None
        if not isinstance(rec, dict):
            raise ConfigError(
                f"report: {str(metrics_path)!r} line {lineno} holds a {type(rec).__name__}, "
                f"not a record object; {_RERUN}"
            )
        records.append(rec)
    if not records:
        raise ConfigError(f"report: {str(metrics_path)!r} has no records; {_RERUN}")
    return records, summary


def run_labels(paths: list[Path]) -> list[str]:
    """A label per run: its folder name, with just enough parents to tell runs apart.

    Examples: ``[x/a, y/b]`` gives ``a, b``; ``[x/run, y/run]`` gives ``x/run, y/run``.
    The same folder given twice gets ``#2``, ``#3`` appended.
    """
    parts = [p.absolute().parts for p in paths]

    def suffix(i: int, k: int) -> str:
        return Path(*parts[i][-k:]).as_posix()

    labels = []
    for i in range(len(paths)):
        k = 1
        others = [j for j in range(len(paths)) if parts[j] != parts[i]]
        while k < len(parts[i]) and any(suffix(i, k) == suffix(j, k) for j in others):
            k += 1
        labels.append(suffix(i, k))
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            labels[i] = f"{label} #{seen[label]}"
    return labels


def summary_table(runs: list[tuple[str, dict[str, Any]]]) -> str:
    """Plain-text table of the final figures of each run."""
    cols = [
        "run",
        "algorithm",
        "rounds",
        "sim_time_s",
        "gradients_total",
        "queries_total",
        "communications_total",
        "messages_total",
        "bytes_total",
        "final_loss",
        "final_loss_gap",
        "final_accuracy",
        "final_test_accuracy",
        "final_distance_to_opt",
        "final_relative_sq_distance",
    ]
    cols = [c for c in cols if c == "run" or any(c in s for _, s in runs)]
    rows = [[name] + [_fmt(s.get(c)) for c in cols[1:]] for name, s in runs]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([line, *body])


def _x_value(record: dict[str, Any], x: str) -> float | None:
    """The record's value on axis ``x``; round runs count messages / 2 as communications
    (an edge exchange is a message each way), so every method shares the paper's axes."""
    if x in record:
        return record[x]
    if x == EPSILON_AXIS:
        return record.get("ledgers", {}).get("privacy", {}).get(EPSILON_AXIS)
    if x == "communications_total" and "messages_total" in record:
        return record["messages_total"] / 2
    return None


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def loss_scale(runs: list[Run]) -> tuple[str, float | None]:
    """How loss panels are drawn: ``("log", None)``, ``("gap", best)`` or ``("linear", None)``.

    ``log``: every loss is positive and the smallest is near zero next to the largest.
    ``gap``: the gap to ``best`` (the smallest loss of any run) on a log axis.
    ``linear``: too few distinct values for a gap (or non-finite losses only).
    """
    losses = [r["loss"] for run in runs for r in run.records if _number(r.get("loss"))]
    if not losses:
        return "linear", None
    lo, hi = min(losses), max(losses)
    if lo > 0 and lo <= _NEAR_ZERO * hi:
        return "log", None
    if hi > lo:
        return "gap", lo
    return "linear", None


def _panels(runs: list[Run]) -> list[tuple[str, str, str]]:
    """(metric, x key, x label) of every panel to draw."""
    last = [run.records[-1] for run in runs]
    panels = [("loss", x, label) for x, label in _AXES]
    panels += [(key, "round", label) for key, label in _EXTRA if any(key in r for r in last)]
    if any(r.get("gradients_total") for r in last):  # the DADAO paper's axes (+ bytes)
        relative = any("relative_sq_distance" in r for r in last)
        metric = "relative_sq_distance" if relative else "loss"
        panels += [
            (metric, "gradients_total", "gradients"),
            (metric, "communications_total", "communications (edge events; rounds: msgs / 2)"),
            (metric, "bytes_total", "bytes sent"),
        ]
    if any("privacy" in r.get("ledgers", {}) for r in last):  # DP runs: loss vs budget
        panels.append(("loss", EPSILON_AXIS, "epsilon spent (RDP accountant)"))
    if any(r.get("per_sample_gradients_total") for r in last):  # DIFF2's cost axis
        panels.append(("loss", "per_sample_gradients_total", "per-sample gradients"))
    if any(r.get("queries_total") for r in last):  # zeroth-order methods' cost axis
        panels.append(("loss", "queries_total", "function queries"))
        if any("loss_gap" in r for r in last):
            panels.append(("loss_gap", "queries_total", "function queries"))
    return panels


def report(run_dirs: list[Path], out: Path | None = None) -> Path:
    """Write ``report.png`` comparing ``run_dirs`` (into ``out``) and print their table.

    Parameters
    ----------
    run_dirs
        Run directories written by ``fedopt run``.
    out
        Folder for ``report.png`` (default: the first run directory).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter, MaxNLocator

    loaded = [load_run(d) for d in run_dirs]
    runs = [
        Run(d, label, records, summary)
        for d, label, (records, summary) in zip(run_dirs, run_labels(run_dirs), loaded, strict=True)
    ]
    out = out or run_dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    panels = _panels(runs)
    scale, best = loss_scale(runs)
    cols = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.0 * cols, 3.8 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    event_runs = any("events_total" in run.records[-1] for run in runs)
    for ax, (key, x, xlabel) in zip(axes.flat, panels, strict=False):
        gap = key == "loss" and scale == "gap"
        positive = True
        for i, run in enumerate(runs):
            pts = [(_x_value(r, x), r[key]) for r in run.records if _number(r.get(key))]
            pts = [(a, b - best if gap else b) for a, b in pts if _number(a)]
            if gap:
                pts = [(a, b) for a, b in pts if b > 0]
            if pts:
                xs, ys = zip(*pts, strict=True)
                style = "-o" if len(xs) < 12 else "-"
                ax.plot(xs, ys, style, label=run.label, color=colors[i % len(colors)], ms=3)
                positive &= min(ys) > 0
        ylabel = dict(_EXTRA).get(key, key)
        if gap:
            ylabel = f"loss - lowest of all runs ({best:.6g})"
        if gap or (positive and (key in _LOG_METRICS or (key == "loss" and scale == "log"))):
            ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        if x == "round":
            ax.set_xlabel("rounds (event runs: blocks)" if event_runs else "rounds")
            ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        else:
            ax.set_xlabel(xlabel)
            if x == "bytes_total":
                ax.xaxis.set_major_formatter(EngFormatter(unit="B"))
            elif x == "sim_time_s":
                ax.xaxis.set_major_formatter(EngFormatter(unit="s"))
            else:
                ax.xaxis.set_major_formatter(EngFormatter())
            ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(
            handles,
            labels,
            loc="upper center",
            ncol=min(len(labels), 4),
            fontsize=9,
            frameon=False,
        )
    top = 1 - 0.5 / (3.8 * rows) * math.ceil(len(labels) / 4) if handles else 1
    fig.tight_layout(rect=(0, 0, 1, top))
    path = out / "report.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(summary_table([(run.label, run.summary) for run in runs]))
    return path

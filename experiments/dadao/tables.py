"""Tables and figures of the DADAO paper's grid, from a finished sweep directory.

Usage (from the repository root)::

    fedopt sweep experiments/dadao/grid.sweep.yaml           # the grid -> runs/dadao-grid/
    python experiments/dadao/tables.py runs/dadao-grid      # this script
    fedopt sweep experiments/dadao/grid_quick.sweep.yaml     # cycle + time-varying RGG, t 120
    python experiments/dadao/tables.py runs/dadao-grid-quick

The cells are defined by ``grid.sweep.yaml``: problems x graphs (the base files
``lsq_*.yaml`` and ``logreg_*.yaml``, n = 16) x methods (DADAO, ADOM+ with one gossip
step per round and multi-consensus, MSDA, continuized, asynchronous gossip with full
gradients), each method with its stop rule. This script only reads the run directories.

Budget: every method gets the same number of local gradients on average. The event
methods run to ``t = T`` (n gradients per time unit: DADAO and async gossip on the
nodes' clocks, continuized with 2 gradients per edge event at edge rate n/2); the round
methods run ``T`` rounds (n gradients per round); ``T`` is read from the cells.

Metric: least squares reports ``relative_sq_distance`` = mean_i ||x_i - x*||^2 over its
start. The logistic problem has no closed-form optimum, so fedopt records only the loss
``F(x_bar)``; this script computes ``x*`` by Newton's method in float64 on the same data
and uses the relative loss gap ``(F(x_bar) - F*) / (F(x_bar_0) - F*)``, with ``F*``
evaluated by the problem's own (float32) loss so that both sides round alike.

For each cell the table gives the gradients, communications (edge activations: edge
events for event methods, messages / 2 for round methods, each gossip step activating
every edge once) and bytes spent at the first record where the metric is <= 1e-6, or
"not reached" with the final value. A method the sweep excludes (MSDA and continuized on
logistic regression and on the time-varying graph) is "n/a" with the reason fedopt gives
when asked to compile it. Per (problem, graph) the script writes ``report.png`` (``fedopt
report``) and ``axes.png`` (metric against gradients and against communications, round
methods included) into ``SWEEP_DIR/<problem>_<graph>/``; per problem
``<problem>_grid.png``; ``dadao_table.md`` and ``dadao_results.json`` hold the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TARGET = 1e-6

PROBLEMS = {"lsq": "least squares", "logreg": "logistic regression"}
GRAPHS = {
    "star": "star",
    "complete": "complete",
    "cycle": "cycle",
    "path": "path",
    "grid": "2D grid 4x4",
    "barbell": "barbell 8+8",
    "rgg": "time-varying RGG (10)",
}


@dataclass(frozen=True)
class Method:
    """One column of the grid: the method's option name in grid.sweep.yaml, label, schedule."""

    key: str
    label: str
    schedule: str  # "events" or "rounds"


METHODS = (
    Method("dadao", "DADAO", "events"),
    Method("adom_plus", "ADOM+", "rounds"),
    Method("adom_plus_mc", "ADOM+ multi-consensus", "rounds"),
    Method("msda", "MSDA", "rounds"),
    Method("continuized", "Continuized", "events"),
    Method("async_gossip", "async gossip (full grad, lr 0.05)", "events"),
)


# ----------------------------------------------------------------------------- graph facts


def graph_facts(plan: Any) -> dict[str, Any]:
    """|E|, DADAO's lambda_mix (worst case over a sequence) and ADOM+'s chi and MC steps."""
    from fedopt.algorithms.adom import consensus_steps, graph_chi
    from fedopt.algorithms.laplacian_gossip import member_graphs, topology_members
    from fedopt.topology import spectral_facts

    topo = plan.topology
    graphs = member_graphs(topo, "tables")
    facts = [spectral_facts(g) for g in graphs]
    chi1 = max(float(f["dadao_chi1"]) for f in facts)
    chi2 = max(float(f["dadao_chi2"]) for f in facts)
    chi = graph_chi(topology_members(topo, "tables"))
    return {
        "edges": round(sum(g.number_of_edges() for g in graphs) / len(graphs), 1),
        "chi1": chi1,
        "chi2": chi2,
        "lambda_mix": math.sqrt(2 * chi1 * chi2),
        "adom_chi": chi,
        "mc_steps": consensus_steps(chi, True),
    }


# ----------------------------------------------------------------------------- logistic F*


def logistic_optimum(config: Any) -> dict[str, float]:
    """``x*`` of the logistic problem by Newton's method (float64) and ``F*``.

    Returns ``F*`` twice: in float64 (``f_star64``) and evaluated by the problem's own
    float32 loss at ``x*`` (``f_star``, the value a converged run records).
    """
    import torch

    from fedopt.problems import PROBLEMS as REGISTRY

    n = config.topology.n
    oracle = REGISTRY.get("logistic").oracle_class(
        config.problem, config.seed, torch.arange(n), n, torch.device("cpu")
    )
    X = oracle.X.double().reshape(-1, oracle.dim)  # all samples; every node has M of them
    y = oracle.y.double().reshape(-1)
    lam = float(config.problem.l2)
    pen = torch.ones(oracle.dim, dtype=torch.float64)
    if config.problem.bias:
        pen[-1] = 0.0

    def value(w: torch.Tensor) -> float:
        z = X @ w
        loss = (torch.nn.functional.softplus(z) - y * z).mean()
        return float(loss + lam / 2 * (pen * w * w).sum())

    w = torch.zeros(oracle.dim, dtype=torch.float64)
    for _ in range(50):
        s = torch.sigmoid(X @ w)
        g = X.T @ (s - y) / len(y) + lam * pen * w
        H = (X.T * (s * (1 - s))) @ X / len(y) + torch.diag(lam * pen)
        step = torch.linalg.solve(H, g)
        w = w - step
        if float(step.norm()) < 1e-15 * (1 + float(w.norm())):
            break
    return {
        "f_star": oracle.evaluate(w)["loss"],
        "f_star64": value(w),
        "x_star_norm": float(w.norm()),
    }


# ----------------------------------------------------------------------------- metrics


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines() if s]


def communications(rec: dict[str, Any]) -> float:
    """Edge activations: edge events (event methods) or messages / 2 (round methods)."""
    if "communications_total" in rec:
        return rec["communications_total"]
    return rec["messages_total"] / 2


def metric_series(records: list[dict[str, Any]], problem: str, f_star: float | None) -> list[float]:
    if problem == "lsq":
        return [r["relative_sq_distance"] for r in records]
    start = records[0]["loss"] - f_star
    return [(r["loss"] - f_star) / start for r in records]


def summarize_cell(
    records: list[dict[str, Any]], problem: str, f_star: float | None, schedule: str
) -> dict[str, Any]:
    """Cost at the first record with metric <= TARGET, and the final and best values."""
    vals = metric_series(records, problem, f_star)
    out: dict[str, Any] = {
        "final": vals[-1],
        "best": min(vals),
        "final_gradients": records[-1]["gradients_total"],
        "final_communications": communications(records[-1]),
        "final_bytes": records[-1]["bytes_total"],
    }
    hit = next((i for i, v in enumerate(vals) if v <= TARGET), None)
    if hit is not None:
        r = records[hit]
        out.update(
            reached=True,
            gradients=r["gradients_total"],
            communications=communications(r),
            bytes=r["bytes_total"],
            time=r["sim_time_s"] if schedule == "events" else r["round"],
        )
        # does it stay below the target afterwards (no divergence / noise-floor crossing)?
        out["stays"] = all(v <= 10 * TARGET for v in vals[hit:])
    else:
        out["reached"] = False
    return out


# ----------------------------------------------------------------------------- plots


def axes_plot(
    cells: dict[str, dict[str, Any]], problem: str, f_star: float | None, path: Path, title: str
) -> None:
    """Metric against gradients and against communications for one (problem, graph)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    draw_cell_axes(axes, cells, problem, f_star)
    fig.suptitle(title, fontsize=10)
    legend(fig, axes[0])
    fig.savefig(path, dpi=90)
    plt.close(fig)


def draw_cell_axes(axes: Any, cells: dict[str, Any], problem: str, f_star: float | None) -> None:
    """Metric against gradients (linear) and communications (log) on two axes."""
    ylabel = "mean ||x_i - x*||^2 / start" if problem == "lsq" else "(F - F*) / (F0 - F*)"
    # the logistic gap is measured through float32 losses: below ~1e-8 it is rounding noise
    floor = 1e-14 if problem == "lsq" else 1e-9
    top = 10.0
    for color, m in enumerate(METHODS):
        cell = cells.get(m.key)
        if not cell or "run_dir" not in cell:
            continue
        recs = read_records(Path(cell["run_dir"]))
        vals = [max(v, floor) for v in metric_series(recs, problem, f_star)]
        top = max(top, *vals)
        style = {"label": m.label, "lw": 1.2, "color": f"C{color}"}
        axes[0].plot([r["gradients_total"] for r in recs], vals, **style)
        pts = [(communications(r), v) for r, v in zip(recs, vals, strict=True)]
        pts = [(c, v) for c, v in pts if c > 0]
        axes[1].plot([c for c, _ in pts], [v for _, v in pts], **style)
    for ax, xl in zip(axes, ("gradients", "communications (edge activations)"), strict=True):
        ax.set_yscale("log")
        ax.axhline(TARGET, color="grey", lw=0.6, ls=":")
        ax.set_xlabel(xl, fontsize=8)
        ax.set_ylim(floor / 2, top * 2)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[1].set_xscale("log")
    axes[0].set_ylabel(ylabel, fontsize=8)


def legend(fig: Any, ax: Any) -> None:
    """One legend for the figure, below the axes."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))


def problem_figure(results: dict[str, Any], problem: str, graphs: list[str], path: Path) -> None:
    """All graphs of one problem: gradients (top row) and communications (bottom row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(graphs), figsize=(2.9 * len(graphs), 5.4), squeeze=False)
    for j, g in enumerate(graphs):
        entry = results[f"{problem}_{g}"]
        draw_cell_axes([axes[0][j], axes[1][j]], entry["cells"], problem, entry.get("f_star"))
        axes[0][j].set_title(GRAPHS[g], fontsize=9)
        if j:
            axes[0][j].set_ylabel("")
            axes[1][j].set_ylabel("")
    fig.suptitle(f"{PROBLEMS[problem]}, n = 16", fontsize=10)
    legend(fig, axes[0][0])
    fig.savefig(path, dpi=70)
    plt.close(fig)


# ----------------------------------------------------------------------------- table


def fmt_int(v: float) -> str:
    return f"{round(v):,}"


def fmt_bytes(v: float) -> str:
    return f"{v / 1e6:.2f} MB" if v >= 1e5 else f"{v / 1e3:.1f} kB"


def fmt_value(v: float, problem: str) -> str:
    """A metric value; the logistic loss gap below 1e-7 is float32 rounding noise."""
    if problem == "logreg" and abs(v) < 1e-7:
        return "< 1e-7 (float32 floor)"
    return f"{v:.1e}"


def table(results: dict[str, Any], problem: str, graphs: list[str], budget: int) -> str:
    what = (
        "relative squared distance mean_i ||x_i - x*||^2 / start"
        if problem == "lsq"
        else "relative loss gap (F(x_bar) - F*) / (F(x_bar_0) - F*)"
    )
    lines = [
        f"**{PROBLEMS[problem]}**: cost to reach {what} <= 1e-6 "
        f"(budget: t = {budget} for event methods, {budget} rounds for round methods)",
        "",
        "| graph | lambda_mix | ADOM+ MC steps | method | gradients | communications | bytes "
        "| t or rounds | final value |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for g in graphs:
        entry = results[f"{problem}_{g}"]
        facts = entry["facts"]
        for k, m in enumerate(METHODS):
            cell = entry["cells"][m.key]
            head = (
                f"| {GRAPHS[g]} | {facts['lambda_mix']:.1f} | {facts['mc_steps']} "
                if k == 0
                else "| | | "
            )
            if "na" in cell:
                row = f"| {m.label} | {cell['na']} | | | | |"
            elif cell["reached"]:
                t = f"{cell['time']:.0f}" if m.schedule == "events" else f"{cell['time']} rounds"
                flag = "" if cell["stays"] else " (rose again after reaching 1e-6)"
                row = (
                    f"| {m.label} | {fmt_int(cell['gradients'])} | "
                    f"{fmt_int(cell['communications'])} | {fmt_bytes(cell['bytes'])} | {t} | "
                    f"{fmt_value(cell['final'], problem)}{flag} |"
                )
            else:
                best = ""
                if cell["best"] < cell["final"] / 3:
                    best = f" (best {fmt_value(cell['best'], problem)})"
                row = (
                    f"| {m.label} | not reached | ({fmt_int(cell['final_communications'])}) | "
                    f"({fmt_bytes(cell['final_bytes'])}) | | {fmt_value(cell['final'], problem)}"
                    f"{best} |"
                )
            lines.append(head + row)
    return "\n".join(lines)


def short_cell(cell: dict[str, Any], m: Method, problem: str) -> str:
    """One cell of the compact table: gradients / communications / bytes (t or rounds)."""
    if "na" in cell:
        return cell["na"].replace("n/a (fedopt crashed: AttributeError)", "n/a (fedopt crash)")
    if not cell["reached"]:
        best = ""
        if cell["best"] < cell["final"] / 3:
            best = f" (best {fmt_value(cell['best'], problem)})"
        return f"not reached: final {fmt_value(cell['final'], problem)}{best}"
    t = f"t {cell['time']:.0f}" if m.schedule == "events" else f"{cell['time']} rounds"
    flag = ", rose again" if not cell["stays"] else ""
    return (
        f"{fmt_int(cell['gradients'])} / {fmt_int(cell['communications'])} / "
        f"{fmt_bytes(cell['bytes'])} ({t}{flag})"
    )


def compact_table(results: dict[str, Any], problem: str, graphs: list[str]) -> str:
    """Graphs as rows, methods as columns (the README's table)."""
    head = "| graph | lambda_mix | " + " | ".join(m.label for m in METHODS) + " |"
    lines = [head, "|" + "---|" * (len(METHODS) + 2)]
    for g in graphs:
        entry = results[f"{problem}_{g}"]
        cells = [short_cell(entry["cells"][m.key], m, problem) for m in METHODS]
        lam = entry["facts"]["lambda_mix"]
        lines.append(f"| {GRAPHS[g]} | {lam:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- driver


def na_reason(exc: Exception) -> str:
    msg = str(exc)
    if "conjugate" in msg:
        return "n/a (needs conjugate gradients)"
    if "time-varying" in msg or "fixed graph" in msg:
        return "n/a (fixed graphs only)"
    return f"n/a ({msg.splitlines()[0][:80]})"


def not_run_reason(res: Any, spec: Any, name: str) -> str:
    """Why a cell of the full grid has no run: fedopt's refusal when the sweep excludes
    it, else its failure (or "not run")."""
    from fedopt.config import validate
    from fedopt.engine.compile import compile_plan
    from fedopt.errors import ConfigError
    from fedopt.sweep.expand import expand

    entry = res.manifest["cells"].get(name)
    if entry is not None and entry.get("status") == "failed":
        return f"n/a (fedopt crashed: {(entry.get('error') or '?').split(':')[0]})"
    cell = next((c for c in expand(replace(spec, exclude=())) if c.name == name), None)
    if cell is None:
        return "n/a (not in the sweep)"
    try:
        compile_plan(validate(cell.raw, cell.base_dir), base_dir=cell.base_dir)
    except ConfigError as exc:
        return na_reason(exc)
    return "n/a (not run yet)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep_dir", nargs="?", default="runs/dadao-grid", help="a finished sweep")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)  # tiny problems; the machine is shared
    from fedopt.config import load_experiment
    from fedopt.engine.compile import compile_plan
    from fedopt.results.report import report
    from fedopt.sweep.results import SweepResults
    from fedopt.sweep.spec import load_sweep

    res = SweepResults.load(args.sweep_dir)
    root = res.folder
    spec = load_sweep(res.manifest["source"])
    cells = {c.name: c for c in res.cells}
    stems = list(dict.fromkeys(c.columns["experiment"] for c in res.cells))
    problems = [p for p in PROBLEMS if any(s.startswith(p + "_") for s in stems)]
    graphs = [g for g in GRAPHS if any(s.endswith("_" + g) for s in stems)]
    budget = None
    results: dict[str, Any] = {}
    for stem in stems:
        problem, g = stem.split("_", 1)
        yaml_path = HERE / f"{stem}.yaml"
        base = load_experiment(yaml_path)
        entry: dict[str, Any] = {
            "yaml": str(yaml_path.relative_to(HERE.parents[1])),
            "facts": graph_facts(compile_plan(base, base_dir=HERE)),
            "cells": {},
        }
        if problem == "logreg":
            entry.update(logistic_optimum(base))
        f_star = entry.get("f_star")
        for m in METHODS:
            name = f"{stem}/{m.key}"
            c = cells.get(name)
            if c is None or not c.done:
                cell: dict[str, Any] = {"na": not_run_reason(res, spec, name)}
            else:
                cell = {"run_dir": str(c.path), "wall_s": c.entry.get("wall_s")}
                cell.update(summarize_cell(c.records, problem, f_star, m.schedule))
                stop = c.config.get("stop", {})
                budget = budget or stop.get("sim_time_s") or stop.get("rounds")
            entry["cells"][m.key] = cell
        dirs = [Path(c["run_dir"]) for c in entry["cells"].values() if "run_dir" in c]
        if dirs:
            with contextlib.redirect_stdout(io.StringIO()) as buf:  # `fedopt report`
                report(dirs, root / stem)
            (root / stem / "report.txt").write_text(buf.getvalue())
            axes_plot(
                entry["cells"],
                problem,
                f_star,
                root / stem / "axes.png",
                f"{PROBLEMS[problem]}, {GRAPHS[g]}, n = 16",
            )
        results[stem] = entry
    budget = int(budget or 0)
    for problem in problems:
        problem_figure(results, problem, graphs, root / f"{problem}_grid.png")
    md = "\n\n".join(
        f"**{PROBLEMS[p]}** (gradients / communications / bytes to 1e-6)\n\n"
        + compact_table(results, p, graphs)
        for p in problems
    )
    md += "\n\n" + "\n\n".join(table(results, p, graphs, budget) for p in problems)
    walls = [c.entry.get("wall_s") or 0.0 for c in res.cells if c.done]
    md += (
        f"\n\n{len(walls)} cells; the sum of their run times is {sum(walls):.0f} s "
        f"(sweep {res.manifest['sweep']!r}).\n"
    )
    (root / "dadao_table.md").write_text(md)
    (root / "dadao_results.json").write_text(
        json.dumps({"budget": budget, "results": results}, indent=1)
    )
    print(md)
    print(f"tables and plots under {root}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

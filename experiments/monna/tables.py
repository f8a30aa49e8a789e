"""Tables and figures of the MoNNA paper's grid (scaled to digits), from a sweep directory.

Usage (from the repository root)::

    fedopt sweep experiments/monna/grid.sweep.yaml                # 99 cells -> runs/monna-grid/
    python experiments/monna/tables.py runs/monna-grid      # this script

Setting (``digits_alie.yaml``, spec ``monna.md`` 2.3-2.7): n = 26 nodes on a complete
graph, the last f = 5 Byzantine (n = 5f + 1), ``digits_mlp`` with 64 hidden units
(4,810 parameters), batch 25, Dirichlet label skew over the 21 honest nodes,
``lr = 0.75 / (1 + floor(t / 50))``, norm regulariser ``1e-4 ||theta||``.

The cells are defined by ``grid.sweep.yaml``: alpha in {1, 5} x attacks {ALIE, FOE, SF, LF} x
methods {MoNNA, NNA, MoCWTM, BRIDGE, MoGM, GM, SCC, LEARN}, plus per (alpha, seed) the
attack-free reference "D-SGD" (``p2p_mean``, momentum 0.99, no ``byzantine`` section:
all 26 nodes honest, full averaging); seeds 1 and 2 at alpha 1, seed 1 at alpha 5; 150
rounds. This script only reads the run directories.

Outputs, into the sweep directory:

* ``alpha=<a>/<attack>/report.png`` + ``report.txt``: ``fedopt report`` of the first
  seed's runs of that panel (D-SGD included);
* ``accuracy_alpha<a>.png``: test accuracy against rounds, mean and min-max band over
  seeds, one panel per attack;
* ``heatmap.png``: final test accuracy (mean over seeds), method x attack, per alpha;
* ``monna_table.md`` (method x attack, final and max test accuracy, mean +- std over
  seeds) and ``monna_results.json``.

Accuracy is fedopt's ``test_accuracy``: the average model of the honest nodes on the
held-out 20 % of digits (359 images), recorded every ``eval.every`` rounds. The paper
reports honest node 0's model; the consensus distance here is small (see README).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BASE = HERE / "digits_alie.yaml"


@dataclass(frozen=True)
class Method:
    """A row of the tables: the method's option name in grid.sweep.yaml and its label."""

    key: str
    label: str


REFERENCE = Method("D-SGD", "D-SGD (no attack)")
METHODS = tuple(
    Method(k, k) for k in ("MoNNA", "NNA", "MoCWTM", "BRIDGE", "MoGM", "GM", "SCC", "LEARN")
)
ATTACKS = {"alie": "ALIE", "foe": "FOE", "sign_flip": "SF", "label_flip": "LF"}


def cell_stats(cell: Any) -> dict[str, Any]:
    """Test accuracy over the records of one finished cell, and its final figures."""
    recs = cell.records
    acc = [r.get("test_accuracy", float("nan")) for r in recs]
    return {
        "run_dir": str(cell.path),
        "run_wall_s": cell.summary["wall_time_s"],  # the run's rounds, set-up excluded
        "rounds": [r["round"] for r in recs],
        "test_accuracy": acc,
        "final": acc[-1],
        "max": max(acc),
        "final_loss": recs[-1]["loss"],
        "consensus_distance": recs[-1].get("consensus_distance"),
    }


# ----------------------------------------------------------------------------- tables


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    m = statistics.fmean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return m, s


def fmt_pm(values: list[float]) -> str:
    if not values:
        return "n/a"
    m, s = mean_std(values)
    if len(values) == 1:
        return f"{100 * m:.1f}"
    return f"{100 * m:.1f} ± {100 * s:.1f}"


def table_md(results: dict[str, Any], alpha: float, seeds: list[int], attacks: list[str]) -> str:
    """Rows = methods, columns = attacks; cell = final / max test accuracy (%)."""
    block = results[str(alpha)]
    head = "| method | no attack | " + " | ".join(ATTACKS[a] for a in attacks) + " |"
    lines = [
        f"**Dirichlet alpha = {alpha:g}** ({len(seeds)} seed{'s' if len(seeds) > 1 else ''}: "
        f"{', '.join(map(str, seeds))}). Cell: final / max test accuracy in %, "
        + ("mean ± std over seeds." if len(seeds) > 1 else "one seed."),
        "",
        head,
        "|" + "---|" * (len(attacks) + 2),
    ]

    def cell(key: str) -> str:
        runs = block.get(key, [])
        if any("error" in r for r in runs):
            return "crashed"
        fin = [r["final"] for r in runs if "final" in r]
        mx = [r["max"] for r in runs if "max" in r]
        return f"{fmt_pm(fin)} / {fmt_pm(mx)}" if fin else "n/a"

    lines.append(f"| {REFERENCE.label} | {cell('none/D-SGD')} |" + " — |" * len(attacks))
    for m in METHODS:
        lines.append(
            f"| {m.label} | — | " + " | ".join(cell(f"{a}/{m.key}") for a in attacks) + " |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- figures


def accuracy_figure(
    results: dict[str, Any], alpha: float, attacks: list[str], path: Path, rounds: int
) -> None:
    """Test accuracy against rounds: mean over seeds, min-max band; one panel per attack."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    block = results[str(alpha)]
    fig, axes = plt.subplots(1, len(attacks), figsize=(3.1 * len(attacks), 3.2), squeeze=False)
    styles = [(REFERENCE, {"color": "k", "ls": "--"})] + [
        (m, {"color": f"C{i}"}) for i, m in enumerate(METHODS)
    ]
    for ax, a in zip(axes[0], attacks, strict=True):
        for m, style in styles:
            key = "none/D-SGD" if m is REFERENCE else f"{a}/{m.key}"
            runs = [r for r in block.get(key, []) if "test_accuracy" in r]
            if not runs:
                continue
            xs = runs[0]["rounds"]
            ys = list(zip(*(r["test_accuracy"] for r in runs), strict=True))
            mean = [statistics.fmean(v) for v in ys]
            ax.plot(xs, mean, lw=1.2, label=m.label, **style)
            if len(runs) > 1:
                ax.fill_between(
                    xs, [min(v) for v in ys], [max(v) for v in ys], alpha=0.15, color=style["color"]
                )
        ax.set_title(f"{ATTACKS[a]}, alpha = {alpha:g}", fontsize=9)
        ax.set_ylim(0, 1)
        ax.set_xlim(0, rounds)
        ax.set_xlabel("rounds", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def heatmap_figure(
    results: dict[str, Any], alphas: list[float], attacks: list[str], path: Path
) -> None:
    """Final test accuracy (mean over seeds), method x attack, one panel per alpha."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(
        1, len(alphas), figsize=(1.2 + 3.3 * len(alphas), 3.6), squeeze=False, layout="constrained"
    )
    for k, (ax, alpha) in enumerate(zip(axes[0], alphas, strict=True)):
        block = results[str(alpha)]
        rows = [REFERENCE.key] + [m.key for m in METHODS]
        grid = np.full((len(rows), len(attacks)), np.nan)
        for i, key in enumerate(rows):
            for j, a in enumerate(attacks):
                cell = "none/D-SGD" if key == REFERENCE.key else f"{a}/{key}"
                fin = [r["final"] for r in block.get(cell, []) if "final" in r]
                if fin:
                    grid[i, j] = statistics.fmean(fin)
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        for i in range(len(rows)):
            for j in range(len(attacks)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{100 * grid[i, j]:.0f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(attacks)), [ATTACKS[a] for a in attacks], fontsize=8)
        labels = ["D-SGD, no attack"] + [m.label for m in METHODS]
        ax.set_yticks(range(len(rows)), labels if k == 0 else [""] * len(rows), fontsize=8)
        seeds = len(block.get("none/D-SGD", []))
        ax.set_title(f"alpha = {alpha:g} ({seeds} seed{'s' if seeds > 1 else ''})", fontsize=9)
    fig.suptitle("final test accuracy (%), mean over seeds", fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ----------------------------------------------------------------------------- driver


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep_dir", nargs="?", default="runs/monna-grid", help="a finished sweep")
    args = ap.parse_args(argv)

    from fedopt.results.report import report
    from fedopt.sweep.results import SweepResults

    res = SweepResults.load(args.sweep_dir)
    root = res.folder
    alphas = sorted({float(c.columns["alpha"]) for c in res.cells})
    attacks = [a for a in ATTACKS if any(c.columns["attack"] == a for c in res.cells)]
    results: dict[str, Any] = {}
    seeds_for: dict[float, list[int]] = {}
    walls: dict[str, list[float]] = {}
    rounds = 0
    for alpha in alphas:
        block: dict[str, list[dict[str, Any]]] = {}
        results[str(alpha)] = block
        mine = [c for c in res.cells if float(c.columns["alpha"]) == alpha]
        seeds_for[alpha] = sorted({int(c.entry["seed"]) for c in mine})
        for c in mine:
            key = f"{c.columns['attack']}/{c.columns['method']}"
            if c.done:
                cell = cell_stats(c)
                walls.setdefault(c.columns["method"], []).append(cell["run_wall_s"])
                rounds = max(rounds, cell["rounds"][-1])
            else:
                cell = {"error": c.entry.get("error") or c.status}
            cell["seed"] = c.entry["seed"]
            block.setdefault(key, []).append(cell)
        # one `fedopt report` per (alpha, attack) panel, first seed's runs
        first = seeds_for[alpha][0]
        for a in attacks:
            names = [f"alpha={alpha:g}/none/{REFERENCE.key}/seed{first}"]
            names += [f"alpha={alpha:g}/{a}/{m.key}/seed{first}" for m in METHODS]
            dirs = [root / n for n in names if (root / n / "summary.json").is_file()]
            if dirs:
                panel = root / f"alpha={alpha:g}" / a
                with contextlib.redirect_stdout(io.StringIO()) as buf:
                    report(dirs, panel)
                (panel / "report.txt").write_text(buf.getvalue())
        accuracy_figure(results, alpha, attacks, root / f"accuracy_alpha{alpha:g}.png", rounds)
    heatmap_figure(results, alphas, attacks, root / "heatmap.png")
    md = "\n\n".join(table_md(results, a, seeds_for[a], attacks) for a in alphas)
    timing = ", ".join(f"{k} {statistics.fmean(v):.1f}" for k, v in walls.items() if v)
    total = sum(c.entry.get("wall_s") or 0.0 for c in res.cells if c.done)
    md += (
        f"\n\n{rounds} rounds per run; the cells' run times sum to {total:.0f} s. Mean "
        f"wall seconds of a run's rounds (from summary.json, set-up excluded): {timing}.\n"
    )
    (root / "monna_table.md").write_text(md)
    (root / "monna_results.json").write_text(
        json.dumps({"rounds": rounds, "results": results}, indent=1)
    )
    print(md)
    print(f"tables and plots under {root}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

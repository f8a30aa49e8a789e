"""The table of the fault examples: each faulty run beside its fault-free twin.

Usage (from the repository root)::

    fedopt sweep experiments/faults/faults.sweep.yaml --out runs/faults   # every YAML here
    python experiments/faults/tables.py runs/faults               # this script

Each faulty experiment is compared with its fault-free twin (``PAIRS``). The sweep runs
every YAML of this folder as a named cell (``runs/faults/<yaml stem>/``); this script
reads those run directories and writes one ``fedopt report`` per algorithm
(``runs/faults/report_dsgd/``, ``runs/faults/report_fedavg/``: loss against rounds,
simulated time and bytes), and ``runs/faults/faults_table.md``: final test accuracy,
final loss, simulated time and messages by kind (from ``summary.json``) for each pair.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# (faulty experiment, its twin, what the fault is, round to probe inside the fault window
# or None: only the end of the run)
PAIRS = (
    ("dsgd_crash", "dsgd_base", "4 of 16 nodes crash, rounds 50-150", 150),
    ("dsgd_partition", "dsgd_base", "two halves cut apart, rounds 50-150", 150),
    ("dsgd_stragglers", "dsgd_base", "stragglers: p = 0.1, 10x slower", None),
    ("dsgd_stragglers_partial", "dsgd_stragglers", "same + use first 3 of 4 neighbours", None),
    ("dsgd_slow_links", "dsgd_base", "4 links at 200 ms (not 5 ms)", None),
    ("dsgd_slow_links_partial", "dsgd_slow_links", "same + use first 3 of 4 neighbours", None),
    ("fedavg_crash", "fedavg_base", "5 of 20 clients crash from round 10", 30),
    ("fedavg_stragglers", "fedavg_base", "speed spread 0.5 + stragglers p = 0.1, 10x", None),
    ("fedavg_stragglers_partial", "fedavg_stragglers", "same + use first 15 of 20 updates", None),
    ("fedavg_drop", "fedavg_base", "20 % of messages lost", 30),
)
KINDS = ("model", "model:late", "model:dropped", "update", "update:late", "update:dropped")


def read_one(run_dir: Path) -> dict[str, Any]:
    """``summary.json`` of a cell, with its records by round and the max consensus."""
    summary = json.loads((run_dir / "summary.json").read_text())
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    summary["records"] = {
        r["round"]: {k: r.get(k) for k in ("test_accuracy", "loss", "consensus_distance")}
        for r in recs
    }
    summary["max_consensus_distance"] = max(r.get("consensus_distance", 0.0) for r in recs)
    return summary


def kinds_cell(s: dict[str, Any]) -> str:
    by = s.get("by_kind", {})
    parts = [f"{k} {by[k]['messages']:,}" for k in KINDS if k in by]
    return ", ".join(parts)


def probe(s: dict[str, Any], rnd: int | None) -> str:
    """Test accuracy (%) and loss at round ``rnd`` (inside the fault window)."""
    if rnd is None:
        return ""
    r = s["records"][rnd]
    return f"r{rnd}: {100 * r['test_accuracy']:.1f} / {r['loss']:.3f}"


def row(
    stem: str,
    what: str,
    twin_stem: str,
    s: dict[str, Any],
    twin: dict[str, Any] | None,
    rnd: int | None,
) -> str:
    """One table row; '(twin value)' after each figure when there is a twin."""

    def pair(mine: str, theirs: str) -> str:
        return f"{mine} ({theirs})" if twin is not None else mine

    t = twin or {}
    acc = pair(
        f"{100 * s['final_test_accuracy']:.1f} / {s['final_loss']:.3f}",
        f"{100 * t.get('final_test_accuracy', 0):.1f} / {t.get('final_loss', 0):.3f}",
    )
    mid = pair(probe(s, rnd), probe(t, rnd)) if rnd is not None else ""
    cons = pair(f"{s['max_consensus_distance']:.2g}", f"{t.get('max_consensus_distance', 0):.2g}")
    tm = pair(f"{s['sim_time_s']:.2f}", f"{t.get('sim_time_s', 0):.2f}")
    if twin is not None:
        tm += f", x{s['sim_time_s'] / twin['sim_time_s']:.2f}"
    twin_cell = f"`{twin_stem}`" if twin is not None else "—"
    return f"| `{stem}` | {what} | {twin_cell} | {acc} | {mid} | {cons} | {tm} | {kinds_cell(s)} |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep_dir", nargs="?", default="runs/faults", help="the finished sweep")
    args = ap.parse_args(argv)

    from fedopt.results.report import report
    from fedopt.sweep.results import SweepResults

    res = SweepResults.load(args.sweep_dir)
    root = res.folder
    done = {c.name: c for c in res.cells if c.done}
    missing = sorted({s for pair in PAIRS for s in pair[:2]} - set(done))
    if missing:
        print(f"not done yet: {', '.join(missing)}; run the sweep first", file=sys.stderr)
        return 1
    stems = sorted(done)
    summaries = {stem: read_one(done[stem].path) for stem in stems}
    for family in ("dsgd", "fedavg"):
        dirs = [done[st].path for st in stems if st.startswith(family)]
        with contextlib.redirect_stdout(io.StringIO()) as buf:
            report(dirs, root / f"report_{family}")
        (root / f"report_{family}" / "report.txt").write_text(buf.getvalue())
    lines = [
        "| run | fault | twin | final test acc % / loss (twin) | inside the window: acc % / "
        "loss (twin) | max consensus distance (twin) | sim time s (twin), ratio | "
        "messages by kind |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for b in sorted({twin for _, twin, _, _ in PAIRS if twin.endswith("_base")}):
        lines.append(row(b, "none", "", summaries[b], None, None))
    for stem, twin, what, rnd in PAIRS:
        lines.append(row(stem, what, twin, summaries[stem], summaries[twin], rnd))
    total = sum(c.entry.get("wall_s") or 0.0 for c in done.values())
    md = "\n".join(lines) + f"\n\nAll {len(stems)} runs: {total:.0f} s of run time.\n"
    (root / "faults_table.md").write_text(md)
    (root / "faults_summaries.json").write_text(json.dumps(summaries, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Table of a DIMAT baselines sweep (``baselines.sweep.yaml``): mean +- std over seeds.

    python experiments/dimat/baselines_table.py runs/dimat-baselines

For every (topology, split, method): the final after-round test accuracy averaged over the
agents' own models (DIMAT's metric), its accuracy on each agent's own classes, the
accuracy of the average model, bytes and gradients per run, and the first evaluation
(round 18 = 2 epochs) as the "initial gain".
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def _records(cell: Path) -> list[dict]:
    path = cell / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _fmt(values: list[float], scale: float = 100.0) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values) * scale
    sd = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {sd:.1f}"


def main(root: str) -> None:
    groups: dict[tuple[str, str, str], list[list[dict]]] = defaultdict(list)
    for metrics in sorted(Path(root).rglob("metrics.jsonl")):
        cell = metrics.parent
        parts = cell.relative_to(root).parts  # name=<topology>/kind=<split>/<method>/seed<k>
        if len(parts) < 4:
            continue
        topo, split, method = parts[0].split("=", 1)[-1], parts[1].split("=", 1)[-1], parts[2]
        groups[(topo, split, method)].append(_records(cell))
    print(
        "| topology | split | method | test acc. @2 ep. | final test acc. | own classes |"
        " avg model | MB sent | gradients |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for (topo, split, method), runs in sorted(groups.items()):
        last = [r[-1] for r in runs if r]
        first = [r[1] for r in runs if len(r) > 1]
        row = [
            topo,
            split,
            method,
            _fmt([r["test_accuracy"] for r in first]),
            _fmt([r["test_accuracy"] for r in last]),
            _fmt([r.get("own_classes_test_accuracy", float("nan")) for r in last]),
            _fmt([r["avg_model_test_accuracy"] for r in last]),
            f"{statistics.fmean(r['bytes_total'] for r in last) / 1e6:.1f}",
            f"{int(statistics.fmean(r['gradients_total'] for r in last)):,}",
        ]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/dimat-baselines")

"""Table of a DIMAT merge sweep (``merges_seeds.sweep.yaml``): mean +- std over seeds.

    python experiments/dimat/merges_table.py runs/dimat-seeds

For every (topology, split, method): DIMAT's metric, the test accuracy of every agent's own
model right after merge r averaged over agents, at r = 1, 2, 5 and the last merge; the
accuracy on each agent's own classes after the last merge; the training epochs behind the
last merge; bytes per run and DIMAT's "communication rounds per epoch" (model messages per
agent per epoch of local training after pre-training). Directory layout:
``name=<topology>/kind=<split>/<method>/seed<k>`` (with or without ``kind=``).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def _fmt(values: list[float], scale: float = 100.0) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values) * scale
    sd = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {sd:.1f}"


def main(root: str) -> None:
    groups: dict[tuple[str, ...], list[tuple[list[dict], dict, dict]]] = defaultdict(list)
    for metrics in sorted(Path(root).rglob("metrics.jsonl")):
        cell = metrics.parent
        if cell.name.startswith("."):
            continue  # a cell still running
        parts = cell.relative_to(root).parts
        key = tuple(p.split("=", 1)[-1] for p in parts[:-1])
        records = [json.loads(x) for x in metrics.read_text().splitlines()]
        summary = json.loads((cell / "summary.json").read_text())
        config = (cell / "config.yaml").read_text()
        groups[key].append((records, summary, {"config": config}))
    print(
        "| cell | seeds | r1 | r2 | r5 | final (r) | own classes, final | epochs at final |"
        " MB sent | comm. rounds / epoch |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key, runs in sorted(groups.items()):
        recs = [r for r, _, _ in runs]
        summ = runs[0][1]
        last = [r[-1] for r in recs]
        n = summ["n"]
        rounds = last[0]["round"]
        spe = summ["derived"]["steps_per_epoch"]
        steps = summ["derived"]["local_steps_per_round"]
        grads = last[0]["gradients_total"] / n  # pretrain + (rounds - 1) intervals
        epochs_at_final = grads / spe
        messages_per_round = last[0]["messages_total"] / rounds / n
        epochs_per_round = steps / spe
        row = [
            "/".join(key),
            str(len(runs)),
            _fmt([r[1]["test_accuracy"] for r in recs]),
            _fmt([r[2]["test_accuracy"] for r in recs]),
            _fmt([r[5]["test_accuracy"] for r in recs]),
            _fmt([x["test_accuracy"] for x in last]) + f" ({rounds})",
            _fmt([x["own_classes_test_accuracy"] for x in last]),
            f"{epochs_at_final:g}",
            f"{statistics.fmean(x['bytes_total'] for x in last) / 1e6:.2f}",
            f"{messages_per_round / epochs_per_round:g}",
        ]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/dimat-seeds")

"""Table of DIMAT merge sweeps and of baselines on the same set-up: mean +- std over seeds.

    python experiments/dimat/merges_table.py runs/dimat-seeds [runs/dimat-baselines-cnn ...]

For a ``dimat`` cell: DIMAT's metric, the test accuracy of every agent's own model right
after merge r, averaged over agents, at r = 1, 2, 5 and 10 (``digits_cnn_dimat.yaml``: 20
pre-training epochs before merge 1 and 2 epochs between merges, so 20, 22, 28 and 38
epochs of training behind them). For a gossip baseline cell (one minibatch step a round):
the same metric at the same epochs (round = epochs x steps_per_epoch, or the nearest
evaluated round when the evaluation grid does not hit it). Also the accuracy
on each agent's own classes at the last column, bytes per run to that point and DIMAT's
"communication rounds per epoch" (model messages per agent per epoch of training; for
DIMAT counted over the 2-epoch merge interval, as in the paper's plot). Directory layout:
``name=<topology>/[kind=<split>/]<method>/seed<k>``.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

MERGES = (1, 2, 5, 10)


def _fmt(values: list[float], scale: float = 100.0) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values) * scale
    sd = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {sd:.1f}"


def _points(records: list[dict], summary: dict) -> tuple[list[dict], float, dict]:
    """The records at DIMAT's merges 1, 2, 5, 10, messages per agent per epoch, epoch 2."""
    by_round = {r["round"]: r for r in records}
    derived = summary["derived"]
    spe = derived["steps_per_epoch"]
    n = summary["n"]
    if "local_steps_per_round" in derived:  # dimat: round r is right after merge r
        epochs_per_round = derived["local_steps_per_round"] / spe
        last = records[-1]
        per_epoch = last["messages_total"] / last["round"] / n / epochs_per_round
        return [by_round[r] for r in MERGES], per_epoch, {}
    pre = 20  # the pre-training epochs of digits_cnn_dimat.yaml
    rounds = [(pre + 2 * (r - 1)) * spe for r in MERGES]
    early = min(records, key=lambda x: abs(x["round"] - 2 * spe))
    nearest = [min(records, key=lambda x, r=r: abs(x["round"] - r)) for r in rounds]
    return nearest, derived.get("comm_rounds_per_epoch", 0.0), early


def main(roots: list[str]) -> None:
    groups: dict[tuple[str, ...], list[tuple[list[dict], float, dict]]] = defaultdict(list)
    for root in roots:
        for metrics in sorted(Path(root).rglob("metrics.jsonl")):
            cell = metrics.parent
            if cell.name.startswith("."):
                continue  # a cell still running
            parts = cell.relative_to(root).parts[:-1]
            summary = json.loads((cell / "summary.json").read_text())
            key = (str(summary["n"]), *(p.split("=", 1)[-1] for p in parts))
            records = [json.loads(x) for x in metrics.read_text().splitlines()]
            groups[key].append(_points(records, summary))
    print(
        "| cell | n | seeds | merge 1 (ep. 20) | merge 2 (ep. 22) | merge 5 (ep. 28) |"
        " merge 10 (ep. 38) | own classes @10 | MB @10 | comm. rounds / epoch |"
        " epoch 2: acc. / MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key, runs in sorted(groups.items()):
        cols = [_fmt([p[0][i]["test_accuracy"] for p in runs]) for i in range(len(MERGES))]
        last = [p[0][-1] for p in runs]
        early = [p[2] for p in runs if p[2]]
        row = [
            "/".join(key[1:]),
            key[0],
            str(len(runs)),
            *cols,
            _fmt([x["own_classes_test_accuracy"] for x in last]),
            f"{statistics.fmean(x['bytes_total'] for x in last) / 1e6:.2f}",
            f"{runs[0][1]:g}",
            (
                _fmt([e["test_accuracy"] for e in early])
                + f" / {statistics.fmean(e['bytes_total'] for e in early) / 1e6:.2f}"
                if early
                else "-"
            ),
        ]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main(sys.argv[1:] or ["runs/dimat-seeds"])

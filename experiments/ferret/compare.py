"""Run Ferret, FedKSeed, FedMeZO and FedAvg experiments and tabulate the paper's figures.

For every experiment file given, runs it in-process on the local engine (with
``--set`` overrides applied to all) and reports, from its records:

* ``bytes/round``: payload + header bytes metered per round (``bytes_total / rounds``),
  and the uplink and downlink bytes of one client's messages in the last round's kinds;
* ``rounds to target``: the first evaluated round whose ``--metric`` (default ``loss``;
  ``test_loss`` for tiny_lm's held-out topics) is at most ``--target``, or ``-``;
* ``s/round local`` and ``s/round aggregation``: wall-clock seconds per round spent in
  the clients' local work (training, projection; for ZO methods the two-point steps)
  and in the rest of the round (the server's reconstruction or replay, averaging,
  metering), measured by timing the algorithms' local functions from outside;
* the final loss and the work counters (forwards, basis entries).

Usage::

    python experiments/ferret/compare.py experiments/ferret/digits_*.yaml --target 1.0 \
        [--set stop.rounds=20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import yaml

from fedopt.algorithms import fedavg, fedkseed, ferret
from fedopt.config import apply_overrides, validate
from fedopt.engine.compile import compile_plan
from fedopt.engine.local import run_local

LOCAL = {"seconds": 0.0}
ROUND = {"seconds": 0.0}


def _timed(owner: Any, name: str, clock: dict[str, float]) -> None:
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            clock["seconds"] += time.perf_counter() - t0

    setattr(owner, name, wrapper)


_timed(ferret, "train", LOCAL)  # the clients' first-order steps (module-level import)
_timed(ferret.Ferret, "local_encode", LOCAL)  # the clients' projections
_timed(fedkseed.TwoPointStar, "local", LOCAL)  # the clients' two-point ZO steps
_timed(fedavg.FedAvg, "_train", LOCAL)  # FedAvg's local steps
for _cls in (ferret.Ferret, fedkseed.FedKSeed, fedkseed.FedMeZO, fedavg.FedAvg):
    _timed(_cls, "round", ROUND)  # whole rounds (evaluation excluded)


def run_one(
    path: Path, overrides: list[str], target: float | None, metric: str, every: int
) -> dict[str, Any]:
    raw = apply_overrides(yaml.safe_load(path.read_text()), overrides)
    raw["eval"] = {**raw.get("eval", {}), "every": every}
    plan = compile_plan(validate(raw), base_dir=path.parent)
    LOCAL["seconds"] = ROUND["seconds"] = 0.0
    result, _ = run_local(plan)
    total = ROUND["seconds"]
    recs = result.records
    rounds = int(recs[-1]["round"])
    hit = next((int(r["round"]) for r in recs if target is not None and r[metric] <= target), None)
    kinds = {k: v for k, v in result.totals.by_kind.items()}
    return {
        "file": path.name,
        "algorithm": raw["algorithm"]["name"]
        + (
            f"/{raw['algorithm'].get('variant', 'paper')}"
            if raw["algorithm"]["name"] == "ferret"
            else ""
        ),
        "rounds": rounds,
        "bytes_per_round": recs[-1]["bytes_total"] / rounds,
        "bytes_by_kind": kinds,
        "rounds_to_target": hit,
        "metric": metric,
        "final_loss": recs[-1][metric],
        "first_loss": recs[0][metric],
        "trajectory": [(int(r["round"]), r[metric], r["bytes_total"]) for r in recs],
        "s_per_round_local": LOCAL["seconds"] / rounds,
        "s_per_round_aggregation": (total - LOCAL["seconds"]) / rounds,
        "forwards_total": recs[-1].get("forwards_total", 0),
        "basis_entries_total": recs[-1].get("basis_entries_total", 0),
    }


def table(rows: list[dict[str, Any]], target: float | None) -> str:
    head = (
        f"| algorithm | bytes/round | rounds to loss <= {target} | final loss | s/round local | "
        "s/round aggregation | forwards | basis entries |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['algorithm']} | {r['bytes_per_round']:,.0f} | {r['rounds_to_target'] or '-'} "
        f"(of {r['rounds']}) | {r['final_loss']:.4f} | {r['s_per_round_local']:.3f} | "
        f"{r['s_per_round_aggregation']:.3f} | {r['forwards_total']:,} | "
        f"{r['basis_entries_total']:,} |"
        for r in rows
    ]
    return head + "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--set", action="append", default=[], dest="overrides")
    p.add_argument("--target", type=float, default=None)
    p.add_argument("--metric", default="loss", help="record field (tiny_lm: test_loss)")
    p.add_argument("--every", type=int, default=1, help="evaluate every this many rounds")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    rows = [run_one(f, args.overrides, args.target, args.metric, args.every) for f in args.files]
    print(table(rows, args.target))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Side-by-side benchmark: fedopt against the shared harnesses, alternating, medians.

Runs, in one sitting and alternating A B C ... A B C ... (``--repeats`` times):

* ``fedopt bench fedavg-logreg`` (local engine, 2 threads) and, when ``--no-meter`` is
  asked, the same with metering off (metering overhead);
* ``limit_fedavg.py N R --chunk 1024 --threads 2`` (the batched limit at its best);
* optionally Flower (``flower_fedavg.py N R 2 --max-workers 0``) and pfl-research
  (``pfl_fedavg.py N R``) with ``--peer-python`` (a Python that has them installed);
* for ``gossip-ring``: ``fedopt bench gossip-ring`` against ``limit_gossip_ring.py``.

Prints one JSON line per measurement and a table of medians and ratios to fedopt.

The harnesses (``limit_fedavg.py``, ``limit_gossip_ring.py``, ``flower_fedavg.py``,
``pfl_fedavg.py``) live outside this package, in the project's ``shared/bench`` folder:
``--shared PATH``, else the environment variable ``FEDOPT_SHARED_BENCH``, else
``../shared/bench`` beside the checkout. When a harness is missing there, the comparison
says which files it looked for and where, and runs the fedopt systems alone.

Usage::

    python -m fedopt.bench.compare fedavg-logreg --clients 1000 10000 --repeats 3 \\
        --shared ../shared/bench [--peer-python /path/to/python] [--meter-overhead]
    python -m fedopt.bench.compare gossip-ring --nodes 1024 --dim 100000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

SHARED_ENV = "FEDOPT_SHARED_BENCH"
"""Environment variable naming the folder of the shared harnesses."""
DEFAULT_SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "bench"
"""``../shared/bench`` beside the checkout (the project's layout)."""
LIMITS = {"fedavg-logreg": "limit_fedavg.py", "gossip-ring": "limit_gossip_ring.py"}
PEERS = ("pfl_fedavg.py", "flower_fedavg.py")


def shared_folder(arg: str | None) -> Path:
    """Folder of the harnesses: ``--shared``, else ``$FEDOPT_SHARED_BENCH``, else the default."""
    return Path(arg or os.environ.get(SHARED_ENV) or DEFAULT_SHARED)


def missing_harnesses(shared: Path, workload: str, peers: bool) -> list[str]:
    """Names of the harness files ``workload`` needs that are not in ``shared``."""
    need = [LIMITS[workload], *(PEERS if peers and workload == "fedavg-logreg" else ())]
    return [name for name in need if not (shared / name).is_file()]


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 3600) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout, check=False)
    for line in reversed(out.stdout.splitlines()):
        line = line.strip()
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(
        f"{' '.join(cmd)} printed no result:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    )


def fedavg_commands(args: argparse.Namespace, n: int) -> dict[str, tuple[list[str], str]]:
    """name -> (command, throughput key)."""
    py, shared, r = sys.executable, Path(args.shared), str(args.rounds)
    missing = set(getattr(args, "missing", ()))
    fed = [
        py,
        "-m",
        "fedopt",
        "bench",
        "fedavg-logreg",
        "--clients",
        str(n),
        "--rounds",
        r,
        "--threads",
        "2",
    ]
    cmds = {
        "fedopt": (fed, "client_updates_per_s"),
        "limit": (
            [py, str(shared / "limit_fedavg.py"), str(n), r, "--chunk", "1024", "--threads", "2"],
            "updates_per_s_rounds",
        ),
    }
    if LIMITS["fedavg-logreg"] in missing:
        del cmds["limit"]
    if args.meter_overhead:
        cmds["fedopt-no-meter"] = ([*fed, "--no-meter"], "client_updates_per_s")
    if args.ray_actors:
        cmds[f"fedopt-ray-{args.ray_actors}"] = (
            [*fed[:-2], "--threads", "1", "--engine", "ray", "--actors", str(args.ray_actors)],
            "client_updates_per_s",
        )
    peers_here = not missing.intersection(PEERS)
    if args.peer_python and n <= args.peer_max_clients and peers_here:
        pp = args.peer_python
        cmds["pfl"] = (
            [pp, str(shared / "pfl_fedavg.py"), str(n), r, "--threads", "1"],
            "updates_per_s_rounds",
        )
        torchrun = str(Path(pp).with_name("torchrun"))
        cmds["pfl-2proc"] = (
            [torchrun, "--nproc_per_node=2", str(shared / "pfl_fedavg.py"), str(n), r],
            "updates_per_s_rounds",
        )
        cmds["flower"] = (
            [pp, str(shared / "flower_fedavg.py"), str(n), r, "2", "--max-workers", "0"],
            "updates_per_s_rounds",
        )
    return cmds


def gossip_commands(args: argparse.Namespace) -> dict[str, tuple[list[str], str]]:
    """name -> (command, throughput key)."""
    py, shared = sys.executable, Path(args.shared)
    n, d, r = str(args.nodes), str(args.dim), str(args.rounds)
    fed = [
        py,
        "-m",
        "fedopt",
        "bench",
        "gossip-ring",
        "--nodes",
        n,
        "--dim",
        d,
        "--rounds",
        r,
        "--threads",
        "2",
    ]
    cmds = {
        "fedopt": (fed, "messages_per_s"),
        "limit": (
            [py, str(shared / "limit_gossip_ring.py"), n, d, r, "--threads", "2"],
            "messages_per_s",
        ),
    }
    if LIMITS["gossip-ring"] in set(getattr(args, "missing", ())):
        del cmds["limit"]
    if args.meter_overhead:
        cmds["fedopt-no-meter"] = ([*fed, "--no-meter"], "messages_per_s")
    return cmds


def _throughput(rec: dict, key: str) -> float:
    if key in rec:
        return float(rec[key])
    for alt in ("updates_per_s_total", "client_updates_per_s", "updates_per_s"):
        if alt in rec:
            return float(rec[alt])
    raise KeyError(f"no throughput field {key!r} in {sorted(rec)}")


def measure(cmds: dict[str, tuple[list[str], str]], repeats: int, label: str) -> dict[str, float]:
    """Alternate the commands ``repeats`` times; return the median throughput of each."""
    seen: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(repeats):
        for name, (cmd, key) in cmds.items():
            rec = _run(cmd)
            seen[name].append(_throughput(rec, key))
            loss = rec.get("final_loss")
            print(
                json.dumps(
                    {
                        "case": label,
                        "system": name,
                        "throughput": seen[name][-1],
                        "final_loss": loss,
                    }
                ),
                flush=True,
            )
    return {k: statistics.median(v) for k, v in seen.items()}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("workload", choices=["fedavg-logreg", "gossip-ring"])
    p.add_argument("--clients", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--nodes", type=int, default=1024)
    p.add_argument("--dim", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--shared",
        default=None,
        help=f"folder of the harnesses (default: ${SHARED_ENV}, else {DEFAULT_SHARED})",
    )
    p.add_argument("--peer-python", help="python with flwr[simulation] and pfl installed")
    p.add_argument("--peer-max-clients", type=int, default=1000, help="skip peers above this N")
    p.add_argument("--meter-overhead", action="store_true", help="also run with metering off")
    p.add_argument("--ray-actors", type=int, default=0, help="also run the Ray engine (K actors)")
    args = p.parse_args(argv)
    shared = shared_folder(args.shared)
    args.shared = str(shared)
    args.missing = missing_harnesses(shared, args.workload, bool(args.peer_python))
    if args.missing:
        print(
            f"compare: {', '.join(args.missing)} not found in {shared}. The batched limit, "
            f"Flower and pfl run from the harnesses of the project's shared/bench folder: "
            f"pass --shared PATH or set {SHARED_ENV}=PATH to a folder that holds them. "
            "Running without the missing ones (fedopt's own systems always run).",
            file=sys.stderr,
            flush=True,
        )
    cases = (
        [(f"N={n}", fedavg_commands(args, n)) for n in args.clients]
        if args.workload == "fedavg-logreg"
        else [(f"n={args.nodes} d={args.dim}", gossip_commands(args))]
    )
    rows = []
    for label, cmds in cases:
        med = measure(cmds, args.repeats, label)
        for name, value in med.items():
            rows.append((label, name, value, value / med["fedopt"]))
    print(f"\n{'case':<16}{'system':<18}{'median/s':>14}{'ratio to fedopt':>18}")
    for label, name, value, ratio in rows:
        print(f"{label:<16}{name:<18}{value:>14.1f}{ratio:>18.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

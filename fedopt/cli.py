"""``fedopt`` command line: run, validate, list, topology, report, bench, cluster, doctor."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fedopt.errors import ConfigError, EngineError, RunInterrupted


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field, e.g. --set algorithm.lr=0.05 (repeatable)",
    )


def _load(args: argparse.Namespace):
    from fedopt.config import apply_overrides, read_yaml, validate

    data = read_yaml(args.config)
    base = Path(args.config).resolve().parent
    overrides = list(args.set)
    if getattr(args, "engine", None):
        overrides.append(f"engine.kind={args.engine}")
    if getattr(args, "actors", None) is not None:
        overrides.append(f"engine.actors={args.actors}")
    if getattr(args, "address", None):
        overrides.append(f"engine.address={args.address}")
    return validate(apply_overrides(data, overrides), base)


def cmd_run(args: argparse.Namespace) -> int:
    from fedopt.run import run_experiment

    config = _load(args)
    out = run_experiment(
        config,
        base_dir=Path(args.config).resolve().parent,
        out_dir=Path(args.out) if args.out else None,
        overwrite=True if args.overwrite else None,
        progress=False if args.quiet else None,
        resume=args.resume,
    )
    summary = json.loads((out / "summary.json").read_text())
    keys = ("rounds", "sim_time_s", "messages_total", "bytes_total", "final_loss")
    extra = ("final_accuracy", "final_test_accuracy", "final_distance_to_opt")
    shown = {k: summary[k] for k in keys + extra if k in summary}
    print(json.dumps(shown))
    print(f"results: {out}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from fedopt.engine.compile import compile_plan

    config = _load(args)
    plan = compile_plan(config, base_dir=Path(args.config).resolve().parent)
    print(
        f"ok: {config.name}: algorithm {config.algorithm.name}, problem {config.problem.name}, "
        f"topology {plan.topology.name} (n={plan.topology.n}, "
        f"{len(plan.topology.edges)} directed edges)"
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from fedopt.algorithms import ALGORITHMS
    from fedopt.problems import PROBLEMS
    from fedopt.topology import TOPOLOGIES

    def fields(model: type) -> str:
        parts = [
            f"{k}={v.default!r}"
            for k, v in model.model_fields.items()  # type: ignore[attr-defined]
            if k != "name"
        ]
        return ", ".join(parts)

    print("algorithms:")
    for name, algo in ALGORITHMS.items():
        print(f"  {name:<22} {fields(algo.Config)}")
    print("problems:")
    for name, prob in PROBLEMS.items():
        caps = ", ".join(sorted(prob.capabilities())) or "-"
        print(f"  {name:<22} {fields(prob.Config)}  [capabilities: {caps}]")
    print("topologies:")
    for name, _ in TOPOLOGIES.items():
        print(f"  {name}")
    from dataclasses import fields as dc_fields

    from fedopt.robust import AGGREGATORS, ATTACKS

    for title, registry in (("aggregators", AGGREGATORS), ("attacks", ATTACKS)):
        print(f"{title}:")
        for name, cls in registry.items():
            params = ", ".join(f"{f.name}={f.default!r}" for f in dc_fields(cls))
            print(f"  {name:<22} {params}")
    return 0


def cmd_topology(args: argparse.Namespace) -> int:
    from fedopt.topology import TopologyConfig, build_topology, describe, draw

    src = args.target
    if src.endswith((".yaml", ".yml")):
        from fedopt.config import apply_overrides, read_yaml

        data = apply_overrides(read_yaml(src), args.set)
        raw = dict(data.get("topology") or {})
        seed = int(data.get("seed", 0))
        base = Path(src).resolve().parent
    else:
        raw, seed, base = {"name": src}, args.seed, None
    if args.n is not None:
        raw["n"] = args.n
    try:
        tcfg = TopologyConfig.model_validate(raw)
    except Exception as exc:  # pydantic error -> readable
        from pydantic import ValidationError

        from fedopt.config.load import format_validation_error

        if isinstance(exc, ValidationError):
            msg = format_validation_error(exc, {"topology": raw})
            raise ConfigError("topology." + msg) from None
        raise
    plan = build_topology(tcfg, seed=seed, base_dir=base)
    flat: dict[str, object] = {}
    for key, value in describe(plan).items():
        if isinstance(value, dict) and key == "spectral":
            flat.update(value)
        else:
            flat[key] = value
    width = max(len(k) for k in flat)
    for key, value in flat.items():
        shown = f"{value:.6g}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")
    if args.draw:
        draw(plan, Path(args.draw))
        print(f"drawing: {args.draw}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from fedopt.results.report import report

    out = report([Path(d) for d in args.run_dirs], Path(args.out) if args.out else None)
    print(f"plots: {out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from fedopt.bench import run_bench

    result = run_bench(args)
    print(json.dumps(result), flush=True)
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    from fedopt.engine.ray_engine import cluster

    if args.action == "token":
        print(cluster.new_token())
    elif args.action == "start-head":
        cluster.start_head(args.port, args.num_cpus, args.num_gpus, args.node_ip, args.block)
    elif args.action == "join":
        if not args.address:
            raise ConfigError("fedopt cluster join: give the head's address, e.g. 10.0.0.5:6379")
        cluster.join(args.address, args.num_cpus, args.num_gpus, args.node_ip, args.block)
    else:
        cluster.stop()
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from fedopt.doctor import doctor

    return doctor(args.config, args.set, args.address)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fedopt`` command."""
    parser = argparse.ArgumentParser(prog="fedopt", description=__doc__)
    parser.add_argument(
        "--debug", action="store_true", help="show Python tracebacks (for developers)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run an experiment and write its run directory")
    p.add_argument("config")
    _add_set(p)
    p.add_argument("--out", help="run directory (default: output.dir or runs/<name>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--engine", choices=["local", "ray"], help="execution engine (default: local)")
    p.add_argument("--actors", type=int, help="ray: number of actors")
    p.add_argument("--address", help="ray: 'auto' or host:port of a running cluster")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check an experiment (and its topology) without running")
    p.add_argument("config")
    _add_set(p)
    p.add_argument("--engine", choices=["local", "ray"])
    p.add_argument("--actors", type=int)
    p.add_argument("--address")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("list", help="name the algorithms, problems and topologies")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("topology", help="describe a topology: degrees, connectivity, spectrum")
    p.add_argument("target", help="experiment YAML, registered name, file.py:function or file")
    p.add_argument("--n", type=int, help="number of nodes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draw", metavar="PNG", help="draw the graph into this PNG file")
    _add_set(p)
    p.set_defaults(func=cmd_topology)

    p = sub.add_parser("report", help="plot and tabulate one or more run directories")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", help="folder for the PNG plots (default: the first run directory)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("bench", help="throughput benchmarks (see README)")
    p.add_argument("workload", choices=["fedavg-logreg", "gossip-ring", "dadao", "monna"])
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--nodes", type=int, default=1024)
    p.add_argument("--dim", type=int, default=100_000)
    p.add_argument("--events", type=int, default=200_000, help="dadao: events to simulate")
    p.add_argument("--graph", default="torus", help="dadao: topology name")
    p.add_argument("--hidden", type=int, default=64, help="monna: hidden units of the MLP")
    p.add_argument("--attack", default="alie", help="monna: the Byzantine attack")
    p.add_argument("--engine", choices=["local", "ray"], default="local")
    p.add_argument("--actors", type=int, default=None, help="ray: number of actors")
    p.add_argument("--address", default=None, help="ray: cluster address")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--chunk", type=int, default=1024)
    p.add_argument("--data", choices=["auto", "materialize", "regenerate"], default="auto")
    p.add_argument("--no-meter", action="store_true", help="disable metering (overhead check)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("cluster", help="start/join/stop a Ray cluster with token auth")
    p.add_argument("action", choices=["token", "start-head", "join", "stop"])
    p.add_argument("address", nargs="?", help="join: the head's host:port")
    p.add_argument("--port", type=int, default=6379)
    p.add_argument("--num-cpus", type=int)
    p.add_argument("--num-gpus", type=int)
    p.add_argument("--node-ip", help="address this node advertises (e.g. 127.0.0.1)")
    p.add_argument("--block", action="store_true", help="stay in the foreground (containers)")
    p.set_defaults(func=cmd_cluster)

    p = sub.add_parser("doctor", help="versions, GPUs, Ray resources, and whether a plan fits")
    p.add_argument("config", nargs="?")
    _add_set(p)
    p.add_argument("--address", help="inspect this Ray cluster (default: a local one)")
    p.set_defaults(func=cmd_doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fedopt`` console script.

    User mistakes end with one ``error: ...`` line on stderr and a non-zero exit code
    (2 for bad input, 1 for run-time failures, ``128 + signum`` for a signal); no
    traceback reaches the user unless ``--debug`` is given.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    try:
        return int(args.func(args))
    except ConfigError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except EngineError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except RunInterrupted as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted by SIGINT", file=sys.stderr)
        return 130
    except OSError as exc:
        if debug:
            raise
        where = f" {exc.filename!r}" if getattr(exc, "filename", None) else ""
        print(
            f"error:{where} {exc.strerror or exc}; check the path and its permissions",
            file=sys.stderr,
        )
        return 1
    except Exception as exc:  # a bug, not a user mistake: one line, --debug for the rest
        if debug:
            raise
        print(
            f"error: internal error {type(exc).__name__}: {exc} "
            "(rerun with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 3


if __name__ == "__main__":
    sys.exit(main())

"""``fedopt`` command line: run, sweep, validate, audit, list, topology, report, bench,
cluster, doctor."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fedopt.errors import ConfigError, EngineError, RunInterrupted


def _count(text: str) -> int:
    """argparse type of the bench's sizes and counts: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _add_set(p: argparse.ArgumentParser, unset: bool = True) -> None:
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field, e.g. --set algorithm.lr=0.05 (value parsed as YAML; "
        "KEY=null sets None); --set algorithm.name=X drops the keys X does not take "
        "(repeatable)",
    )
    if unset:
        p.add_argument(
            "--unset",
            action="append",
            default=[],
            metavar="KEY",
            help="remove a key so its default applies, e.g. --unset algorithm.lr_decay "
            "(repeatable; applied before --set)",
        )


def _load_raw(args: argparse.Namespace, path: str) -> dict:
    """The experiment file with ``--unset``/``--set`` (and engine flags) applied."""
    from fedopt.config import apply_overrides, read_yaml

    data = read_yaml(path)
    base = Path(path).resolve().parent
    overrides = list(getattr(args, "set", []))
    if getattr(args, "engine", None):
        overrides.append(f"engine.kind={args.engine}")
    out = apply_overrides(data, overrides, getattr(args, "unset", []), base_dir=base)
    ray_flags = [
        f"--{flag} {getattr(args, flag)}"
        for flag in ("actors", "address")
        if getattr(args, flag, None) is not None
    ]
    if ray_flags:
        engine = out.get("engine")
        kind = engine.get("kind", "local") if isinstance(engine, dict) else "local"
        if kind != "ray":
            raise ConfigError(
                f"{' and '.join(ray_flags)}: only the Ray engine has actors and a cluster "
                f"address, but this run uses engine.kind={kind!r}; add --engine ray (or "
                "engine: {kind: ray} in the file), or drop the flag"
            )
        if args.actors is not None:
            out = apply_overrides(out, [f"engine.actors={args.actors}"])
        if args.address is not None:
            out = apply_overrides(out, [f"engine.address={args.address}"])
    return out


def _load(args: argparse.Namespace):
    from fedopt.config import validate

    return validate(_load_raw(args, args.config), Path(args.config).resolve().parent)


def _nearest_existing(path: Path) -> Path:
    """``path`` itself or its closest ancestor that exists."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_can_create_in(folder: Path, flag: str, value: str) -> None:
    """Refuse ``value`` unless something can be created inside the existing ``folder``."""
    import tempfile

    if not folder.is_dir():
        raise ConfigError(
            f"{flag} {value!r}: {str(folder)!r} is a file, so nothing can be created under "
            "it; choose a path in a folder"
        )
    try:
        tempfile.TemporaryDirectory(dir=folder, prefix=".fedopt-probe-").cleanup()
    except OSError as exc:
        raise ConfigError(
            f"{flag} {value!r}: cannot write in {str(folder)!r} ({exc.strerror or exc}); "
            "choose a writable folder"
        ) from None


def check_output_folder(value: str | Path, flag: str, *, inside: bool) -> None:
    """Refuse an output folder that cannot be made or written, before any work is done.

    Parameters
    ----------
    value
        The folder the user named.
    flag
        How the user named it (``--out``, ``output.dir``), for the message.
    inside
        True when files are written inside the folder itself (``report --out``); False
        for a run directory, which is built in a sibling and renamed into place.
    """
    path = Path(value).expanduser()
    if inside and path.exists() and not path.is_dir():
        raise ConfigError(
            f"{flag} {str(value)!r} is a file, not a folder; give a folder for the plots"
        )
    start = path if inside else path.parent
    _check_can_create_in(_nearest_existing(start.absolute()), flag, str(value))


def check_png_path(value: str) -> Path:
    """Check a ``--draw`` target: a ``.png`` file in an existing, writable folder."""
    path = Path(value).expanduser()
    if path.suffix.lower() != ".png":
        raise ConfigError(
            f"--draw {value!r}: the drawing is a PNG image; give a file name ending in .png"
        )
    if path.is_dir():
        raise ConfigError(f"--draw {value!r} is a folder; give a file name ending in .png")
    folder = path.absolute().parent
    if not folder.exists():
        above = _nearest_existing(folder)
        if above.is_dir():
            raise ConfigError(
                f"--draw {value!r}: folder {str(folder)!r} does not exist; create it first "
                "(mkdir -p) or pick an existing folder"
            )
    _check_can_create_in(_nearest_existing(folder), "--draw", value)
    return path


def cmd_run(args: argparse.Namespace) -> int:
    from fedopt.run import default_out_dir, run_experiment

    config = _load(args)
    if args.out:
        check_output_folder(args.out, "--out", inside=False)
    else:
        target = default_out_dir(config)
        flag = "output.dir" if config.output.dir else "run directory (runs/<name>)"
        check_output_folder(target, flag, inside=False)
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


def cmd_audit(args: argparse.Namespace) -> int:
    from fedopt.privacy.audit import AuditSettings, format_table, run_audit

    settings = AuditSettings(
        trials=args.trials,
        canary=args.canary,
        noise_scale=args.noise_scale,
        alpha=args.alpha,
        seed=args.seed,
    )
    if args.out:
        check_output_folder(args.out, "--out", inside=True)
    raw = _load_raw(args, args.config)
    bar = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=2 * settings.trials, desc="audit", unit="trial", leave=False)
    try:
        result = run_audit(
            raw,
            settings,
            base_dir=Path(args.config).resolve().parent,
            progress=None if bar is None else lambda done, total: bar.update(1),
        )
    finally:
        if bar is not None:
            bar.close()
    print(format_table(result))
    shown = {
        k: result.to_dict()[k]
        for k in ("trials", "epsilon_rdp", "epsilon_pld", "epsilon_lb", "resolution", "verdict")
    }
    print(json.dumps(shown))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "audit.json"
        path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        print(f"results: {path}")
    return 1 if result.violation else 0


def _default_text(field: Any) -> str:
    """How ``fedopt list`` shows a pydantic field's default (``<required>`` for none)."""
    if field.is_required():
        return "<required>"
    if field.default_factory is not None:
        value = field.default_factory()
        if hasattr(value, "model_dump"):
            value = value.model_dump(mode="json")
        return repr(value)
    return repr(field.default)


def _origin(obj: Any) -> str:
    """`` [plug-in file.py]`` for entries registered by a plug-in file, else ``""``."""
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    name = getattr(module, "__name__", "")
    if name.startswith(("fedopt_plugin_", "fedopt_user_topology_")):
        return f"  [plug-in {Path(getattr(module, '__file__', '') or '?').name}]"
    return ""


def _generator_params(fn: Any) -> str:
    """A topology generator's parameters and defaults besides ``n`` and ``seed``."""
    import inspect

    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return ""
    parts = []
    for prm in sig.parameters.values():
        if prm.name in ("self", "n", "seed") or prm.kind is prm.VAR_POSITIONAL:
            continue
        if prm.kind is prm.VAR_KEYWORD:
            parts.append(f"**{prm.name}")
        elif prm.default is prm.empty:
            parts.append(f"{prm.name}=<required>")
        else:
            parts.append(f"{prm.name}={prm.default!r}")
    return ", ".join(parts)


def cmd_list(args: argparse.Namespace) -> int:
    from dataclasses import MISSING
    from dataclasses import fields as dc_fields

    from fedopt.algorithms import ALGORITHMS
    from fedopt.plugins import load_plugins
    from fedopt.problems import PROBLEMS
    from fedopt.robust import AGGREGATORS, ATTACKS
    from fedopt.topology import TOPOLOGIES
    from fedopt.topology.custom import scan_plugins

    if args.config:
        from fedopt.config import read_yaml

        data = read_yaml(args.config)
        plugins = data.get("plugins") or []
        if not isinstance(plugins, list) or not all(isinstance(x, str) for x in plugins):
            raise ConfigError(
                f"{args.config}: plugins: expected a list of Python file paths, got {plugins!r}"
            )
        load_plugins(plugins, Path(args.config).resolve().parent)
    for file in args.plugins:
        if not file.endswith(".py"):
            raise ConfigError(f"--plugins {file!r}: a plug-in is a Python file ending in .py")
    load_plugins(list(args.plugins), Path.cwd())
    failures = scan_plugins()  # the repository's topologies/ folder

    def fields(model: type) -> str:
        return ", ".join(
            f"{k}={_default_text(v)}"
            for k, v in model.model_fields.items()  # type: ignore[attr-defined]
            if k != "name"
        )

    registries = (ALGORITHMS, PROBLEMS, TOPOLOGIES, AGGREGATORS, ATTACKS)
    w = max(len(name) for reg in registries for name, _ in reg.items())
    print("algorithms:")
    for name, algo in ALGORITHMS.items():
        print(f"  {name:<{w}}  {fields(algo.Config)}{_origin(algo)}")
    print("problems:")
    for name, prob in PROBLEMS.items():
        caps = ", ".join(sorted(prob.capabilities())) or "-"
        if not prob.has_gradients():
            caps += "; no gradients"
        print(f"  {name:<{w}}  {fields(prob.Config)}  [capabilities: {caps}]{_origin(prob)}")
    print("topologies (parameters go in topology.params):")
    for name, gen in TOPOLOGIES.items():
        print(f"  {name:<{w}}  {_generator_params(gen)}{_origin(gen)}".rstrip())
    for title, registry in (("aggregators", AGGREGATORS), ("attacks", ATTACKS)):
        print(f"{title}:")
        for name, cls in registry.items():
            params = ", ".join(
                f"{f.name}="
                + (
                    "<required>"
                    if f.default is MISSING and f.default_factory is MISSING
                    else repr(f.default if f.default is not MISSING else f.default_factory())
                )
                for f in dc_fields(cls)
            )
            print(f"  {name:<{w}}  {params}".rstrip())
    for path, error in failures.items():
        print(f"note: topology plug-in {path} failed to import: {error}", file=sys.stderr)
    return 0


def cmd_topology(args: argparse.Namespace) -> int:
    from fedopt.topology import TopologyConfig, build_topology, describe, draw

    draw_path = check_png_path(args.draw) if args.draw else None
    src = args.target
    if src.endswith((".yaml", ".yml")):
        data = _load_raw(args, src)
        raw = data.get("topology")
        if not isinstance(raw, dict):
            raise ConfigError(
                f"{src}: topology: expected a section such as {{name: ring, n: 16}}, got {raw!r}"
            )
        raw = dict(raw)
        seed = data.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError(f"{src}: seed: expected an integer, got {seed!r}")
        base = Path(src).resolve().parent
        budget = (data.get("engine") or {}).get("memory_budget_gb")
    else:
        if args.set or args.unset:
            raise ConfigError(
                f"--set/--unset change an experiment file, but {src!r} is a topology name or "
                "graph file; give topology parameters in an experiment YAML"
            )
        raw, seed, base, budget = {"name": src}, args.seed, None, None
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
    budget = float(budget) if isinstance(budget, (int, float)) and budget > 0 else None
    plan = build_topology(tcfg, seed=seed, base_dir=base, memory_budget_gb=budget)
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
    if draw_path is not None:
        draw(plan, draw_path)
        print(f"drawing: {args.draw}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from fedopt.results.report import report
    from fedopt.sweep.manifest import MANIFEST

    if args.out:
        check_output_folder(args.out, "--out", inside=True)
    sweeps = [d for d in args.run_dirs if (Path(d) / MANIFEST).is_file()]
    if sweeps:
        if len(args.run_dirs) > 1:
            raise ConfigError(
                f"report: {sweeps[0]!r} is a sweep directory; report it alone (fedopt report "
                f"{sweeps[0]}) or give run directories only"
            )
        args.sweep_dir = sweeps[0]
        args.metrics, args.by, args.x, args.y = None, None, None, None
        args.select, args.select_by, args.mode, args.no_plots = None, None, None, False
        return cmd_sweep_report(args)
    out = report([Path(d) for d in args.run_dirs], Path(args.out) if args.out else None)
    print(f"plots: {out}")
    return 0


def _prestart_workers(args: argparse.Namespace) -> None:
    """Start the pool's worker processes before this process imports torch (both take
    about 2 s; this way they overlap)."""
    import os

    from fedopt.sweep.processes import prestart

    if args.address is not None or args.dry_run or args.jobs == 1:
        return
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    cap = os.environ.get("FEDOPT_CORES", "")
    if cap.isdigit() and int(cap) > 0:
        cores = min(cores, int(cap))
    jobs = args.jobs or cores
    if jobs > 1:
        prestart(jobs)


def cmd_sweep(args: argparse.Namespace) -> int:
    _prestart_workers(args)
    try:
        return _sweep(args)
    finally:
        from fedopt.sweep.processes import release

        release()


def _sweep(args: argparse.Namespace) -> int:
    from fedopt.sweep import load_sweep, run_sweep
    from fedopt.sweep.expand import expand, prepare
    from fedopt.sweep.report import sweep_report
    from fedopt.sweep.runner import default_sweep_dir, select_cells

    spec = load_sweep(args.sweep)
    if args.set:
        from fedopt.config.load import load_yaml_text

        extra = []
        for item in args.set:
            if "=" not in item:
                raise ConfigError(f"--set {item!r}: expected dotted.key=value, e.g. stop.rounds=20")
            key, raw = item.split("=", 1)
            extra.append((key.strip(), load_yaml_text(raw, f"--set {item!r}")))
        from dataclasses import replace

        spec = replace(spec, sets=(*spec.sets, *extra))
    out = Path(args.out) if args.out else default_sweep_dir(spec)
    if args.dry_run:
        cells = expand(spec, note=lambda s: print(f"note: {s}", file=sys.stderr))
        preps = prepare(spec, select_cells(cells, args.only))
        for p in preps:
            extra_info = f"  step {p.cell.step:g}" if p.cell.step is not None else ""
            print(f"{p.cell.name}{extra_info}")
        searches = len({p.cell.search for p in preps if p.cell.search})
        more = f" (at most; {searches} halving searches)" if searches else ""
        print(f"ok: {spec.name}: {len(preps)} cells{more} validate; sweep directory {out}")
        return 0
    check_output_folder(out, "--out", inside=True)
    outcome = run_sweep(
        spec,
        out,
        jobs=args.jobs,
        address=args.address,
        overwrite=args.overwrite,
        progress=False if args.quiet else None,
        only=args.only,
    )
    counts = ", ".join(f"{v} {k}" for k, v in sorted(outcome.counts.items()))
    print(
        f"sweep {spec.name}: {outcome.total} cells ({counts}; {outcome.skipped} were already "
        f"done) in {outcome.wall_s:.1f} s"
    )
    for name, error in outcome.failed:
        print(f"failed: {name}: {error.splitlines()[0] if error else '?'}", file=sys.stderr)
    if not args.no_report:
        result = sweep_report(out, plots=not args.no_plots)
        if not args.quiet and result["markdown"].count("\n") <= 60:
            print(result["markdown"])
        elif not args.quiet:
            print(f"table: {out / 'table.md'}")
    print(f"results: {out}")
    return 1 if outcome.failed else 0


def cmd_sweep_report(args: argparse.Namespace) -> int:
    from fedopt.sweep.report import sweep_report

    if args.out:
        check_output_folder(args.out, "--out", inside=True)
    result = sweep_report(
        args.sweep_dir,
        args.out,
        metrics=args.metrics,
        by=args.by,
        x=args.x,
        y=args.y,
        select=args.select,
        select_by=args.select_by,
        mode=args.mode,
        plots=not args.no_plots,
    )
    print(result["markdown"])
    print(f"report: {result['folder']} ({', '.join(result['files'])})")
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
    parser = argparse.ArgumentParser(
        prog="fedopt",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--debug", action="store_true", help="show Python tracebacks (for developers)"
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="one of the commands below"
    )
    commands: dict[str, str] = {}

    def command(name: str, summary: str, **kw: Any) -> argparse.ArgumentParser:
        """A sub-command; its one-line summary goes in the epilog and its own --help."""
        commands[name] = summary
        kw.setdefault("description", summary)
        return sub.add_parser(name, **kw)

    p = command("run", "run an experiment and write its run directory")
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

    p = command(
        "sweep",
        "run a grid of experiments (axes, seeds, halving) in parallel, resumably",
        description="Run every cell of a sweep file: a base experiment and axes (grid over "
        "dotted keys, zip, named cells, seeds, an optional step-size halving rule). Every "
        "cell is validated before anything runs; finished cells are skipped when run again. "
        "See README.md, section Sweeps.",
    )
    p.add_argument("sweep", help="the sweep YAML")
    p.add_argument("--out", help="sweep directory (default: runs/<sweep name>)")
    p.add_argument(
        "--jobs",
        type=int,
        help="cells at once (default: the usable cores / resources.cpus; 1: in this "
        "process); with --address: Ray tasks in flight",
    )
    p.add_argument(
        "--address",
        help="run each cell as a Ray task on this cluster (host:port, auto; 'local' starts "
        "a local Ray); token auth needs RAY_AUTH_MODE=token and RAY_AUTH_TOKEN",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key in every cell, e.g. --set stop.rounds=20 (repeatable)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="rerun finished cells whose config changed"
    )
    p.add_argument(
        "--only",
        action="append",
        metavar="GLOB",
        help="run only the cells whose name matches, e.g. --only 'lsq_cycle/*' (repeatable)",
    )
    p.add_argument("--dry-run", action="store_true", help="validate and list the cells only")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-cell lines")
    p.add_argument("--no-report", action="store_true", help="do not write the tables at the end")
    p.add_argument("--no-plots", action="store_true", help="tables only, no PNG plots")
    p.set_defaults(func=cmd_sweep)

    p = command("sweep-report", "tables (mean ± std over seeds) and plots of a sweep directory")
    p.add_argument("sweep_dir")
    p.add_argument("--out", help="folder for the tables and plots (default: the sweep directory)")
    p.add_argument(
        "--metrics",
        nargs="+",
        metavar="METRIC",
        help="table columns: summary keys (final_loss), min(loss), max(test_accuracy), "
        "X@Y<=V (default: the sweep's report.metrics, else the usual final figures)",
    )
    p.add_argument("--by", help="group the plots by this axis (default: the first that varies)")
    p.add_argument("--x", help="record key on the curves' x axis (default: round)")
    p.add_argument("--y", help="record key on the curves' y axis (default: loss)")
    p.add_argument("--select", metavar="METRIC", help="model selection by this metric")
    p.add_argument("--select-by", nargs="+", metavar="AXIS", help="one winner per value of these")
    p.add_argument("--mode", choices=["min", "max"], help="lowest or highest metric wins")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.set_defaults(func=cmd_sweep_report)

    p = command("validate", "check an experiment (and its topology) without running")
    p.add_argument("config")
    _add_set(p)
    p.add_argument("--engine", choices=["local", "ray"])
    p.add_argument("--actors", type=int)
    p.add_argument("--address")
    p.set_defaults(func=cmd_validate)

    p = command(
        "audit",
        "empirical privacy audit: a lower bound on a DP run's epsilon vs its accountant",
        description="Run a differentially private experiment (diff2, dp_gd, dp_sgd) many "
        "times on two neighbouring datasets (one gradient canary in one client's data, or "
        "its mirror image / nothing), bound epsilon from below by how well a threshold test "
        "on the released iterates tells them apart (Clopper-Pearson at confidence "
        "1 - alpha), and compare with the accountant's epsilon. Exit status 0: the bound is "
        "below the accountant (consistent); 1: VIOLATION; 2: bad input.",
    )
    p.add_argument("config")
    _add_set(p)
    p.add_argument(
        "--trials",
        type=int,
        default=200,
        help="runs per world (default 200): half choose the threshold, half evaluate it; "
        "the largest bound they can show is about ln(trials / 2 / 3.69)",
    )
    p.add_argument(
        "--canary",
        choices=["replace", "add"],
        help="neighbours: replace (canary vs its mirror image; diff2, dp_gd) or add "
        "(canary vs an empty slot; dp_sgd); default: the algorithm's adjacency",
    )
    p.add_argument(
        "--noise-scale",
        type=float,
        default=1.0,
        help="multiply the noise actually drawn (the ledger keeps its claim): 0.1 is a "
        "deliberately broken mechanism, which the audit should flag (default 1)",
    )
    p.add_argument(
        "--alpha", type=float, default=0.05, help="the bound holds w.p. 1 - alpha (0.05)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="first noise seed: trials use seed .. seed + 2 * trials - 1 (default 0)",
    )
    p.add_argument("--out", help="folder for audit.json (figures and per-trial statistics)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_audit)

    p = command(
        "list",
        "algorithms, problems, topologies, aggregators and attacks, with parameters",
        description="List every registered algorithm and problem with its fields and "
        "defaults, every topology generator with its parameters, and the aggregators and "
        "attacks. Plug-ins are listed too when given: the plug-ins of an experiment file, "
        "and files named with --plugins.",
    )
    p.add_argument("config", nargs="?", help="experiment YAML whose plug-ins to load first")
    p.add_argument(
        "--plugins", nargs="+", default=[], metavar="FILE", help="plug-in .py files to load first"
    )
    p.set_defaults(func=cmd_list)

    p = command("topology", "describe a topology: degrees, connectivity, spectrum")
    p.add_argument("target", help="experiment YAML, registered name, file.py:function or file")
    p.add_argument("--n", type=int, help="number of nodes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draw", metavar="PNG", help="draw the graph into this PNG file")
    _add_set(p)
    p.set_defaults(func=cmd_topology)

    p = command("report", "plot and tabulate run directories (or a sweep directory)")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", help="folder for the PNG plots (default: the first run directory)")
    p.set_defaults(func=cmd_report)

    p = command("bench", "throughput benchmarks (see README)")
    p.add_argument(
        "workload",
        choices=[
            "fedavg-logreg",
            "gossip-ring",
            "dadao",
            "monna",
            "diff2",
            "sweep",
            "fzoos",
            "transport",
            "dimat",
            "ferret",
        ],
    )
    p.add_argument("--clients", type=_count, default=None, help="clients (default 1000; fzoos: 5)")
    p.add_argument(
        "--rounds",
        type=_count,
        default=None,
        help="rounds (default 10; sweep: 1000; dimat: training steps)",
    )
    p.add_argument("--nodes", type=_count, default=None, help="nodes (default 1024; sweep: 32)")
    p.add_argument(
        "--dim",
        type=_count,
        default=None,
        help="dimension (default 100000; sweep: 2000; fzoos: 300)",
    )
    p.add_argument("--features", type=_count, default=10_000, help="fzoos: random features M")
    p.add_argument("--history", type=_count, default=545, help="fzoos: queries per client so far")
    p.add_argument(
        "--repeats", type=_count, default=3, help="fzoos, dimat, ferret: alternated timings"
    )
    p.add_argument(
        "--model", choices=["cnn", "resnet20"], default="cnn", help="dimat: the digits model"
    )
    p.add_argument("--bases", type=_count, default=100, help="ferret: bases K of the block")
    p.add_argument(
        "--device", default="cpu", help="ferret, fzoos: torch device of the batched way (cpu, cuda)"
    )
    p.add_argument("--events", type=_count, default=200_000, help="dadao: events to simulate")
    p.add_argument(
        "--messages",
        type=_count,
        default=300,
        help="transport: 4 KB payloads (40 MB: --messages/75)",
    )
    p.add_argument("--graph", default="torus", help="dadao: topology name")
    p.add_argument("--hidden", type=_count, default=64, help="monna: hidden units of the MLP")
    p.add_argument("--attack", default="alie", help="monna: the Byzantine attack")
    p.add_argument("--engine", choices=["local", "ray"], default="local")
    p.add_argument("--actors", type=_count, default=None, help="ray: number of actors")
    p.add_argument("--address", default=None, help="ray: cluster address")
    p.add_argument("--threads", type=_count, default=None)
    p.add_argument("--chunk", type=_count, default=1024)
    p.add_argument("--data", choices=["auto", "materialize", "regenerate"], default="auto")
    p.add_argument("--no-meter", action="store_true", help="disable metering (overhead check)")
    p.add_argument("--cells", type=_count, default=64, help="sweep: number of cells")
    p.add_argument("--jobs", type=_count, default=None, help="sweep: worker processes")
    p.set_defaults(func=cmd_bench)

    p = command("cluster", "start/join/stop a Ray cluster with token auth")
    p.add_argument("action", choices=["token", "start-head", "join", "stop"])
    p.add_argument("address", nargs="?", help="join: the head's host:port")
    p.add_argument("--port", type=int, default=6379)
    p.add_argument("--num-cpus", type=int)
    p.add_argument("--num-gpus", type=int)
    p.add_argument("--node-ip", help="address this node advertises (e.g. 127.0.0.1)")
    p.add_argument("--block", action="store_true", help="stay in the foreground (containers)")
    p.set_defaults(func=cmd_cluster)

    p = command("doctor", "versions, GPUs, Ray resources, and whether a plan fits")
    p.add_argument("config", nargs="?")
    _add_set(p, unset=False)
    p.add_argument("--address", help="inspect this Ray cluster (default: a local one)")
    p.set_defaults(func=cmd_doctor)
    parser.epilog = _epilog(commands)
    return parser


def _epilog(commands: dict[str, str]) -> str:
    """One line per command, then the override rules and a pointer to the README."""
    width = max(len(name) for name in commands)
    lines = ["commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, summary in commands.items()]
    lines += [
        "",
        "overrides (run, validate, audit, topology): --set a.b=VALUE parses VALUE as YAML "
        "(a.b=null sets None);",
        "  --unset a.b removes a key so its default applies; --set algorithm.name=X drops the old",
        "  algorithm's keys that X does not take (a 'note:' line names each).",
        "",
        "`fedopt COMMAND --help` shows a command's options; README.md has the experiment file,",
        "the run directory and the Ray set-up.",
    ]
    return "\n".join(lines)


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
    except BrokenPipeError:  # the reader went away (fedopt list | head): not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
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

"""Run an experiment end to end: compile, execute on an engine, write the run directory."""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedopt.config.schema import ExperimentConfig
from fedopt.engine.compile import compile_plan
from fedopt.engine.dispatch import runner_for
from fedopt.engine.output import EngineOutput
from fedopt.engine.plan import Plan
from fedopt.errors import ConfigError, RunDiverged
from fedopt.interrupts import SignalGuard
from fedopt.network.counters import known_kinds
from fedopt.network.meter import node_totals
from fedopt.results.environment import environment
from fedopt.results.inputs import collect_inputs, portable_config, read_inputs
from fedopt.results.rundir import (
    RunDirectory,
    check_output_dir,
    params_digest,
    protected_paths,
)


def default_out_dir(config: ExperimentConfig) -> Path:
    """``output.dir`` or ``runs/<name>``."""
    return Path(config.output.dir) if config.output.dir else Path("runs") / config.name


def run_experiment(
    config: ExperimentConfig,
    *,
    base_dir: Path | None = None,
    out_dir: Path | None = None,
    overwrite: bool | None = None,
    progress: bool | None = None,
    resume: bool = False,
) -> Path:
    """Run ``config`` and return the run directory.

    Everything is validated (output folder, inputs, topology, requirements) before the
    first round. The output folder must be new, empty, or (with ``overwrite``) a previous
    run that fedopt wrote; it is never the working directory, a folder holding the
    experiment or its inputs, the home directory or ``/``. While the run lasts, SIGTERM and
    SIGINT raise :class:`~fedopt.errors.RunInterrupted`. On any error or signal the
    partial run directory is removed, but a checkpoint written with
    ``output.checkpoint_every`` stays beside it, and ``resume=True`` continues from it
    with the same results as an uninterrupted run. A run whose loss or parameters become
    NaN or infinite stops at that record: its directory is kept, marked as diverged in
    ``summary.json``, and :class:`~fedopt.errors.RunDiverged` is raised.

    Parameters
    ----------
    config
        The validated experiment.
    base_dir
        The experiment file's folder: relative input paths resolve there first, and the
        run directory may not contain it.
    out_dir
        The run directory (default: ``output.dir`` or ``runs/<name>``).
    overwrite
        Replace a previous run in ``out_dir`` (default: ``output.overwrite``).
    progress
        Show a progress bar (default: when stderr is a terminal).
    resume
        Continue from the checkpoint beside the run directory.

    Raises
    ------
    ConfigError
        Bad input, an output folder that may not be used, or a missing checkpoint.
    RunDiverged
        The loss or some node's parameters became NaN or infinite.
    RunInterrupted
        SIGTERM or SIGINT arrived.
    """
    target = Path(out_dir) if out_dir is not None else default_out_dir(config)
    replace = overwrite if overwrite is not None else config.output.overwrite
    inputs = collect_inputs(config, base_dir)
    protected = protected_paths(base_dir, [item.path for item in inputs])
    check_output_dir(target, replace, protected)
    plan = compile_plan(config, base_dir=base_dir)
    ckpt_file = checkpoint_path(target)
    snapshot = load_checkpoint(ckpt_file, config) if resume else None
    pinned = (snapshot or {}).get("header_bytes_measured")
    if pinned is not None and pinned != plan.config.network.header_bytes:
        # header_bytes: measured resumes with the value the interrupted run measured
        network = config.network.model_copy(update={"header_bytes": pinned})
        plan = compile_plan(config.model_copy(update={"network": network}), base_dir=base_dir)
    measured = (
        plan.config.network.header_bytes if config.network.header_bytes == "measured" else None
    )
    with SignalGuard() as guard:
        rundir: RunDirectory | None = None
        bar = None
        try:
            with guard.deferred():
                rundir = RunDirectory(target, replace, protected, name=config.name)
            contents, input_records = read_inputs(inputs)
            for rel, data in contents.items():
                rundir.write_bytes(rel, data)
            saved = portable_config(config.model_dump(mode="json"), inputs)
            rundir.write_yaml("config.yaml", saved)
            show = progress if progress is not None else sys.stderr.isatty()
            if show:
                from tqdm import tqdm

                bar = tqdm(total=config.stop.rounds, desc=config.name, unit="round", leave=False)
            watch = DivergenceWatch(config)
            sink = rundir

            def on_record(rec: dict[str, Any]) -> None:
                watch.check(rec)
                sink.append_metric(rec)
                if bar is not None:
                    bar.set_postfix(loss=f"{rec['loss']:.4g}", sim_s=f"{rec['sim_time_s']:.3g}")

            def on_restore(records: list[dict[str, Any]]) -> None:
                for rec in records:
                    watch.check(rec)
                sink.reset_metrics(records)

            def on_round(t: int) -> None:
                if bar is not None:
                    bar.update(1)

            def on_checkpoint(ckpt: dict[str, Any]) -> None:
                if measured is not None:
                    ckpt = {**ckpt, "header_bytes_measured": measured}
                with guard.deferred():  # a signal waits until the checkpoint is whole
                    save_checkpoint(ckpt_file, config, ckpt)

            try:
                out = execute(
                    plan,
                    on_record=on_record,
                    on_round=on_round,
                    resume=snapshot,
                    on_checkpoint=on_checkpoint,
                    on_restore=on_restore,
                )
            except RunDiverged as exc:
                if watch.diverged is None:
                    raise
                env = environment(config.seed, torch.get_num_threads(), config.engine.device)
                env["engine"] = config.engine.kind
                env["inputs"] = input_records
                rundir.write_json("env.json", env)
                rundir.write_json("summary.json", watch.summary(plan))
                with guard.deferred():
                    path = rundir.commit()
                    rundir = None  # committed: nothing to clean up
                    ckpt_file.unlink(missing_ok=True)
                last = watch.diverged["last_finite_round"]
                kept = f"the records up to round {last}" if last is not None else "no records"
                raise RunDiverged(
                    f"{exc}. The run directory {str(path)!r} keeps {kept} "
                    "(summary.json: stop_reason 'diverged')"
                ) from None
            result = out.result
            env = environment(config.seed, out.threads, out.device)
            env["engine"] = config.engine.kind
            env["workers"] = out.workers
            env["inputs"] = input_records
            rundir.write_json("env.json", env)
            _write_comm(rundir, plan, out)
            summary = summarize(config, plan, result)
            if out.transport is not None:
                summary["transport"] = _write_links(rundir, plan, out)
            rundir.write_json("summary.json", summary)
            rundir.save_array("final_model.npy", result.final_model.to(result.final_params.dtype))
            if result.final_params.numel() <= config.output.save_params_max:
                rundir.save_array("final_params.npy", result.final_params)
                rundir.save_array("final_ids.npy", result.final_ids)
            with guard.deferred():
                path = rundir.commit()
                rundir = None  # committed: nothing to clean up
                ckpt_file.unlink(missing_ok=True)
            return path
        except BaseException:
            if rundir is not None:
                with guard.deferred(raise_pending=False):
                    rundir.abort()
            raise
        finally:
            if bar is not None:
                bar.close()


class DivergenceWatch:
    """Stops a run at the first record whose loss or parameters are NaN or infinite.

    Parameters
    ----------
    config
        The experiment (for the hint: its ``algorithm.lr``).
    """

    def __init__(self, config: ExperimentConfig) -> None:
        self.config = config
        self.last: dict[str, Any] | None = None
        self.diverged: dict[str, Any] | None = None

    def check(self, rec: dict[str, Any]) -> None:
        """Remember a finite record; raise :class:`RunDiverged` for a non-finite one."""
        loss = rec.get("loss")
        finite = isinstance(loss, (int, float)) and math.isfinite(loss)
        if finite and not rec.get("nonfinite_count"):
            self.last = rec
            return
        last = self.last
        self.diverged = {
            "round": int(rec["round"]),
            "loss": loss if finite else str(loss),
            "nodes": list(rec.get("nonfinite_nodes", [])),
            "nonfinite_nodes_count": int(rec.get("nonfinite_count", 0)),
            "last_finite_round": None if last is None else int(last["round"]),
            "last_finite_loss": None if last is None else float(last["loss"]),
        }
        raise RunDiverged(self.message())

    def message(self) -> str:
        """One line: the round, the loss, which nodes, the last finite loss, a hint."""
        d = self.diverged
        assert d is not None
        parts = [f"the run diverged at round {d['round']}: loss is {d['loss']}"]
        count = d["nonfinite_nodes_count"]
        if count:
            ids = ", ".join(str(i) for i in d["nodes"])
            more = ", ..." if count > len(d["nodes"]) else ""
            have = "node has" if count == 1 else "nodes have"
            parts.append(f"{count} {have} NaN or infinite parameters (ids {ids}{more})")
        if d["last_finite_round"] is not None:
            parts.append(
                f"last finite loss {d['last_finite_loss']:.6g} at round {d['last_finite_round']}"
            )
        lr = getattr(self.config.algorithm, "lr", None)
        hint = (
            f"lower algorithm.lr (now {lr:g})"
            if isinstance(lr, (int, float))
            else "lower the algorithm's step size"
        )
        return "; ".join(parts) + f". To fix it, {hint} and run again"

    def summary(self, plan: Plan) -> dict[str, Any]:
        """``summary.json`` of a diverged run: what is known up to the last finite record."""
        config = self.config
        last = self.last or {}
        out: dict[str, Any] = {
            "name": config.name,
            "algorithm": config.algorithm.name,
            "topology": plan.topology.name,
            "problem": config.problem.name,
            "n": plan.topology.n,
            "seed": config.seed,
            "rounds": self.diverged["round"] if self.diverged else last.get("round", 0),
            "stop_reason": "diverged",
            "diverged": self.diverged,
            "final_loss": last.get("loss"),
        }
        for key in ("sim_time_s", "messages_total", "bytes_total"):
            if key in last:
                out[key] = last[key]
        return out


def checkpoint_path(target: Path) -> Path:
    """Where the checkpoint of the run directory ``target`` is kept (beside it)."""
    return target.parent / f"{target.name}.checkpoint.pt"


def config_digest(config: ExperimentConfig) -> str:
    """Hash of everything that determines a run's numbers (output settings excluded).

    Input files count by file name, not folder: the ``config.yaml`` a run directory saves
    names its copies (``inputs/graph.py:fn``) and hashes like the experiment it came from
    (``../topologies/graph.py:fn``).
    """
    from fedopt.topology.custom import GRAPH_EXTS, split_plugin

    data = config.model_dump(mode="json", exclude={"output"})
    data["plugins"] = [Path(p).name for p in data["plugins"]]
    name = data["topology"]["name"]
    parts = split_plugin(name)
    if parts is not None:
        data["topology"]["name"] = f"{Path(parts[0]).name}:{parts[1]}"
    elif name.endswith(GRAPH_EXTS):
        data["topology"]["name"] = Path(name).name
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def save_checkpoint(path: Path, config: ExperimentConfig, ckpt: dict[str, Any]) -> None:
    """Write a checkpoint atomically (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save({"config_sha256": config_digest(config), **ckpt}, tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, config: ExperimentConfig) -> dict[str, Any]:
    """Read a checkpoint written for this same experiment."""
    if not path.is_file():
        raise ConfigError(
            f"--resume: no checkpoint at {str(path)!r}; set output.checkpoint_every to write "
            "checkpoints, or run without --resume"
        )
    ckpt = torch.load(path, weights_only=False)
    if ckpt.get("config_sha256") != config_digest(config):
        raise ConfigError(
            f"--resume: the checkpoint {str(path)!r} belongs to a different experiment "
            "(config changed); rerun the original config, or delete the checkpoint"
        )
    return ckpt


def execute(
    plan: Plan,
    on_record: Callable[[dict[str, Any]], None] = lambda r: None,
    on_round: Callable[[int], None] = lambda t: None,
    meter_enabled: bool = True,
    **schedule: Any,
) -> EngineOutput:
    """Run ``plan`` on its runner (:data:`~fedopt.engine.dispatch.RUNNERS`, keyed by
    schedule and ``engine.kind``); ``schedule``: the resume/checkpoint hooks."""
    run = runner_for(plan)
    return run(
        plan, on_record=on_record, on_round=on_round, meter_enabled=meter_enabled, **schedule
    )


def _write_comm(rundir: RunDirectory, plan: Plan, out: EngineOutput) -> None:
    topo = plan.topology
    nodes = node_totals(out.edge_messages, out.edge_bytes, topo.edges, topo.n)
    rundir.write_csv(
        "comm_nodes.csv",
        ["node", "role", "sent_messages", "sent_bytes", "recv_messages", "recv_bytes"],
        [
            np.arange(topo.n),
            np.array(topo.roles),
            nodes["sent_messages"],
            nodes["sent_bytes"],
            nodes["recv_messages"],
            nodes["recv_bytes"],
        ],
    )
    used = np.flatnonzero(out.edge_messages > 0)
    header = ["src", "dst", "messages", "bytes"]
    columns = [topo.edges[used, 0], topo.edges[used, 1], out.edge_messages[used]]
    columns.append(out.edge_bytes[used])
    if out.transport is not None:  # engine.transport: grpc
        from fedopt.transport.report import edge_columns

        extra = edge_columns(out.transport, topo.edges, used, topo.n)
        header += list(extra)
        columns += list(extra.values())
    rundir.write_csv("comm_edges.csv", header, columns)


def _write_links(rundir: RunDirectory, plan: Plan, out: EngineOutput) -> dict[str, Any]:
    """``comm_links.csv`` (the three meters per worker pair); the summary's section."""
    from fedopt.transport.report import link_rows, summary_section

    assert out.transport is not None
    topo = plan.topology
    rows = link_rows(out.transport, topo.edges, out.edge_messages, out.edge_bytes, topo.n)
    rundir.write_csv("comm_links.csv", list(rows), list(rows.values()))
    header = int(plan.config.network.header_bytes)
    return summary_section(out.transport, rows, int(out.edge_bytes.sum()), header)


def summarize(config: ExperimentConfig, plan: Any, result: Any) -> dict[str, Any]:
    """Final figures and totals for summary.json."""
    last = result.records[-1]
    summary: dict[str, Any] = {
        "name": config.name,
        "algorithm": config.algorithm.name,
        "topology": plan.topology.name,
        "problem": config.problem.name,
        "n": plan.topology.n,
        "dim": int(result.final_params.shape[1]) - getattr(plan, "buf_dim", 0),
        "seed": config.seed,
        "rounds": result.rounds,
        "stop_reason": result.stop_reason,
        "sim_time_s": result.sim_time_s,
        "wall_time_s": result.wall_time_s,
        "messages_total": result.totals.messages,
        "bytes_total": result.totals.bytes,
        "retransmissions_total": result.totals.retransmissions,
        "by_kind": {k: {"messages": m, "bytes": b} for k, (m, b) in result.totals.by_kind.items()},
        "final_loss": last["loss"],
        "final_consensus_distance": last["consensus_distance"],
        "params_sha256": params_digest(result.final_ids, result.final_params),
        "derived": dict(getattr(result, "derived", {})),  # Algorithm.derived_constants
    }
    if config.network.header_bytes == "measured":
        summary["header_bytes_measured"] = plan.config.network.header_bytes
    if getattr(plan, "buf_dim", 0):  # reported rows are [params, buffers] (BatchNorm stats)
        summary["buf_dim"] = plan.buf_dim
    figures = ("accuracy", "test_loss", "test_accuracy", "distance_to_opt", "grad_norm_sq")
    for key in (*figures, "loss_gap", "attack_success"):  # the last two: black boxes
        if key in last:
            summary[f"final_{key}"] = last[key]
    summary["evaluation"] = getattr(result, "evaluation", "average_model")
    for key in ("loss", "accuracy", "test_loss", "test_accuracy"):
        if f"avg_model_{key}" in last:  # evaluation "node_models": the average model's
            summary[f"final_avg_model_{key}"] = last[f"avg_model_{key}"]
    totals = ["events_total", "communications_total"] + [f"{k}_total" for k in known_kinds()]
    for key in totals:
        if key in last:  # counters (and the event schedule's counts)
            summary[key] = last[key]
    if "relative_sq_distance" in last:
        summary["final_relative_sq_distance"] = last["relative_sq_distance"]
    for name, value in getattr(result, "metrics", {}).items():  # Algorithm.metrics
        summary[f"final_{name}"] = value
    ledgers = getattr(result, "ledgers", {})
    if ledgers:  # merged Algorithm ledgers (fedopt.engine.ledger)
        summary["ledgers"] = dict(ledgers)
    return summary

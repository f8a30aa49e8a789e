"""Run an experiment end to end: compile, execute on an engine, write the run directory."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedopt.config.schema import ExperimentConfig
from fedopt.engine.compile import compile_plan
from fedopt.engine.local import run_local
from fedopt.engine.output import EngineOutput
from fedopt.engine.plan import Plan
from fedopt.errors import ConfigError
from fedopt.network.meter import node_totals
from fedopt.results.environment import environment
from fedopt.results.rundir import RunDirectory, params_digest


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

    Everything is validated (topology, requirements, output folder) before the first
    round; on any error the partial run directory is removed, but a checkpoint written
    with ``output.checkpoint_every`` stays beside it, and ``resume=True`` continues
    from it with the same results as an uninterrupted run.
    """
    plan = compile_plan(config, base_dir=base_dir)
    target = out_dir or default_out_dir(config)
    ckpt_file = checkpoint_path(target)
    snapshot = load_checkpoint(ckpt_file, config) if resume else None
    rundir = RunDirectory(target, overwrite if overwrite is not None else config.output.overwrite)
    bar = None
    try:
        rundir.write_yaml("config.yaml", config.model_dump(mode="json"))
        total = config.stop.rounds
        show = progress if progress is not None else sys.stderr.isatty()
        if show:
            from tqdm import tqdm

            bar = tqdm(total=total, desc=config.name, unit="round", leave=False)

        def on_record(rec: dict[str, Any]) -> None:
            rundir.append_metric(rec)
            if bar is not None:
                bar.set_postfix(loss=f"{rec['loss']:.4g}", sim_s=f"{rec['sim_time_s']:.3g}")

        def on_round(t: int) -> None:
            if bar is not None:
                bar.update(1)

        out = execute(
            plan,
            on_record=on_record,
            on_round=on_round,
            resume=snapshot,
            on_checkpoint=lambda ck: save_checkpoint(ckpt_file, config, ck),
            on_restore=rundir.reset_metrics,
        )
        result = out.result
        env = environment(config.seed, out.threads, out.device)
        env["engine"] = config.engine.kind
        env["workers"] = out.workers
        rundir.write_json("env.json", env)
        _write_comm(rundir, plan, out)
        summary = summarize(config, plan, result)
        rundir.write_json("summary.json", summary)
        rundir.save_array("final_model.npy", result.final_model.to(result.final_params.dtype))
        if result.final_params.numel() <= config.output.save_params_max:
            rundir.save_array("final_params.npy", result.final_params)
            rundir.save_array("final_ids.npy", result.final_ids)
        path = rundir.commit()
        ckpt_file.unlink(missing_ok=True)
        return path
    except BaseException:
        rundir.abort()
        raise
    finally:
        if bar is not None:
            bar.close()


def checkpoint_path(target: Path) -> Path:
    """Where the checkpoint of the run directory ``target`` is kept (beside it)."""
    return target.parent / f"{target.name}.checkpoint.pt"


def config_digest(config: ExperimentConfig) -> str:
    """Hash of everything that determines a run's numbers (output settings excluded)."""
    data = config.model_dump(mode="json", exclude={"output"})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def save_checkpoint(path: Path, config: ExperimentConfig, ckpt: dict[str, Any]) -> None:
    """Write a checkpoint atomically (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"config_sha256": config_digest(config), **ckpt}, tmp)
    tmp.replace(path)


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
    """Run ``plan`` on the engine its config names (``schedule``: resume/checkpoint hooks)."""
    from fedopt.algorithms import ALGORITHMS

    if ALGORITHMS.get(plan.config.algorithm.name).schedule == "events":
        from fedopt.engine.events_local import run_events

        return run_events(plan, on_record=on_record, on_round=on_round, meter_enabled=meter_enabled)
    if plan.config.engine.kind == "ray":
        from fedopt.engine.ray_engine.engine import run_ray

        return run_ray(
            plan, on_record=on_record, on_round=on_round, meter_enabled=meter_enabled, **schedule
        )
    result, worker = run_local(plan, on_record, on_round, meter_enabled=meter_enabled, **schedule)
    device = str(worker.ctx.device)
    return EngineOutput(
        result=result,
        edge_messages=worker.meter.edge_messages.numpy(),
        edge_bytes=worker.meter.edge_bytes.numpy(),
        device=device,
        threads=torch.get_num_threads(),
        workers=[{"rank": 0, "num_nodes": plan.topology.n, "device": device}],
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
    rundir.write_csv(
        "comm_edges.csv",
        ["src", "dst", "messages", "bytes"],
        [topo.edges[used, 0], topo.edges[used, 1], out.edge_messages[used], out.edge_bytes[used]],
    )


def summarize(config: ExperimentConfig, plan: Any, result: Any) -> dict[str, Any]:
    """Final figures and totals for summary.json."""
    last = result.records[-1]
    summary: dict[str, Any] = {
        "name": config.name,
        "algorithm": config.algorithm.name,
        "topology": plan.topology.name,
        "problem": config.problem.name,
        "n": plan.topology.n,
        "dim": int(result.final_params.shape[1]),
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
    for key in ("accuracy", "test_loss", "test_accuracy", "distance_to_opt"):
        if key in last:
            summary[f"final_{key}"] = last[key]
    for key in ("events_total", "gradients_total", "communications_total"):
        if key in last:  # event schedules
            summary[key] = last[key]
    if "relative_sq_distance" in last:
        summary["final_relative_sq_distance"] = last["relative_sq_distance"]
    return summary

"""``fedopt doctor``: versions, devices, Ray resources, and whether a plan fits."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from fedopt.engine.local import usable_cores
from fedopt.errors import ConfigError


def _line(key: str, value: object) -> None:
    print(f"{key:<22} {value}")


def doctor(config_path: str | None, overrides: list[str], address: str | None) -> int:
    """Print the environment and, given an experiment, the Ray plan and its feasibility."""
    import fedopt

    _line("fedopt", fedopt.__version__)
    _line("torch", f"{torch.__version__} (threads {torch.get_num_threads()})")
    _line("usable cores", usable_cores())
    _line("cuda available", torch.cuda.is_available())
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            _line(f"gpu {i}", f"{p.name}, {p.total_memory / 2**30:.1f} GiB")
    _line("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES"))
    _line("RAY_AUTH_MODE", os.environ.get("RAY_AUTH_MODE"))
    _line("RAY_AUTH_TOKEN", "set" if os.environ.get("RAY_AUTH_TOKEN") else "not set")
    try:
        import ray
    except ImportError:
        _line("ray", "not installed (the local engine does not need it)")
        return 0
    _line("ray", ray.__version__)
    plan = None
    if config_path:
        from fedopt.config import apply_overrides, read_yaml, validate
        from fedopt.engine.compile import compile_plan

        cfg = validate(apply_overrides(read_yaml(config_path), overrides))
        plan = compile_plan(cfg, base_dir=Path(config_path).resolve().parent)
        address = address or cfg.engine.address
    from fedopt.engine.ray_engine.engine import connect, plan_resources

    started = connect(address)
    try:
        resources = ray.cluster_resources()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        _line(
            "ray cluster",
            f"{len(nodes)} node(s), {resources.get('CPU', 0):g} CPU, "
            f"{resources.get('GPU', 0):g} GPU, "
            f"{resources.get('memory', 0) / 2**30:.1f} GiB memory",
        )
        if plan is not None:
            from fedopt.engine.ray_engine.placement import cut_edges, shard_nodes

            try:
                actors, cpu, gpu = plan_resources(plan, resources)
                shards = shard_nodes(plan, actors)
            except ConfigError as exc:
                _line("plan", f"DOES NOT FIT: {exc}")
                return 1
            sizes = [len(s) for s in shards]
            _line(
                "plan",
                f"{len(shards)} actors x ({cpu:g} CPU, {gpu:g} GPU); nodes per "
                f"actor {min(sizes)}..{max(sizes)}; edges cut {cut_edges(plan, shards)}: fits",
            )
    finally:
        if started:
            ray.shutdown()
    return 0

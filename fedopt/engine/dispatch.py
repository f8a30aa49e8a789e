"""Which runner runs a plan: one table keyed by (schedule, engine kind).

``RUNNERS[(schedule, engine)]`` is the runner of an algorithm's schedule (``rounds`` or
``events``, :attr:`~fedopt.algorithms.base.Algorithm.schedule`) on ``engine.kind``
(``local`` or ``ray``). Every runner takes the same arguments (the plan, the record and
round callbacks, ``meter_enabled`` and the checkpoint hooks ``resume``,
``on_checkpoint``, ``on_restore``) and returns an
:class:`~fedopt.engine.output.EngineOutput`. Runners import their engine when called,
so the local runners never import Ray.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from fedopt.engine.output import EngineOutput
from fedopt.engine.plan import Plan

Runner = Callable[..., EngineOutput]


def _rounds_local(plan: Plan, **kwargs: Any) -> EngineOutput:
    from fedopt.engine.local import run_local

    result, worker = run_local(plan, **kwargs)
    device = str(worker.ctx.device)
    return EngineOutput(
        result=result,
        edge_messages=worker.meter.edge_messages.numpy(),
        edge_bytes=worker.meter.edge_bytes.numpy(),
        device=device,
        threads=torch.get_num_threads(),
        workers=[{"rank": 0, "num_nodes": plan.topology.n, "device": device}],
    )


def _rounds_ray(plan: Plan, **kwargs: Any) -> EngineOutput:
    from fedopt.engine.ray_engine.engine import run_ray

    return run_ray(plan, **kwargs)


def _events_local(plan: Plan, **kwargs: Any) -> EngineOutput:
    from fedopt.engine.events_local import run_local_events

    return run_local_events(plan, **kwargs)


def _events_ray(plan: Plan, **kwargs: Any) -> EngineOutput:
    from fedopt.engine.ray_engine.events import run_ray_events

    return run_ray_events(plan, **kwargs)


RUNNERS: dict[tuple[str, str], Runner] = {
    ("rounds", "local"): _rounds_local,
    ("rounds", "ray"): _rounds_ray,
    ("events", "local"): _events_local,
    ("events", "ray"): _events_ray,
}
"""``(schedule, engine.kind) -> runner``: the one dispatch of :func:`fedopt.run.execute`."""


def runner_for(plan: Plan) -> Runner:
    """The runner of ``plan``'s algorithm schedule on its ``engine.kind``."""
    from fedopt.algorithms import ALGORITHMS

    schedule = ALGORITHMS.get(plan.config.algorithm.name).schedule
    key = (schedule, plan.config.engine.kind)
    if key not in RUNNERS:  # a plug-in algorithm with a schedule no engine runs
        raise ValueError(f"no runner for schedule {schedule!r} on engine {key[1]!r}")
    return RUNNERS[key]

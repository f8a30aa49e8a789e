"""A Ray actor starts without torch's "non-writable NumPy array" warning."""

import pickle

import numpy as np
import pytest
from helpers import experiment

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.engine.ray_engine.placement import shard_nodes

ray = pytest.importorskip("ray")


def test_worker_actor_takes_ray_arrays_without_warning(ray_session) -> None:
    # defined here, not at module level, so that Ray ships them by value (the workers
    # cannot import test modules)
    @ray.remote(num_cpus=0)
    class Probe:
        def start(self, plugins, plan_bytes, shards):
            """Is the shard read-only here, and what does WorkerActor's start warn?"""
            import warnings

            from fedopt.engine.ray_engine.actor import WorkerActor

            read_only = not shards[0].flags.writeable
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                WorkerActor(plugins, plan_bytes, 0, shards, 1, 0.0)
            return read_only, [str(w.message) for w in caught]

    @ray.remote(num_cpus=0, max_calls=1)
    def bare_from_numpy(shards):
        """The control: ``torch.from_numpy`` of the same kind of Ray array warns."""
        import warnings

        import torch

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.from_numpy(shards[0])
        return [str(w.message) for w in caught]

    raw = experiment(topology={"name": "ring", "n": 6}, engine={"kind": "ray", "threads": 1})
    plan = compile_plan(validate(raw))
    shards = shard_nodes(plan, 2)
    probe = Probe.remote()
    read_only, caught = ray.get(
        probe.start.remote(plan.plugin_sources, pickle.dumps(plan), shards), timeout=120
    )
    ray.kill(probe)
    assert read_only, "Ray no longer hands actors read-only arrays: this test checks nothing"
    assert not [m for m in caught if "not writable" in m], caught
    control = ray.get(bare_from_numpy.remote([np.arange(3, dtype=np.int64)]), timeout=120)
    assert any("not writable" in m for m in control), control

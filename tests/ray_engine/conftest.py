import logging

import pytest

ray = pytest.importorskip("ray")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the Ray-engine tests (4 logical CPUs on any machine)."""
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()

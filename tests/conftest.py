import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(1)

PLUGIN_PREFIX = "fedopt_plugin_"  # fedopt.plugins.module_name


def _registries() -> list:
    from fedopt.algorithms.base import ALGORITHMS
    from fedopt.models.zoo import MODELS
    from fedopt.problems.registry import PROBLEMS
    from fedopt.robust.aggregators import AGGREGATORS
    from fedopt.robust.attacks import ATTACKS
    from fedopt.topology.builtins import TOPOLOGIES

    return [ALGORITHMS, MODELS, PROBLEMS, AGGREGATORS, ATTACKS, TOPOLOGIES]


@pytest.fixture(autouse=True)
def forget_plugins():
    """Drop what a test's plug-in files registered, so later tests see the built-ins only
    (a plug-in problem would otherwise appear in every capability message after it)."""
    yield
    for name in [m for m in sys.modules if m.startswith(PLUGIN_PREFIX)]:
        del sys.modules[name]
    for registry in _registries():
        for key, obj in list(registry._entries.items()):
            if getattr(obj, "__module__", "").startswith(PLUGIN_PREFIX):
                del registry._entries[key]

"""One event driver for both engines, no import cycle, one dispatch table."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import experiment

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.engine.dispatch import RUNNERS, runner_for
from fedopt.run import execute

ROOT = Path(__file__).resolve().parents[2]
MODULES = [
    "fedopt.engine.events_driver",
    "fedopt.engine.events_local",
    "fedopt.engine.events_worker",
    "fedopt.engine.ray_engine.events",
    "fedopt.engine.dispatch",
]


def _imports(module: str) -> set[str]:
    """Every fedopt module ``module`` imports (at the top or inside functions)."""
    path = ROOT / (module.replace(".", "/") + ".py")
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("fedopt") or m == "ray"}


@pytest.mark.parametrize("module", MODULES)
def test_each_event_module_imports_alone_in_a_fresh_interpreter(module: str) -> None:
    code = f"import sys, {module}; print('ray' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "False"  # no module of the event engine imports Ray eagerly


def test_no_import_cycle_between_the_runners() -> None:
    local, remote = _imports(MODULES[1]), _imports(MODULES[3])
    assert "fedopt.engine.events_driver" in local and "fedopt.engine.events_driver" in remote
    assert not any(m.startswith("fedopt.engine.ray_engine") or m == "ray" for m in local)
    assert "fedopt.engine.events_local" not in remote
    assert not any(m.startswith("fedopt.engine.ray_engine") for m in _imports(MODULES[0]))


def test_dispatch_table_has_one_runner_per_schedule_and_engine() -> None:
    assert set(RUNNERS) == {(s, e) for s in ("rounds", "events") for e in ("local", "ray")}
    assert len({id(r) for r in RUNNERS.values()}) == 4
    dadao = experiment(
        algorithm={"name": "dadao"},
        problem={"name": "quadratic", "dim": 3, "dtype": "float64"},
        stop={"events": 300},
    )
    assert runner_for(compile_plan(validate(dadao))) is RUNNERS[("events", "local")]
    assert runner_for(compile_plan(validate(experiment()))) is RUNNERS[("rounds", "local")]
    ray = experiment(engine={"kind": "ray", "threads": 1})
    assert runner_for(compile_plan(validate(ray))) is RUNNERS[("rounds", "ray")]
    dadao["engine"] = {"kind": "ray", "threads": 1}
    assert runner_for(compile_plan(validate(dadao))) is RUNNERS[("events", "ray")]


def test_device_auto_runs_events_on_the_cpu_and_says_so() -> None:
    raw = experiment(
        algorithm={"name": "dadao"},
        problem={"name": "quadratic", "dim": 3, "dtype": "float64"},
        stop={"events": 300},
        engine={"threads": 1, "device": "auto", "event_block": 100},
    )
    out = execute(compile_plan(validate(raw)))
    assert out.device == "cpu" and out.workers[0]["device"] == "cpu"
    assert out.result.records[-1]["events_total"] == 300

"""The DADAO experiment grid (experiments/dadao/grid.sweep.yaml): its cells and its exclusions.

Every cell of the sweep validates and compiles (the sweep checks that before anything
runs); the cells the sweep excludes are exactly those fedopt refuses: MSDA and
continuized need conjugate gradients (not on logistic) and a fixed graph (not on the
time-varying RGG sequence). A two-cell slice runs and tables.py reads it.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from fedopt.config import load_experiment, validate
from fedopt.engine.compile import compile_plan
from fedopt.errors import ConfigError
from fedopt.run import run_experiment
from fedopt.sweep import load_sweep, run_sweep
from fedopt.sweep.expand import expand, prepare

GRID_DIR = Path(__file__).resolve().parents[1] / "experiments" / "dadao"


def _tables():
    spec = importlib.util.spec_from_file_location("dadao_tables", GRID_DIR / "tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


tables = _tables()


@pytest.mark.parametrize("name", ["grid.sweep.yaml", "grid_quick.sweep.yaml"])
def test_every_cell_compiles_and_the_excluded_ones_are_refused(name: str) -> None:
    spec = load_sweep(GRID_DIR / name)
    cells = expand(spec)
    preps = prepare(spec, cells)  # validates and compiles every cell
    graphs = 7 if name == "grid.sweep.yaml" else 2
    assert len(preps) == 2 * graphs * 6 - graphs * 2 - 2  # logistic and lsq_rgg: no MSDA/cont.
    methods = {m.key for m in tables.METHODS}
    assert {c.columns[1][1] for c in cells} == methods
    kept = {c.name for c in cells}
    for cell in expand(replace(spec, exclude=())):
        if cell.name in kept:
            continue
        problem, method = cell.name.split("_")[0], cell.name.split("/")[1]
        assert method in ("msda", "continuized")
        assert problem == "logreg" or cell.name.startswith("lsq_rgg")
        with pytest.raises(ConfigError, match=r"conjugate|time-varying"):
            compile_plan(validate(cell.raw, cell.base_dir), base_dir=cell.base_dir)


def test_cells_match_the_fedopt_run_overrides() -> None:
    cells = {c.name: c for c in expand(load_sweep(GRID_DIR / "grid.sweep.yaml"))}
    c = cells["lsq_path/adom_plus_mc"]
    ref = load_experiment(
        GRID_DIR / "lsq_path.yaml",
        [
            "algorithm.name=adom_plus",
            "algorithm.multi_consensus=true",
            "stop.rounds=600",
            "stop.sim_time_s=null",
        ],
    )
    assert validate(c.raw, c.base_dir) == ref


def test_a_slice_runs_and_tables_reads_it(tmp_path: Path) -> None:
    spec = load_sweep(GRID_DIR / "grid_quick.sweep.yaml")
    out = tmp_path / "sw"
    run_sweep(spec, out, jobs=1, progress=False, only=["lsq_cycle/msda", "lsq_cycle/adom_plus"])
    assert tables.main([str(out)]) == 0
    results = json.loads((out / "dadao_results.json").read_text())["results"]
    cells = results["lsq_cycle"]["cells"]
    # the README's cycle row: MSDA 304 / 1,520 / 0.22 MB (19 rounds)
    assert cells["msda"]["reached"] and cells["msda"]["gradients"] == 304
    assert cells["msda"]["communications"] == 1520 and cells["msda"]["time"] == 19
    assert not cells["adom_plus"]["reached"] and cells["dadao"]["na"] == "n/a (not run yet)"
    assert (out / "lsq_cycle" / "axes.png").is_file()


def test_async_gossip_runs_on_the_time_varying_sequence(tmp_path: Path) -> None:
    path = GRID_DIR / "lsq_rgg.yaml"
    config = load_experiment(
        path, ["algorithm.name=async_gossip_sgd", "stop.sim_time_s=20", "stop.rounds=null"]
    )
    run_experiment(config, base_dir=path.parent, out_dir=tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert records[-1]["relative_sq_distance"] < 0.5 * records[0]["relative_sq_distance"]
    assert records[-1]["messages_total"] == 2 * records[-1]["communications_total"] > 0

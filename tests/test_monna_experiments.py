"""experiments/monna and experiments/faults: every cell compiles, and tiny slices run.

The MoNNA grid (grid.sweep.yaml: methods x attacks at alpha 1 and 5, and the attack-free
D-SGD reference) and the fault examples (faults/faults.sweep.yaml: one named cell per YAML)
must validate and compile cell by cell; a 2-round slice of the MoNNA grid (D-SGD +
MoNNA under ALIE) must run end to end, and tables.py must write its table and figures.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

from fedopt.config import validate
from fedopt.sweep import load_sweep, run_sweep
from fedopt.sweep.expand import expand, prepare

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


monna = _load(EXPERIMENTS / "monna" / "tables.py", "monna_tables")


def test_monna_cells_compile() -> None:
    spec = load_sweep(EXPERIMENTS / "monna" / "grid.sweep.yaml")
    preps = prepare(spec, expand(spec))
    assert len(preps) == 99  # (1 + 8 x 4) per (alpha, seed): alpha 1 x 2 seeds, alpha 5 x 1
    by_name = {p.cell.name: p.config for p in preps}
    ref = by_name["alpha=5/none/D-SGD/seed1"]
    assert ref.byzantine is None and ref.algorithm.name == "p2p_mean"
    assert ref.problem.partition.alpha == 5.0 and ref.stop.rounds == 150
    cell = by_name["alpha=1/foe/LEARN/seed2"]
    assert cell.algorithm.name == "learn" and cell.byzantine.attack.name == "foe"
    assert cell.byzantine.count == 5 and cell.seed == 2 and cell.topology.n == 26
    methods = {m.key for m in monna.METHODS} | {monna.REFERENCE.key}
    assert {p.cell.name.split("/")[2] for p in preps} == methods
    assert {p.cell.name.split("/")[1] for p in preps} == {"none", *monna.ATTACKS}


def test_faults_cells_compile_and_pairs_name_cells() -> None:
    spec = load_sweep(EXPERIMENTS / "faults" / "faults.sweep.yaml")
    preps = prepare(spec, expand(spec))
    stems = {
        p.stem
        for p in (EXPERIMENTS / "faults").glob("*.yaml")
        if not p.name.endswith(".sweep.yaml")
    }
    assert {p.cell.name for p in preps} == stems
    for p in preps:
        file = EXPERIMENTS / "faults" / f"{p.cell.name}.yaml"
        from fedopt.config import load_experiment

        assert p.config == load_experiment(file)  # each cell is its file, as is
        assert p.config.engine.threads == 1
    faults = _load(EXPERIMENTS / "faults" / "tables.py", "faults_tables")
    for stem, twin, _, _ in faults.PAIRS:
        assert stem in stems and twin in stems


def test_tiny_grid_runs(tmp_path: Path) -> None:
    spec = load_sweep(EXPERIMENTS / "monna" / "grid.sweep.yaml")
    spec = replace(spec, sets=(*spec.sets, ("stop.rounds", 2), ("eval.every", 1)))
    out = tmp_path / "sw"
    only = ["alpha=1/none/D-SGD/seed1", "alpha=1/alie/MoNNA/seed1"]
    outcome = run_sweep(spec, out, jobs=1, progress=False, only=only)
    assert outcome.counts == {"complete": 2}
    assert monna.main([str(out)]) == 0
    table = (out / "monna_table.md").read_text()
    assert "| MoNNA | — |" in table and "D-SGD (no attack)" in table
    assert (out / "alpha=1" / "alie" / "report.png").is_file()
    assert (out / "heatmap.png").is_file()
    cfg = validate(
        __import__("yaml").safe_load((out / only[1] / "config.yaml").read_text()), out / only[1]
    )
    assert cfg.stop.rounds == 2 and cfg.algorithm.name == "monna"

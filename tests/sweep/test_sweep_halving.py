"""Step-size halving (DIFF2's protocol, diff2.md §4.6): the criterion and the search."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from sweep_helpers import tiny

from fedopt.sweep import parse_sweep, run_sweep
from fedopt.sweep.manifest import MANIFEST
from fedopt.sweep.report import sweep_report
from fedopt.sweep.stability import run_stability, stability


def test_criterion_counts_consecutive_evaluations_above_the_running_minimum() -> None:
    # running minimum 1.0 from the second evaluation; 1.06 > 1.05 x 1.0
    assert stability([2.0, 1.0, 1.06, 1.06, 1.06, 1.06]).stable  # four above: stable
    v = stability([2.0, 1.0, 1.06, 1.06, 1.06, 1.06, 1.06], [0, 10, 20, 30, 40, 50, 60])
    assert not v.stable
    assert v.reason == (
        "above 1.05 x its running minimum (1) at 5 consecutive evaluations (rounds 20-60)"
    )
    # a dip resets the streak; 1.05 x the minimum itself is not above
    assert stability([1.0, 1.1, 1.1, 1.1, 1.1, 1.0, 1.1, 1.1, 1.1, 1.1]).stable
    assert stability([1.0, 1.05, 1.05, 1.05, 1.05, 1.05]).stable
    assert not stability([1.0, 0.5, math.nan]).stable
    assert stability([3.0, 2.0], window=1, tolerance=1.0).stable
    assert not stability([3.0, 2.0, 2.000001], window=1, tolerance=1.0).stable
    # a negative loss: above means loss - m > (tol - 1) |m|
    assert not stability([-2.0, -1.8, -1.8], window=2).stable
    assert stability([-2.0, -1.95, -1.95], window=2).stable


def test_diverged_run_is_unstable() -> None:
    v = run_stability({"stop_reason": "diverged", "diverged": {"round": 7}}, [{"loss": 1.0}])
    assert not v.stable and v.reason == "diverged at round 7"


def test_halving_picks_the_first_stable_step_where_large_steps_diverge(tmp_path: Path) -> None:
    # quadratic with L = 2: plain gradient steps diverge for lr > 2/L = 1
    base = tiny(stop={"rounds": 60}, eval={"every": 2})
    data = {
        "name": "h",
        "experiment": base,
        "grid": {"problem.heterogeneity": [0.5, 1.0]},
        "seeds": 2,
        "halving": {"key": "algorithm.lr", "start": 8.0, "steps": 6},
        "select": {"metric": "min(loss)", "by": []},
    }
    out = tmp_path / "out"
    outcome = run_sweep(parse_sweep(data), out, jobs=1, progress=False)
    searches = outcome.searches
    assert set(searches) == {"heterogeneity=0.5", "heterogeneity=1"}
    for s in searches.values():
        assert s["status"] == "found" and s["chosen"] == 1.0
        assert [t["step"] for t in s["tried"]] == [8.0, 4.0, 2.0, 1.0]
        assert all(not r["stable"] for t in s["tried"][:3] for r in t["runs"].values())
    cells = json.loads((out / MANIFEST).read_text())["cells"]
    assert len(cells) == 2 * 4 * 2  # steps 0.5 and 0.25 were never run
    assert not any("lr=0.5" in n for n in cells)
    # the step 8 runs blew up to inf: kept as diverged run directories
    assert cells["heterogeneity=0.5/lr=8/seed0"]["status"] == "diverged"
    summary = json.loads((out / "heterogeneity=0.5/lr=8/seed0/summary.json").read_text())
    assert summary["stop_reason"] == "diverged"
    # a second run decides from the run directories alone: nothing runs
    again = run_sweep(parse_sweep(data), out, jobs=1, progress=False)
    assert again.skipped == 16 and again.searches == searches
    # selection: only the chosen steps compete (step 8's lower min(loss) does not count)
    sweep_report(out, plots=False)
    rows = list(csv.DictReader((out / "selection.csv").open()))
    means = {}
    for h in ("0.5", "1"):
        runs = [out / f"heterogeneity={h}/lr=1/seed{s}" for s in (0, 1)]
        losses = [min(json.loads(x)["loss"] for x in (r / "metrics.jsonl").open()) for r in runs]
        means[f"heterogeneity={h}/lr=1"] = sum(losses) / 2
    best = min(means, key=means.get)
    assert rows[0]["selected"] == best and rows[0]["candidates"] == "2"
    assert float(rows[0]["mean"]) == pytest.approx(means[best])
    assert (
        "| heterogeneity=0.5 | algorithm.lr | 1 | 8: unstable (" in (out / "halving.md").read_text()
    )


def test_decide_first_runs_other_seeds_only_at_the_chosen_step(tmp_path: Path) -> None:
    data = {
        "name": "h1",
        "experiment": tiny(stop={"rounds": 40}, eval={"every": 2}),
        "seeds": 3,
        "halving": {"key": "algorithm.lr", "start": 4.0, "steps": 4, "decide": "first"},
    }
    out = tmp_path / "out"
    outcome = run_sweep(parse_sweep(data), out, jobs=1, progress=False)
    assert outcome.searches["run"]["chosen"] == 1.0
    cells = json.loads((out / MANIFEST).read_text())["cells"]
    assert sorted(cells) == ["lr=1/seed0", "lr=1/seed1", "lr=1/seed2", "lr=2/seed0", "lr=4/seed0"]


def test_no_stable_step_is_reported_exhausted(tmp_path: Path) -> None:
    data = {
        "name": "h2",
        "experiment": tiny(stop={"rounds": 30}, eval={"every": 2}),
        "halving": {"key": "algorithm.lr", "start": 16.0, "steps": 2},
    }
    outcome = run_sweep(parse_sweep(data), tmp_path / "out", jobs=1, progress=False)
    assert outcome.searches["run"]["status"] == "exhausted"
    assert outcome.searches["run"]["chosen"] is None

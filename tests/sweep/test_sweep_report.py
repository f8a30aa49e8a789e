"""sweep-report: the table's numbers are the mean and sample std of the cells'
summary.json values; selection, metrics, CSV and plots."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import pytest
from sweep_helpers import tiny

from fedopt.cli import main
from fedopt.errors import ConfigError
from fedopt.sweep import parse_sweep, run_sweep
from fedopt.sweep.metrics import evaluate
from fedopt.sweep.report import sweep_report


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rep") / "out"
    data = {
        "name": "rep",
        "experiment": tiny(),
        "grid": {"algorithm.lr": [0.05, 0.2], "problem.heterogeneity": [0.5, 2.0]},
        "seeds": 3,
        "select": {"metric": "final_loss", "by": ["heterogeneity"]},
        "report": {"metrics": ["final_loss", "min(loss)", "bytes_total"]},
    }
    run_sweep(parse_sweep(data), out, jobs=1, progress=False)
    return out


def summary(out: Path, name: str) -> dict:
    return json.loads((out / name / "summary.json").read_text())


def test_table_equals_a_hand_computation(swept: Path) -> None:
    result = sweep_report(swept, plots=False)
    rows = list(csv.DictReader((swept / "table.csv").open()))
    assert len(rows) == 4
    row = next(r for r in rows if r["lr"] == "0.2" and r["heterogeneity"] == "2")
    losses = [summary(swept, f"lr=0.2/heterogeneity=2/seed{s}")["final_loss"] for s in range(3)]
    mean = sum(losses) / 3
    std = math.sqrt(sum((x - mean) ** 2 for x in losses) / 2)  # sample std, n - 1
    assert float(row["final_loss mean"]) == pytest.approx(mean, rel=1e-12)
    assert float(row["final_loss std"]) == pytest.approx(std, rel=1e-12)
    assert row["final_loss n"] == "3" and row["seeds"] == "3"
    assert std > 0  # the seeds differ
    assert f"| 0.2 | 2 | 3/3 | {mean:.4g} ± {std:.4g} |" in result["markdown"]
    # min(loss): the lowest record over training, per seed, then averaged
    recs = [
        [
            json.loads(x)["loss"]
            for x in (swept / f"lr=0.2/heterogeneity=2/seed{s}" / "metrics.jsonl")
            .read_text()
            .splitlines()
        ]
        for s in range(3)
    ]
    assert float(row["min(loss) mean"]) == pytest.approx(statistics.fmean(min(r) for r in recs))


def test_selection_picks_the_lowest_mean_per_group(swept: Path) -> None:
    sweep_report(swept, plots=False)
    rows = list(csv.DictReader((swept / "selection.csv").open()))
    assert [r["heterogeneity"] for r in rows] == ["0.5", "2"]
    for r in rows:
        h = r["heterogeneity"]
        means = {
            lr: statistics.fmean(
                summary(swept, f"lr={lr}/heterogeneity={h}/seed{s}")["final_loss"] for s in range(3)
            )
            for lr in ("0.05", "0.2")
        }
        best = min(means, key=means.get)
        assert r["selected"] == f"lr={best}/heterogeneity={h}"
        assert float(r["mean"]) == pytest.approx(means[best])


def test_report_cli_on_a_sweep_dir_writes_plots_and_refuses_foreign_files(
    swept: Path, capsys
) -> None:
    assert main(["report", str(swept)]) == 0
    out = capsys.readouterr().out
    assert "**rep**: 12 cells (12 complete)" in out and "**Selection**" in out
    for name in (
        "table.csv",
        "table.md",
        "selection.md",
        "curves.png",
        "metrics.png",
        "selection.png",
        ".fedopt-report",
    ):
        assert (swept / name).is_file(), name
    assert main(["sweep-report", str(swept), "--metrics", "max(loss)", "--no-plots"]) == 0
    assert "max(loss)" in (swept / "table.md").read_text()
    other = swept.parent / "mine"
    other.mkdir()
    (other / "table.md").write_text("my notes")
    with pytest.raises(ConfigError, match="exists and was not written by a report"):
        sweep_report(swept, other, plots=False)
    assert (other / "table.md").read_text() == "my notes"
    with pytest.raises(ConfigError, match=r"--by 'lrr': not an axis .* Did you mean 'lr'\?"):
        sweep_report(swept, by="lrr", plots=False)


def test_metric_expressions() -> None:
    summary_ = {"final_loss": 0.5, "by_kind": {"model": {"messages": 40}}, "x": None}
    recs = [
        {"round": 0, "loss": 4.0, "gradients_total": 0, "messages_total": 0},
        {"round": 1, "loss": 1.0, "gradients_total": 16, "messages_total": 32},
        {"round": 2, "loss": None, "gradients_total": 32, "messages_total": 64},
        {"round": 3, "loss": 2.0, "gradients_total": 48, "messages_total": 96},
    ]
    assert evaluate("final_loss", summary_, None) == 0.5
    assert evaluate("by_kind.model.messages", summary_, None) == 40
    assert evaluate("x", summary_, None) is None and evaluate("nope", summary_, None) is None
    assert evaluate("min(loss)", summary_, recs) == 1.0
    assert evaluate("max(loss)", summary_, recs) == 4.0
    assert evaluate("mean(loss)", summary_, recs) == pytest.approx(7 / 3)
    assert evaluate("last(loss)", summary_, recs) == 2.0
    assert evaluate("gradients_total@loss<=1.5", summary_, recs) == 16
    assert evaluate("communications_total@loss<=1.5", summary_, recs) == 16  # messages / 2
    assert evaluate("round@loss>=3", summary_, recs) == 0
    assert evaluate("round@loss<=0.1", summary_, recs) is None

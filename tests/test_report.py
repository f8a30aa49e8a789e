"""``fedopt report``: labels, layout and loss axis, on hand-written run directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedopt.cli import main
from fedopt.results.report import Run, loss_scale, run_labels


def write_run(path: Path, losses: list[float], **summary: object) -> Path:
    """A minimal run directory: one record per loss, every 10 rounds."""
    path.mkdir(parents=True)
    records = [
        {"round": 10 * i, "sim_time_s": 0.1 * i, "bytes_total": 23040 * i, "loss": loss}
        for i, loss in enumerate(losses)
    ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    info = {"algorithm": "dsgd", "rounds": records[-1]["round"], "final_loss": losses[-1]}
    (path / "summary.json").write_text(json.dumps({**info, **summary}))
    return path


def fake(losses: list[float]) -> Run:
    return Run(Path("x"), "x", [{"round": i, "loss": v} for i, v in enumerate(losses)], {})


def test_labels_tell_same_named_folders_apart() -> None:
    assert run_labels([Path("/r/x/a"), Path("/r/y/b")]) == ["a", "b"]
    assert run_labels([Path("/p/x/run"), Path("/q/x/run"), Path("/r/run")]) == [
        "p/x/run",
        "q/x/run",
        "r/run",
    ]
    assert run_labels([Path("/r/a"), Path("/r/a")]) == ["a", "a #2"]


def test_loss_axis_is_log_only_where_honest() -> None:
    assert loss_scale([fake([1.0, 0.1, 1e-4])]) == ("log", None)
    # an optimum far from zero: the gap to the lowest loss of any run
    assert loss_scale([fake([10.3, 6.4, 6.35]), fake([10.3, 6.34])]) == ("gap", 6.34)
    assert loss_scale([fake([-2.0, -3.0])]) == ("gap", -3.0)
    assert loss_scale([fake([2.0, 2.0])]) == ("linear", None)


def test_report_of_two_same_named_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import matplotlib.image

    a = write_run(tmp_path / "lr0.2" / "quickstart", [10.3, 6.35, 6.336, 6.334])
    b = write_run(tmp_path / "lr0.05" / "quickstart", [10.3, 7.4, 6.5, 6.336])
    out = tmp_path / "rep"
    assert main(["report", str(a), str(b), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    table = captured.out.splitlines()
    assert table[0].split()[:2] == ["run", "algorithm"]
    assert [row.split()[0] for row in table[1:3]] == ["lr0.2/quickstart", "lr0.05/quickstart"]
    assert captured.err == ""  # no matplotlib warnings
    image = matplotlib.image.imread(out / "report.png")
    height, width = image.shape[:2]
    assert width == 2 * 6 * 110  # two panels a row, not one long strip
    assert height == 2 * 3.8 * 110  # three loss panels: two rows


def test_private_runs_get_loss_against_epsilon_spent() -> None:
    from fedopt.results.report import EPSILON_AXIS, Run, _panels, _x_value

    rec = {
        "round": 5,
        "loss": 0.1,
        "per_sample_gradients_total": 100,
        "gradients_total": 0,
        "ledgers": {"privacy": {"epsilon_rdp": 1.25}},
    }
    panels = _panels([Run(Path("r"), "r", [rec], {})])
    assert ("loss", EPSILON_AXIS, "epsilon spent (RDP accountant)") in panels
    assert any(x == "per_sample_gradients_total" for _, x, _ in panels)
    assert not any(x == "gradients_total" for _, x, _ in panels)  # no gradients counted
    assert _x_value(rec, EPSILON_AXIS) == 1.25


def test_zeroth_order_runs_get_loss_against_queries() -> None:
    from fedopt.results.report import _panels, summary_table

    rec = {"round": 5, "loss": 0.1, "loss_gap": 0.02, "gradients_total": 0, "queries_total": 420}
    panels = _panels([Run(Path("r"), "r", [rec], {})])
    assert ("loss", "queries_total", "function queries") in panels
    assert ("loss_gap", "queries_total", "function queries") in panels
    assert ("loss_gap", "round", "F(x) - F* (closed form)") in panels
    assert not any(x == "gradients_total" for _, x, _ in panels)  # no gradients counted
    without = _panels([Run(Path("r"), "r", [{"round": 5, "loss": 0.1}], {})])
    assert not any(x == "queries_total" for _, x, _ in without)
    table = summary_table([("r", {"algorithm": "fedzo", "queries_total": 420})])
    assert table.splitlines()[0].split() == ["run", "algorithm", "queries_total"]

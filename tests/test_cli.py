"""The fedopt command line end to end (in-process), and the run directory contract."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedopt.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "experiments" / "quickstart.yaml")


def test_run_writes_the_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run1"
    assert main(["run", QUICK, "--set", "stop.rounds=20", "--out", str(out), "--quiet"]) == 0
    assert f"results: {out}" in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert {
        "config.yaml",
        "env.json",
        "metrics.jsonl",
        "summary.json",
        "comm_nodes.csv",
        "comm_edges.csv",
        "final_model.npy",
        "final_params.npy",
        "final_ids.npy",
    } <= names
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "rounds",
        "sim_time_s",
        "wall_time_s",
        "messages_total",
        "bytes_total",
        "final_loss",
        "final_distance_to_opt",
    ):
        assert key in summary
    assert summary["rounds"] == 20
    assert summary["messages_total"] == 2 * 16 * 20
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [0, 10, 20]
    edges = np.loadtxt(out / "comm_edges.csv", delimiter=",", skiprows=1, dtype=np.int64)
    assert edges[:, 3].sum() == summary["bytes_total"]
    env = json.loads((out / "env.json").read_text())
    assert env["seed"] == 0 and env["versions"]["torch"]


def test_existing_directory_is_refused_unless_overwrite(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    args = ["run", QUICK, "--set", "stop.rounds=2", "--out", str(out), "--quiet"]
    assert main(args) == 0
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_failed_run_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    import fedopt.engine.local as local_engine

    def boom(*a, **k):
        raise RuntimeError("worker died")

    monkeypatch.setattr(local_engine, "run_local", boom)  # what RUNNERS calls for rounds
    args = ["run", QUICK, "--out", str(tmp_path / "r"), "--quiet"]
    assert main(args) == 3  # a bug, not a user mistake: "internal error", exit 3
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError):  # --debug lets the traceback through
        main(["--debug", *args])
    assert list(tmp_path.iterdir()) == []


def test_set_overrides_any_field(tmp_path: Path) -> None:
    out = tmp_path / "r"
    main(
        [
            "run",
            QUICK,
            "--set",
            "topology.n=6",
            "--set",
            "stop.rounds=3",
            "--set",
            "algorithm.lr=0.05",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    cfg = (out / "config.yaml").read_text()
    assert "n: 6" in cfg and "lr: 0.05" in cfg


def test_validate_list_topology_report(tmp_path: Path, capsys) -> None:
    assert main(["validate", QUICK]) == 0
    assert "ok: quickstart" in capsys.readouterr().out
    assert main(["validate", QUICK, "--set", "algorithm.lr=-1"]) == 2
    assert "algorithm.lr" in capsys.readouterr().err
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    for name in ("dsgd", "fedavg", "quadratic", "logistic", "digits_mlp", "ring", "torus"):
        assert name in listed
    png = tmp_path / "g.png"
    assert main(["topology", "ring", "--n", "8", "--draw", str(png)]) == 0
    text = capsys.readouterr().out
    assert "spectral_gap" in text and png.stat().st_size > 0
    a, b = tmp_path / "a", tmp_path / "b"
    main(["run", QUICK, "--set", "stop.rounds=5", "--out", str(a), "--quiet"])
    main(
        [
            "run",
            QUICK,
            "--set",
            "stop.rounds=5",
            "--set",
            "algorithm.lr=0.05",
            "--out",
            str(b),
            "--quiet",
        ]
    )
    capsys.readouterr()
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "rep")]) == 0
    table = capsys.readouterr().out
    assert "final_loss" in table and (tmp_path / "rep" / "report.png").stat().st_size > 0


def test_import_fedopt_does_not_import_ray() -> None:
    code = (
        "import sys, fedopt, fedopt.run, fedopt.cli, fedopt.engine.local; "
        "assert 'ray' not in sys.modules, 'ray imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_console_script_help() -> None:
    out = subprocess.run(["fedopt", "--help"], capture_output=True, text=True, check=True)
    assert "run" in out.stdout and "bench" in out.stdout


def test_bench_dadao_prints_one_json_line() -> None:
    import contextlib
    import io

    from fedopt.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["bench", "dadao", "--nodes", "12", "--dim", "3", "--events", "3000"]) == 0
    (line,) = buf.getvalue().strip().splitlines()
    rec = json.loads(line)
    assert rec["events"] >= 3000 and rec["events_per_s"] > 0
    assert rec["events"] == rec["gradients_total"] + rec["communications_total"]
    assert rec["messages_total"] == 2 * rec["communications_total"]
    assert rec["final_relative_error"] < 0.5


def test_bench_monna_prints_ms_per_round() -> None:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["bench", "monna", "--rounds", "4", "--hidden", "8"]) == 0
    rec = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert rec["rounds"] == 4 and rec["dim"] == 64 * 8 + 8 + 8 * 10 + 10
    assert 0 < rec["ms_per_round"] <= rec["ms_per_round_p90"]


@pytest.mark.parametrize(
    "args, flag, value",
    [
        (["fzoos", "--repeats", "0"], "--repeats", "'0'"),
        (["fzoos", "--clients", "0"], "--clients", "'0'"),
        (["ferret", "--bases", "-3"], "--bases", "'-3'"),
        (["transport", "--messages", "0"], "--messages", "'0'"),
        (["sweep", "--cells", "x"], "--cells", "'x'"),
        (["fzoos", "--history", "1.5"], "--history", "'1.5'"),
    ],
)
def test_bench_refuses_a_count_below_one_naming_the_flag(capsys, args, flag, value) -> None:
    # 0 used to mean "the default" (--clients, --dim) or crash (--repeats, --bases)
    with pytest.raises(SystemExit) as exit_:
        main(["bench", *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: must be an integer >= 1, got {value}" in err
    assert "Traceback" not in err and "internal error" not in err

"""`fedopt run --out/--overwrite` never destroys what fedopt did not write (issue 10).

Each probe runs the command line as a user would and checks what they see (exit code,
the message naming the path) and what is left on disk (their files, no hidden
``.partial-``/``.old-`` folders).
"""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import pytest
import yaml

from fedopt.cli import main
from fedopt.results.rundir import MARKER, RunDirectory, read_marker

CONFIG = {
    "name": "safety",
    "seed": 0,
    "topology": {"name": "ring", "n": 4},
    "algorithm": {"name": "dsgd", "lr": 0.1},
    "problem": {"name": "quadratic", "dim": 3},
    "stop": {"rounds": 3},
    "engine": {"threads": 1},
}


def write_config(folder: Path, **changes: object) -> Path:
    """Write the tiny experiment into ``folder/exp.yaml`` (sections replaced by ``changes``)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, **changes}))
    return path


def run_cli(config: Path, out: Path | str, *extra: str) -> int:
    return main(["run", str(config), "--out", str(out), "--quiet", *extra])


def hidden_leftovers(folder: Path) -> list[str]:
    """``.NAME.partial-*`` and ``.NAME.old-*`` folders anywhere under ``folder``."""
    return sorted(str(p) for p in folder.rglob(".*") if ".partial-" in p.name or ".old-" in p.name)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_out_at_the_folder_holding_the_config_is_refused(tmp_path: Path, capsys) -> None:
    exp = tmp_path / "exp"
    config = write_config(exp)
    (exp / "notes.txt").write_text("my notes")
    before = snapshot(tmp_path)
    assert run_cli(config, exp, "--overwrite") == 2
    err = capsys.readouterr().err
    assert str(exp) in err and "experiment file's folder" in err and "--out" in err
    assert snapshot(tmp_path) == before and not hidden_leftovers(tmp_path)


def test_rerunning_a_run_into_itself_is_refused(tmp_path: Path, capsys) -> None:
    """A previous run (with the marker) holding the config being run is not replaced."""
    run = tmp_path / "run"
    assert run_cli(write_config(tmp_path / "src"), run) == 0
    before = snapshot(run)
    assert run_cli(run / "config.yaml", run, "--overwrite") == 2
    assert "experiment file's folder" in capsys.readouterr().err
    assert snapshot(run) == before and not hidden_leftovers(tmp_path)


@pytest.mark.parametrize("spelling", [".", "absolute"])
def test_out_at_the_working_directory_is_refused(
    tmp_path: Path, monkeypatch, capsys, spelling: str
) -> None:
    work = tmp_path / "work"
    config = write_config(tmp_path / "src")
    work.mkdir()
    (work / "data.csv").write_text("1,2,3\n")
    (work / MARKER).write_text("{}")  # even a marker does not make the cwd replaceable
    monkeypatch.chdir(work)
    out = "." if spelling == "." else str(work)
    assert run_cli(config, out, "--overwrite") == 2
    assert "the working directory" in capsys.readouterr().err
    assert (work / "data.csv").read_text() == "1,2,3\n" and not hidden_leftovers(tmp_path)


def test_out_at_a_parent_of_the_config_is_refused(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path / "project" / "experiments")
    before = snapshot(tmp_path)
    assert run_cli(config, tmp_path / "project", "--overwrite") == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "project") in err and "contains" in err
    assert snapshot(tmp_path) == before and not hidden_leftovers(tmp_path)


def test_non_empty_folder_without_marker_is_refused(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path / "src")
    out = tmp_path / "results"
    (out / "sub").mkdir(parents=True)
    (out / "thesis.tex").write_text("chapter 1")
    (out / "sub" / "figure.png").write_bytes(b"\x89PNG")
    before = snapshot(out)
    assert run_cli(config, out, "--overwrite") == 2
    err = capsys.readouterr().err
    assert str(out) in err and "not written by fedopt" in err and "thesis.tex" in err
    assert snapshot(out) == before and not hidden_leftovers(tmp_path)


def test_existing_file_and_symlink_are_refused(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path / "src")
    file = tmp_path / "results.txt"
    file.write_text("keep me")
    assert run_cli(config, file, "--overwrite") == 2
    assert "is an existing file" in capsys.readouterr().err
    assert file.read_text() == "keep me"
    real = tmp_path / "real_run"
    assert run_cli(config, real) == 0
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    assert run_cli(config, link, "--overwrite") == 2
    assert "symbolic link" in capsys.readouterr().err
    assert link.is_symlink() and (real / "summary.json").is_file()
    assert not hidden_leftovers(tmp_path)


def test_overwrite_replaces_a_previous_run(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path / "src")
    out = tmp_path / "run"
    assert run_cli(config, out, "--set", "stop.rounds=2") == 0
    assert read_marker(out)["name"] == "safety"
    assert run_cli(config, out) == 2  # no --overwrite
    assert "already exists" in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["rounds"] == 2
    (out / "report.png").write_bytes(b"png")  # `fedopt report` output is fedopt's own
    assert run_cli(config, out, "--overwrite", "--set", "stop.rounds=4") == 0
    assert json.loads((out / "summary.json").read_text())["rounds"] == 4
    assert not (out / "report.png").exists() and not hidden_leftovers(tmp_path)


def test_overwrite_keeps_a_run_holding_user_files(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path / "src")
    out = tmp_path / "run"
    assert run_cli(config, out) == 0
    (out / "my_analysis.ipynb").write_text("{}")
    assert run_cli(config, out, "--overwrite") == 2
    err = capsys.readouterr().err
    assert "my_analysis.ipynb" in err and "did not write" in err
    assert (out / "my_analysis.ipynb").is_file() and (out / "summary.json").is_file()


def test_empty_folder_is_used(tmp_path: Path) -> None:
    config = write_config(tmp_path / "src")
    out = tmp_path / "empty"
    out.mkdir()
    assert run_cli(config, out) == 0
    assert (out / "summary.json").is_file() and not hidden_leftovers(tmp_path)


def test_run_directory_has_ordinary_permissions(tmp_path: Path) -> None:
    config = write_config(tmp_path / "src")
    old = os.umask(0o022)
    try:
        assert run_cli(config, tmp_path / "run") == 0
    finally:
        os.umask(old)
    run = tmp_path / "run"
    assert stat.S_IMODE(run.stat().st_mode) == 0o755  # mkdtemp's 0700 is not kept
    for p in run.rglob("*"):
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o755 if p.is_dir() else 0o644), p


def test_failed_rename_puts_the_previous_run_back(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "run"
    first = RunDirectory(target, overwrite=False, name="x")
    first.write_json("summary.json", {"rounds": 1})
    first.commit()
    before = snapshot(target)
    second = RunDirectory(target, overwrite=True, name="x")
    second.write_json("summary.json", {"rounds": 2})
    real_rename = Path.rename

    def failing(self: Path, dst: Path) -> Path:
        if self == second.tmp:
            raise OSError(28, "No space left on device")
        return real_rename(self, dst)

    monkeypatch.setattr(Path, "rename", failing)
    with pytest.raises(OSError):
        second.commit()
    second.abort()
    assert snapshot(target) == before and not hidden_leftovers(tmp_path)


def test_json_files_are_strict(tmp_path: Path) -> None:
    rundir = RunDirectory(tmp_path / "run", overwrite=False)
    rundir.write_json("summary.json", {"loss": float("nan"), "x": [float("inf"), 1.5]})
    rundir.append_metric({"round": 0, "loss": float("-inf")})
    out = rundir.commit()

    def refuse(token: str) -> None:
        raise AssertionError(f"non-standard JSON constant {token}")

    summary = json.loads((out / "summary.json").read_text(), parse_constant=refuse)
    assert summary == {"loss": None, "x": [None, 1.5]}
    line = (out / "metrics.jsonl").read_text().splitlines()[0]
    assert json.loads(line, parse_constant=refuse) == {"round": 0, "loss": None}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_run_leaves_no_partial_directory(
    tmp_path: Path, monkeypatch, capsys, signum: int
) -> None:
    from fedopt.algorithms.dsgd import DSGD

    config = write_config(tmp_path / "src", stop={"rounds": 50})
    original = DSGD.round

    def signalled(self, state, t):
        if t == 5:
            os.kill(os.getpid(), signum)
        return original(self, state, t)

    monkeypatch.setattr(DSGD, "round", signalled)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    out = tmp_path / "run"
    assert run_cli(config, out) == 128 + signum
    err = capsys.readouterr().err.strip()
    assert err == f"error: interrupted by {signal.Signals(signum).name}"
    assert not out.exists() and not hidden_leftovers(tmp_path)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


SLOW_CLI = """
import sys, time
from fedopt.algorithms.dsgd import DSGD
original = DSGD.round
def slow(self, state, t):
    time.sleep(0.01)
    return original(self, state, t)
DSGD.round = slow
from fedopt.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_keeps_the_checkpoint_and_resume_matches(tmp_path: Path, capsys) -> None:
    """A real SIGTERM to `fedopt run`: exit 143, one line, no partial folder; --resume
    from the checkpoint then ends with the parameters of an uninterrupted run."""
    import subprocess
    import sys
    import time

    from fedopt.run import checkpoint_path

    root = Path(__file__).resolve().parents[1]
    config = write_config(
        tmp_path / "src",
        problem={"name": "logistic", "dim": 4, "samples_per_node": 20, "batch_size": 4},
        stop={"rounds": 400},
        eval={"every": 10},
        output={"checkpoint_every": 20},
    )
    out = tmp_path / "run"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    argv = ["run", str(config), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLI, *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ckpt = checkpoint_path(out)
    deadline = time.monotonic() + 60
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ckpt.exists(), "no checkpoint was written"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert err.strip() == "error: interrupted by SIGTERM"
    assert not out.exists() and not hidden_leftovers(tmp_path)
    assert ckpt.is_file() and not ckpt.with_name(ckpt.name + ".tmp").exists()

    assert run_cli(config, out, "--resume") == 0
    assert run_cli(config, tmp_path / "ref") == 0
    capsys.readouterr()
    resumed = json.loads((out / "summary.json").read_text())
    reference = json.loads((tmp_path / "ref" / "summary.json").read_text())
    assert resumed["params_sha256"] == reference["params_sha256"]
    assert resumed["rounds"] == reference["rounds"] == 400
    assert not ckpt.exists()


def test_signal_guard_outside_the_main_thread_installs_nothing() -> None:
    import threading

    from fedopt.interrupts import SignalGuard

    before = signal.getsignal(signal.SIGTERM)
    seen: list[object] = []

    def body() -> None:
        with SignalGuard():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [before] and signal.getsignal(signal.SIGTERM) == before

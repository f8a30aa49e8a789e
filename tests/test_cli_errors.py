"""No traceback reaches the user: every bad input ends in ``error: ...`` naming the culprit.

Each probe runs the command line in-process and checks what the user sees: exit code 1
or 2 (never 3, the "internal error" of a bug), ``error:`` lines on stderr without a
traceback, and the offending path or field in the message.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedopt.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "experiments" / "quickstart.yaml"
RECORD = '{"round": 0, "loss": 1.0}\n'


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of broken inputs, one per probe."""
    d = tmp_path_factory.mktemp("bad")
    quick = QUICK.read_text()
    (d / "empty.yaml").write_text("")
    (d / "comments.yaml").write_text("# nothing\n")
    (d / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    (d / "folder.yaml").mkdir()
    (d / "list.yaml").write_text("- name: a\n")
    (d / "syntax.yaml").write_text("name: [a,\n")
    (d / "dup.yaml").write_text(quick + "stop: {rounds: 5}\n")
    (d / "dup_edge.edgelist").write_text("0 1\n1 2\n2 0\n0 1\n")
    (d / "loop.edgelist").write_text("0 1\n1 2\n2 0\n1 1\n")
    (d / "binary.edgelist").write_bytes(b"\x00\xff\xfe")
    (d / "graph_dir.edgelist").mkdir()
    (d / "plugin_dir.py").mkdir()
    (d / "binary_plugin.py").write_bytes(b"\xff\xfe\x00")
    (d / "a_file").write_text("x")
    runs = {
        "run_empty": {},
        "run_no_summary": {"metrics.jsonl": RECORD},
        "run_empty_summary": {"summary.json": "", "metrics.jsonl": RECORD},
        "run_garbled_summary": {"summary.json": '{"rounds": 3', "metrics.jsonl": RECORD},
        "run_list_summary": {"summary.json": "[]", "metrics.jsonl": RECORD},
        "run_empty_metrics": {"summary.json": "{}", "metrics.jsonl": ""},
        "run_garbled_metrics": {"summary.json": "{}", "metrics.jsonl": RECORD + "{oops\n"},
    }
    for name, files in runs.items():
        (d / name).mkdir()
        for file, text in files.items():
            (d / name / file).write_text(text)
    return d


def _validate_with(key: str, value: str) -> list[str]:
    return ["validate", str(QUICK), "--set", f"{key}={value}"]


# (id, arguments given the folder of bad inputs, text the message must contain)
PROBES = [
    ("missing file", lambda d: ["validate", str(d / "nope.yaml")], "nope.yaml' does not exist"),
    ("empty file", lambda d: ["validate", str(d / "empty.yaml")], "empty.yaml' is empty"),
    ("only comments", lambda d: ["validate", str(d / "comments.yaml")], "only comments"),
    ("binary file", lambda d: ["validate", str(d / "binary.yaml")], "binary.yaml' is not UTF-8"),
    ("folder as file", lambda d: ["validate", str(d / "folder.yaml")], "folder.yaml' is a folder"),
    ("not a mapping", lambda d: ["validate", str(d / "list.yaml")], "list.yaml: the top level"),
    ("bad syntax", lambda d: ["validate", str(d / "syntax.yaml")], "syntax.yaml: not valid YAML"),
    (
        "duplicate key",
        lambda d: ["validate", str(d / "dup.yaml")],
        "key 'stop' appears twice in one mapping (lines 10 and 12)",
    ),
    (
        "duplicate key in topology",
        lambda d: ["topology", str(d / "dup.yaml")],
        "dup.yaml: key 'stop' appears twice",
    ),
    (
        "duplicate edge",
        lambda d: _validate_with("topology.name", str(d / "dup_edge.edgelist")),
        "dup_edge.edgelist line 4: edge (0, 1) is already given on line 1",
    ),
    (
        "self loop",
        lambda d: _validate_with("topology.name", str(d / "loop.edgelist")),
        "loop.edgelist line 4: edge (1, 1) is a self loop",
    ),
    (
        "binary graph file",
        lambda d: ["topology", str(d / "binary.edgelist")],
        "binary.edgelist' is not UTF-8 text",
    ),
    (
        "folder as graph file",
        lambda d: _validate_with("topology.name", str(d / "graph_dir.edgelist")),
        "graph_dir.edgelist' is a folder",
    ),
    (
        "folder as topology plug-in",
        lambda d: _validate_with("topology.name", f"{d / 'plugin_dir.py'}:make"),
        "plugin_dir.py' is a folder",
    ),
    (
        "folder as plug-in",
        lambda d: _validate_with("plugins", f"[{d / 'plugin_dir.py'}]"),
        "plugin_dir.py' is a folder",
    ),
    (
        "binary plug-in",
        lambda d: _validate_with("plugins", f"[{d / 'binary_plugin.py'}]"),
        "binary_plugin.py' (",
    ),
    (
        "--out in /proc",
        lambda d: ["run", str(QUICK), "--out", "/proc/fedopt-run", "--quiet"],
        "--out '/proc/fedopt-run': cannot write in '/proc'",
    ),
    (
        "--out under a file",
        lambda d: ["run", str(QUICK), "--out", str(d / "a_file" / "run"), "--quiet"],
        "a_file' is a file, so nothing can be created under it",
    ),
    (
        "output.dir under a file",
        lambda d: ["run", str(QUICK), "--set", f"output.dir={d / 'a_file' / 'run'}", "--quiet"],
        "output.dir '",
    ),
    ("report: no folder", lambda d: ["report", str(d / "gone")], "gone' does not exist"),
    ("report: a file", lambda d: ["report", str(d / "a_file")], "a_file' is a file"),
    ("report: empty folder", lambda d: ["report", str(d / "run_empty")], "run_empty'"),
    ("report: no summary", lambda d: ["report", str(d / "run_no_summary")], "no summary.json"),
    (
        "report: empty summary",
        lambda d: ["report", str(d / "run_empty_summary")],
        "run_empty_summary/summary.json' is empty",
    ),
    (
        "report: garbled summary",
        lambda d: ["report", str(d / "run_garbled_summary")],
        "run_garbled_summary/summary.json' is not valid JSON (line 1",
    ),
    (
        "report: summary not an object",
        lambda d: ["report", str(d / "run_list_summary")],
        "summary.json' holds a list",
    ),
    (
        "report: no records",
        lambda d: ["report", str(d / "run_empty_metrics")],
        "run_empty_metrics/metrics.jsonl' has no records",
    ),
    (
        "report: garbled metrics",
        lambda d: ["report", str(d / "run_garbled_metrics")],
        "metrics.jsonl' is not valid JSON (line 2",
    ),
    (
        "report --out is a file",
        lambda d: ["report", str(d / "run_empty_metrics"), "--out", str(d / "a_file")],
        "--out '",
    ),
    (
        "--draw in a missing folder",
        lambda d: ["topology", "ring", "--n", "8", "--draw", str(d / "no" / "g.png")],
        "folder '",
    ),
    (
        "--draw not a png",
        lambda d: ["topology", "ring", "--n", "8", "--draw", str(d / "g.svg")],
        "g.svg': the drawing is a PNG image",
    ),
    (
        "--draw unwritable",
        lambda d: ["topology", "ring", "--n", "8", "--draw", "/proc/g.png"],
        "--draw '/proc/g.png': cannot write in '/proc'",
    ),
    (
        "--actors without ray",
        lambda d: ["run", str(QUICK), "--actors", "2", "--quiet"],
        "--actors 2: only the Ray engine",
    ),
    (
        "--address without ray",
        lambda d: ["validate", str(QUICK), "--address", "auto"],
        "--address auto: only the Ray engine",
    ),
    (
        "more actors than nodes",
        lambda d: ["validate", str(QUICK), "--engine", "ray", "--actors", "99"],
        "engine.actors: 99 actors for n=16 nodes",
    ),
    ("--set without =", lambda d: ["validate", str(QUICK), "--set", "seed"], "--set 'seed'"),
    (
        "--set through a value",
        lambda d: ["validate", str(QUICK), "--set", "seed.x=1"],
        "seed is a value, not a section (it is 0)",
    ),
    (
        "--unset a missing key",
        lambda d: ["validate", str(QUICK), "--unset", "faults.drop"],
        "has no key 'faults'",
    ),
    ("list: missing plug-in", lambda d: ["list", "--plugins", str(d / "no.py")], "no.py"),
]


@pytest.mark.parametrize(("probe", "make_args", "expected"), PROBES, ids=[p[0] for p in PROBES])
def test_bad_input_gets_one_clear_error(probe, make_args, expected, place, capsys) -> None:
    args = make_args(place)
    rc = main(args)
    err = capsys.readouterr().err
    assert rc in (1, 2), (probe, rc, err)
    assert err.startswith("error: "), err
    assert "Traceback" not in err and "internal error" not in err, err
    assert all(line.startswith(("error: ", "  ")) for line in err.splitlines() if line), err
    assert expected in err, err


def test_unreadable_experiment_file(place, capsys, monkeypatch) -> None:
    """A file the user may not read (simulated: this suite may run as root)."""
    path = place / "secret.yaml"
    path.write_text(QUICK.read_text())
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.name == "secret.yaml":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "secret.yaml' cannot be read (Permission denied); check its permissions" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway")
def test_chmod_000_experiment_file(place, capsys) -> None:
    path = place / "locked.yaml"
    path.write_text(QUICK.read_text())
    path.chmod(0)
    try:
        assert main(["validate", str(path)]) == 2
    finally:
        path.chmod(0o644)
    assert "locked.yaml' cannot be read" in capsys.readouterr().err


def test_debug_shows_the_traceback(place) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "fedopt.cli"]
    bad = str(place / "dup.yaml")
    plain = subprocess.run([*cmd, "validate", bad], capture_output=True, text=True, env=env)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    debug = subprocess.run(
        [*cmd, "--debug", "validate", bad], capture_output=True, text=True, env=env
    )
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr and "ConfigError" in debug.stderr
    assert "key 'stop' appears twice" in debug.stderr

"""A run directory re-runs as is from any folder (issue 10, item 6): the plug-ins and
graph files an experiment names are copied into it, and config.yaml refers to the copies."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from fedopt.cli import main
from fedopt.topology.custom import TOPOLOGIES_ENV, find_file

TOPOLOGY_PLUGIN = """
import networkx as nx


def wheel(n, *, seed, spokes=True):
    g = nx.cycle_graph(n - 1)
    g.add_node(n - 1)
    if spokes:
        g.add_edges_from((i, n - 1) for i in range(0, n - 1, 2))
    return g
"""

EXTRA_PLUGIN = "SOMETHING = 1  # a plug-in file that registers nothing\n"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_in(cwd: Path, monkeypatch, *argv: str) -> int:
    monkeypatch.chdir(cwd)
    return main(["run", *argv, "--quiet"])


def params_sha(run: Path) -> str:
    return json.loads((run / "summary.json").read_text())["params_sha256"]


def test_saved_config_reruns_from_another_folder(tmp_path: Path, monkeypatch, capsys) -> None:
    src = tmp_path / "src"
    (src / "lib").mkdir(parents=True)
    (src / "lib" / "wheel.py").write_text(TOPOLOGY_PLUGIN)
    (src / "extra.py").write_text(EXTRA_PLUGIN)
    raw = {
        "name": "wheel",
        "plugins": ["extra.py"],
        "topology": {"name": "lib/wheel.py:wheel", "n": 7},
        "algorithm": {"name": "dsgd", "lr": 0.1},
        "problem": {"name": "least_squares", "dim": 3, "samples_per_node": 10},
        "stop": {"rounds": 4},
        "engine": {"threads": 1},
    }
    (src / "exp.yaml").write_text(yaml.safe_dump(raw))
    assert run_in(src, monkeypatch, "exp.yaml", "--out", str(tmp_path / "first")) == 0
    first = tmp_path / "first"

    saved = yaml.safe_load((first / "config.yaml").read_text())
    assert saved["topology"]["name"] == "inputs/wheel.py:wheel"
    assert saved["plugins"] == ["inputs/extra.py"]
    assert (first / "inputs" / "wheel.py").read_text() == TOPOLOGY_PLUGIN
    inputs = json.loads((first / "env.json").read_text())["inputs"]
    originals = {i["field"]: (i["original"], i["sha256"], i["copy"]) for i in inputs}
    wheel = src / "lib" / "wheel.py"
    assert originals["topology.name"] == (str(wheel.resolve()), sha(wheel), "inputs/wheel.py")
    extra = src / "extra.py"
    assert originals["plugins[0]"] == (str(extra.resolve()), sha(extra), "inputs/extra.py")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (src / "lib" / "wheel.py").unlink()  # the copy alone must do
    config = str(first / "config.yaml")
    assert run_in(elsewhere, monkeypatch, config, "--out", "other") == 0
    assert params_sha(elsewhere / "other") == params_sha(first)
    capsys.readouterr()


def test_graph_file_is_copied(tmp_path: Path, monkeypatch, capsys) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "g.edgelist").write_text("0 1\n1 2\n2 3\n3 0\n0 2 latency_s=0.01\n")
    raw = {
        "name": "g",
        "topology": {"name": "g.edgelist"},
        "algorithm": {"name": "dsgd", "lr": 0.1},
        "problem": {"name": "quadratic", "dim": 3},
        "stop": {"rounds": 3},
        "engine": {"threads": 1},
    }
    (src / "exp.yaml").write_text(yaml.safe_dump(raw))
    assert run_in(src, monkeypatch, "exp.yaml", "--out", str(tmp_path / "first")) == 0
    first = tmp_path / "first"
    saved = yaml.safe_load((first / "config.yaml").read_text())
    assert saved["topology"]["name"] == "inputs/g.edgelist"
    (tmp_path / "other_cwd").mkdir()
    argv = [str(first / "config.yaml"), "--out", str(tmp_path / "second")]
    assert run_in(tmp_path / "other_cwd", monkeypatch, *argv) == 0
    assert params_sha(tmp_path / "second") == params_sha(first)
    capsys.readouterr()


def test_topologies_folder_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    """A non-editable install (the Docker image) names its topologies/ folder by env."""
    folder = tmp_path / "opt" / "topologies"
    folder.mkdir(parents=True)
    (folder / "campus.edgelist").write_text("0 1\n")
    monkeypatch.setenv(TOPOLOGIES_ENV, str(folder))
    monkeypatch.chdir(tmp_path)
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    found = find_file("topologies/campus.edgelist", experiments)
    assert found == (folder / "campus.edgelist").resolve()


def test_saved_config_hashes_like_the_original(tmp_path: Path, monkeypatch, capsys) -> None:
    """Checkpoints and the grids' --reuse compare config digests: the copy must not differ."""
    from fedopt.config import load_experiment
    from fedopt.run import config_digest

    root = Path(__file__).resolve().parents[1]
    experiment = root / "experiments" / "dsgd_lossy_campus.yaml"
    out = tmp_path / "run"
    argv = [str(experiment), "--set", "stop.rounds=2", "--out", str(out)]
    assert run_in(tmp_path, monkeypatch, *argv) == 0
    capsys.readouterr()
    saved = load_experiment(out / "config.yaml")
    assert saved.topology.name == "inputs/campus.edgelist"
    assert config_digest(saved) == config_digest(load_experiment(experiment, ["stop.rounds=2"]))

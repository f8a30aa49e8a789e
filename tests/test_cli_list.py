"""``fedopt list`` (defaults, plug-ins, topology parameters) and ``fedopt --help``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fedopt.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = textwrap.dedent(
    """
    from typing import Literal

    from fedopt.problems import PROBLEMS
    from fedopt.problems.quadratic import Quadratic, QuadraticConfig


    class ScaledConfig(QuadraticConfig):
        name: Literal["{name}"] = "{name}"
        scale: float


    @PROBLEMS.register("{name}")
    class Scaled(Quadratic):
        Config = ScaledConfig
    """
)


def listed(capsys: pytest.CaptureFixture, *args: str) -> dict[str, str]:
    assert main(["list", *args]) == 0
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        if line.startswith("  "):
            name, _, rest = line.strip().partition(" ")
            rows[name] = rest.strip()
    assert "PydanticUndefined" not in out
    return rows


def test_list_shows_defaults_and_topology_parameters(capsys) -> None:
    rows = listed(capsys)
    assert "aggregator_params={}" in rows["fedavg"]
    assert "partition={'kind': 'iid'" in rows["digits_mlp"]
    assert rows["small_world"] == "k=4, p=0.1"
    assert rows["grid"] == "rows=None, cols=None"
    assert (
        "clique_size=4" in rows["ring_of_cliques"]
        and "[plug-in ring_of_cliques.py]" in (rows["ring_of_cliques"])
    )


def test_list_loads_plugins_from_a_file_or_an_experiment(tmp_path: Path, capsys) -> None:
    plugin = tmp_path / "scaled.py"
    plugin.write_text(PLUGIN.replace("{name}", "scaled_quadratic_a"))
    rows = listed(capsys, "--plugins", str(plugin))
    assert "scale=<required>" in rows["scaled_quadratic_a"]
    assert rows["scaled_quadratic_a"].endswith("[plug-in scaled.py]")

    other = tmp_path / "sub" / "scaled_b.py"
    other.parent.mkdir()
    other.write_text(PLUGIN.replace("{name}", "scaled_quadratic_b"))
    exp = tmp_path / "sub" / "exp.yaml"
    exp.write_text("name: e\nplugins: [scaled_b.py]\n")  # relative to the experiment file
    assert "scale=<required>" in listed(capsys, str(exp))["scaled_quadratic_b"]


def test_list_refuses_a_plugin_that_is_not_python(tmp_path: Path, capsys) -> None:
    assert main(["list", "--plugins", str(tmp_path / "x.txt")]) == 2
    assert "--plugins" in capsys.readouterr().err


def test_help_lists_every_command_once_with_a_pointer_to_the_readme() -> None:
    parser = build_parser()
    text = parser.format_help()
    sub = next(a for a in parser._actions if a.dest == "command")
    epilog = text[text.index("commands:") :]
    for name in sub.choices:
        assert sum(line.startswith(f"  {name} ") for line in epilog.splitlines()) == 1, name
    for name in ("cluster", "doctor", "report", "bench"):
        assert name in text
    assert "README.md" in text and "--unset" in text and "algorithm.name=X" in text

"""``--set``/``--unset`` and duplicate YAML keys, as the user sees them."""

from pathlib import Path

import pytest
import yaml

from fedopt.cli import main
from fedopt.config import apply_overrides, read_yaml
from fedopt.config.load import UniqueKeyLoader, load_yaml_text
from fedopt.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "experiments" / "quickstart.yaml")


def resolved(tmp_path: Path, *args: str) -> dict:
    """Run ``fedopt run`` for 1 round and read the resolved config.yaml."""
    out = tmp_path / "r"
    rc = main(["run", QUICK, "--set", "stop.rounds=1", "--out", str(out), "--quiet", *args])
    assert rc == 0
    return yaml.safe_load((out / "config.yaml").read_text())


def test_set_null_sets_none_and_unset_restores_the_default(tmp_path: Path, capsys) -> None:
    data = read_yaml(QUICK)
    assert apply_overrides(data, ["eval.every=null"])["eval"] == {"every": None}
    assert "every" not in apply_overrides(data, [], ["eval.every"])["eval"]
    cfg = resolved(tmp_path, "--unset", "algorithm.lr_decay", "--set", "engine.threads=null")
    assert cfg["algorithm"]["lr_decay"] == 0.0  # the field's default, not the file's 0.02
    assert cfg["engine"]["threads"] is None


def test_set_null_on_a_field_that_needs_a_value_points_to_unset(capsys) -> None:
    assert main(["validate", QUICK, "--set", "algorithm.lr=null"]) == 2
    err = capsys.readouterr().err
    assert "algorithm.lr: " in err and "--unset algorithm.lr restores the default" in err


def test_unset_of_a_missing_key_names_it_and_suggests(capsys) -> None:
    assert main(["validate", QUICK, "--unset", "algorithm.lrr"]) == 2
    err = capsys.readouterr().err
    assert "--unset 'algorithm.lrr': algorithm has no key 'lrr'" in err
    assert "Did you mean 'algorithm.lr'?" in err


def test_switching_algorithm_drops_the_keys_it_does_not_take(capsys) -> None:
    args = ["validate", QUICK, "--set", "algorithm.name=fedavg", "--set", "topology.name=star"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "ok: quickstart: algorithm fedavg" in captured.out
    notes = [line for line in captured.err.splitlines() if line]
    assert notes == [
        "note: --set 'algorithm.name=fedavg': dropped algorithm.variant='atc' "
        "('fedavg' has no such field)",
        "note: --set 'algorithm.name=fedavg': dropped algorithm.lr_decay=0.02 "
        "('fedavg' has no such field)",
    ]
    # keys the new algorithm takes stay, and later --set keys are checked as usual
    data = apply_overrides(read_yaml(QUICK), ["algorithm.name=fedavg"], note=lambda m: None)
    assert data["algorithm"] == {"name": "fedavg", "lr": 0.2, "local_steps": 1}
    assert main([*args, "--set", "algorithm.variant=atc"]) == 2
    assert "algorithm.variant: unknown key 'variant'" in capsys.readouterr().err


def test_switching_problem_drops_its_keys_too() -> None:
    notes: list[str] = []
    data = apply_overrides(read_yaml(QUICK), ["problem.name=logistic"], note=notes.append)
    assert data["problem"] == {"name": "logistic", "dim": 10}
    assert [n.split(": dropped ")[1].split("=")[0] for n in notes] == ["problem.mu", "problem.L"]


def test_same_name_keeps_every_key() -> None:
    notes: list[str] = []
    data = apply_overrides(read_yaml(QUICK), ["algorithm.name=dsgd"], note=notes.append)
    assert data["algorithm"]["variant"] == "atc" and notes == []


def test_duplicate_keys_are_refused_with_both_lines(tmp_path: Path) -> None:
    text = "name: a\nstop:\n  rounds: 5\nseed: 1\nstop: {rounds: 6}\n"
    with pytest.raises(ConfigError) as err:
        load_yaml_text(text, "x.yaml")
    assert str(err.value) == (
        "x.yaml: key 'stop' appears twice in one mapping (lines 2 and 5); keep one of them"
    )
    with pytest.raises(ConfigError, match=r"key 'n' appears twice .* columns 8 and 14"):
        load_yaml_text("topo: {n: 1, n: 2}\n", "y.yaml")
    # merge keys and equal keys in different mappings are fine
    assert load_yaml_text("a: &x {k: 1}\nb: {<<: *x, j: 2}\nc: {k: 3}\n", "z") == {
        "a": {"k": 1},
        "b": {"k": 1, "j": 2},
        "c": {"k": 3},
    }
    assert issubclass(UniqueKeyLoader, yaml.SafeLoader)
    with pytest.raises(ConfigError, match=r"--set 'algorithm=\{lr: 1, lr: 2\}': key 'lr'"):
        apply_overrides({}, ["algorithm={lr: 1, lr: 2}"])


def test_ray_flags_without_the_ray_engine_are_refused(capsys) -> None:
    assert main(["validate", QUICK, "--actors", "2"]) == 2
    err = capsys.readouterr().err
    assert "--actors 2: only the Ray engine" in err and "add --engine ray" in err
    assert main(["validate", QUICK, "--set", "engine.kind=ray", "--actors", "2"]) == 0
    capsys.readouterr()


def test_more_actors_than_nodes_is_found_before_ray_starts(capsys) -> None:
    assert main(["validate", QUICK, "--engine", "ray", "--actors", "17"]) == 2
    err = capsys.readouterr().err
    assert "engine.actors: 17 actors for n=16 nodes" in err and "--actors 16" in err

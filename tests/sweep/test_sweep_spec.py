"""Sweep files: parsing and expansion into cells (counts, names, order, exclusion)."""

from __future__ import annotations

from pathlib import Path

from sweep_helpers import tiny

from fedopt.sweep.expand import expand, prepare
from fedopt.sweep.spec import parse_sweep, short_names, value_text


def cells_of(data: dict, folder: Path | None = None):
    return expand(parse_sweep(data, folder=folder))


def test_grid_zip_seeds_counts_and_names() -> None:
    cells = cells_of(
        {
            "experiment": tiny(),
            "grid": {"algorithm.lr": [0.05, 0.1, 0.2], "topology.name": ["ring", "complete"]},
            "zip": {"topology.n": [4, 8], "problem.dim": [3, 6]},
            "seeds": 2,
        }
    )
    assert len(cells) == 3 * 2 * 2 * 2  # grid 3 x 2, zip 2 pairs, 2 seeds
    assert cells[0].name == "lr=0.05/name=ring/n=4,dim=3/seed0"
    assert cells[1].name == "lr=0.05/name=ring/n=4,dim=3/seed1"
    assert cells[-1].name == "lr=0.2/name=complete/n=8,dim=6/seed1"
    assert len({c.name for c in cells}) == 24
    assert len({c.point for c in cells}) == 12  # a point per seed pair
    c = cells[-1]
    assert c.raw["algorithm"]["lr"] == 0.2 and c.raw["topology"] == {"name": "complete", "n": 8}
    assert c.raw["problem"]["dim"] == 6 and c.raw["seed"] == 1
    assert dict(c.columns) == {"lr": "0.2", "name": "complete", "n": "8", "dim": "6"}


def test_named_options_cells_and_union_of_grids() -> None:
    data = {
        "experiment": tiny(),
        "grid": [
            {"method": {"dsgd": {"algorithm.name": "dsgd"}}, "algorithm.lr": [0.1, 0.2]},
            {"method": {"fedavg": {"algorithm.name": "fedavg", "topology.name": "star"}}},
        ],
        "seeds": [3, 7],
    }
    cells = cells_of(data)
    assert [c.name for c in cells] == [
        "dsgd/lr=0.1/seed3",
        "dsgd/lr=0.1/seed7",
        "dsgd/lr=0.2/seed3",
        "dsgd/lr=0.2/seed7",
        "fedavg/seed3",
        "fedavg/seed7",
    ]
    fedavg = cells[-1]
    assert fedavg.raw["algorithm"]["name"] == "fedavg" and fedavg.raw["topology"]["name"] == "star"
    assert fedavg.raw["seed"] == 7
    assert len(prepare(parse_sweep(data), cells)) == 6  # every cell validates


def test_cells_section_and_experiment_axis(tmp_path: Path, write_sweep) -> None:
    a = write_sweep(tiny(name="a"), "a.yaml")
    write_sweep(tiny(name="b", stop={"rounds": 6}), "b.yaml")
    cells = cells_of(
        {"grid": {"experiment": [a.name, "b.yaml"]}, "cells": {"x": None, "y": {"seed": 5}}},
        folder=tmp_path,
    )
    assert [c.name for c in cells] == ["a/x", "a/y", "b/x", "b/y"]
    assert cells[2].raw["stop"]["rounds"] == 6 and cells[1].raw["seed"] == 5
    assert cells[0].base_dir == tmp_path.resolve()


def test_exclude_by_axis_key_glob_and_list() -> None:
    data = {
        "experiment": tiny(),
        "grid": {
            "method": {
                "dsgd": {"algorithm.name": "dsgd"},
                "fedavg": {"algorithm.name": "fedavg", "topology.name": "star"},
            },
            "algorithm.lr": [0.1, 0.2, 0.4],
        },
        "seeds": 2,
        "exclude": [
            {"method": "fed*", "lr": [0.2, 0.4]},  # a glob on the option, a list of values
            {"algorithm.lr": 0.4, "seed": 1},  # the full key, and the seed
        ],
    }
    names = [c.name for c in cells_of(data)]
    assert len(names) == 12 - 4 - 1
    assert "fedavg/lr=0.1/seed0" in names and "fedavg/lr=0.2/seed0" not in names
    assert "dsgd/lr=0.4/seed0" in names and "dsgd/lr=0.4/seed1" not in names


def test_halving_expands_every_step_and_seed() -> None:
    data = {
        "experiment": tiny(),
        "grid": {"problem.heterogeneity": [0.5, 1.0]},
        "seeds": 2,
        "halving": {"key": "algorithm.lr", "start": 1.0, "steps": 3},
    }
    cells = cells_of(data)
    assert len(cells) == 2 * 3 * 2
    assert [c.name for c in cells[:6]] == [
        "heterogeneity=0.5/lr=1/seed0",
        "heterogeneity=0.5/lr=1/seed1",
        "heterogeneity=0.5/lr=0.5/seed0",
        "heterogeneity=0.5/lr=0.5/seed1",
        "heterogeneity=0.5/lr=0.25/seed0",
        "heterogeneity=0.5/lr=0.25/seed1",
    ]
    assert {c.search for c in cells} == {"heterogeneity=0.5", "heterogeneity=1"}
    assert [c.step for c in cells[:6:2]] == [1.0, 0.5, 0.25]
    # without start, the experiment's own value starts the search
    data["halving"] = {"key": "algorithm.lr", "steps": 2}
    assert [c.step for c in cells_of(data)[:4:2]] == [0.1, 0.05]


def test_labels() -> None:
    assert short_names(["algorithm.lr", "problem.partition.alpha"]) == {
        "algorithm.lr": "lr",
        "problem.partition.alpha": "alpha",
    }
    assert short_names(["algorithm.name", "topology.name"]) == {
        "algorithm.name": "algorithm.name",
        "topology.name": "topology.name",
    }
    assert [value_text(v) for v in (0.1, 1.0, 1e-6, 0.5**9, True, None, [1, 2])] == [
        "0.1",
        "1",
        "1e-06",
        "0.001953125",
        "true",
        "null",
        "[1,2]",
    ]

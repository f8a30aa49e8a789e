"""Seeds mean what they say (issue 10, item 4): every accepted seed keys its own run.

Seeds are keyed as 64-bit words through bijections (:func:`fedopt.rng.purpose_key`),
and the accepted range is ``[0, 2**63 - 1]``; a seed outside it is refused with the
field's name instead of silently repeating another seed's run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import experiment, run

from fedopt import rng
from fedopt.cli import main
from fedopt.config import validate
from fedopt.errors import ConfigError
from fedopt.rng import SEED_MAX

QUICK = str(Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml")
EDGES = [0, 1, SEED_MAX - 1, SEED_MAX]


def test_the_accepted_range_is_int64() -> None:
    assert SEED_MAX == 2**63 - 1
    assert validate(experiment(seed=SEED_MAX)).seed == SEED_MAX


@pytest.mark.parametrize("seed", [SEED_MAX + 1, 2**64, 2**64 + 5, -1])
def test_out_of_range_seeds_are_refused_naming_the_field(seed: int) -> None:
    with pytest.raises(ConfigError) as info:
        validate(experiment(seed=seed))
    msg = str(info.value)
    assert f"seed: must be in [0, 2**63 - 1] = [0, {SEED_MAX}]" in msg
    assert f"(got {seed})" in msg and "use a seed in that range" in msg


def test_the_command_line_exits_2_for_max_plus_one(capsys: pytest.CaptureFixture) -> None:
    assert main(["validate", QUICK, "--set", f"seed={SEED_MAX + 1}"]) == 2
    err = capsys.readouterr().err
    assert "seed: must be in [0, 2**63 - 1]" in err and str(SEED_MAX + 1) in err
    assert main(["topology", "ring", "--n", "8", "--seed", str(2**64)]) == 2
    assert "seed: must be in [0, 2**63 - 1]" in capsys.readouterr().err


def test_keys_at_the_edges_of_the_range_are_distinct() -> None:
    seeds = [*range(64), *range(SEED_MAX - 64, SEED_MAX + 1), 2**62, 2**62 - 1, 2**32]
    for purpose in ("init", "batch", "topology"):
        keys = {rng.purpose_key(s, purpose) for s in seeds}
        assert len(keys) == len(set(seeds))


def test_distinct_seeds_at_the_edges_give_distinct_runs() -> None:
    params = {}
    for seed in EDGES:
        raw = experiment(
            seed=seed,
            problem={"name": "quadratic", "dim": 4, "noise_std": 0.1, "same_init": False},
            stop={"rounds": 3},
        )
        _, result, _ = run(raw)
        params[seed] = result.final_params.clone()
    for i, a in enumerate(EDGES):
        for b in EDGES[i + 1 :]:
            assert not torch.equal(params[a], params[b]), (a, b)


def test_random_graphs_differ_at_the_edges() -> None:
    from fedopt.topology import TopologyConfig, build_topology

    cfg = TopologyConfig(name="erdos_renyi", n=30)
    edges = {s: build_topology(cfg, seed=s).edges.tobytes() for s in EDGES}
    assert len(set(edges.values())) == len(EDGES)

"""MoNNA's sanity figures (spec ``monna.md`` 2.9) and the robust algorithms' bad input.

n = 11, f = 2 (the last two nodes), d = 10, ``f_i = 1/2 ||x - c_i||^2`` with
``c_i = 3 * 1 + 0.5 N(0, I)``, gradient noise N(0, I), lr 0.05, 400 rounds, x(0) = 0,
the worst-case reception model and the line-search attacks. The metric is
``mean_i ||x_i - x*||^2`` over the honest nodes (about 90 at the start).
"""

import copy

import pytest
from helpers import experiment, run

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.errors import ConfigError

PROBLEM = {
    "name": "quadratic",
    "dim": 10,
    "mu": 1.0,
    "L": 1.0,
    "center": 3.0,
    "heterogeneity": 0.5,
    "noise_std": 1.0,
    "init_scale": 0.0,
    "dtype": "float64",
}


def spec_run(algorithm: str, momentum: float, attack: str | None, seed: int) -> float:
    raw = experiment(
        seed=seed,
        topology={"name": "complete", "n": 11},
        algorithm={"name": algorithm, "lr": 0.05, "momentum": momentum},
        problem=PROBLEM,
        stop={"rounds": 400},
        eval={"every": 400},
    )
    if attack is not None:
        raw["byzantine"] = {"count": 2, "attack": {"name": attack}}
    _, result, _ = run(raw)
    assert len(result.final_ids) == 9  # the honest nodes only
    return float(((result.final_params - result.x_star) ** 2).sum(1).mean())


def test_start_is_about_90_from_the_optimum() -> None:
    _, result, _ = run(
        experiment(
            topology={"name": "complete", "n": 11},
            algorithm={"name": "monna", "lr": 0.05},
            problem=PROBLEM,
            stop={"rounds": 1},
            byzantine={"count": 2, "attack": {"name": "sign_flip"}},
        )
    )
    assert 70 < float((result.x_star**2).sum()) < 110


@pytest.mark.parametrize("attack", ["foe", "alie"])
def test_monna_beats_nna_and_averaging_diverges(attack: str) -> None:
    seeds = (0, 1, 2)
    monna = [spec_run("monna", 0.9, attack, s) for s in seeds]
    nna = [spec_run("nna", 0.0, attack, s) for s in seeds]
    assert max(monna) < 0.6 and sum(monna) / 3 < 0.5  # spec: 0.21-0.47
    assert sum(monna) < sum(nna)  # spec: NNA 0.76-1.15
    averaged = spec_run("p2p_mean", 0.9, attack, 0)
    assert not averaged < 1e3  # spec: overflow (FOE) or 1e8 (ALIE); inf/nan fail "<"


def test_sign_flipping_figures() -> None:
    assert spec_run("monna", 0.9, "sign_flip", 0) < 0.06  # spec: 0.018-0.037
    assert 70 < spec_run("p2p_mean", 0.9, "sign_flip", 0) < 90  # spec: 78-83, stuck near 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("algorithm", "momentum", "attack", "low", "high"),
    [
        ("p2p_mean", 0.9, None, 0.01, 0.05),  # honest-only reference: 0.017-0.033
        ("mocwtm", 0.9, "foe", 0.3, 0.9),  # 0.42-0.62
        ("bridge", 0.0, "alie", 1.8, 3.0),  # 2.2-2.6
        ("nna", 0.0, "sign_flip", 0.01, 0.08),  # 0.025-0.048
    ],
)
def test_more_figures_of_the_spec_table(algorithm, momentum, attack, low, high) -> None:
    values = [spec_run(algorithm, momentum, attack, s) for s in (0, 1, 2)]
    assert low < sum(values) / 3 < high


BASE = experiment(
    topology={"name": "complete", "n": 11},
    algorithm={"name": "monna"},
    problem=PROBLEM,
    stop={"rounds": 2},
    byzantine={"count": 2, "attack": {"name": "alie"}},
)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"byzantine": {"count": 6, "attack": {"name": "alie"}}}, r"f=6 .* f < n/2"),
        ({"byzantine": {"nodes": [3, 11], "attack": {"name": "alie"}}}, "node id 11 is out"),
        (
            {"byzantine": {"count": 2, "attack": {"name": "label_flip"}}},
            "needs capability 'labels'",
        ),
        ({"byzantine": {"count": 2, "attack": {"name": "nope"}}}, "nope"),
        ({"byzantine": {"count": 2, "attack": {"name": "alie", "sigma": 1}}}, "sigma"),
        ({"algorithm": {"name": "monna", "f": 1}}, "below the 2 Byzantine"),
        ({"algorithm": {"name": "monna", "f": 6}}, r"algorithm.f: f=6 .* set algorithm.f <= 5"),
        (
            {"algorithm": {"name": "mocwtm", "f": 4}},
            r"algorithm.f: f=4 of n=11 .* trimmed_mean needs at least 9 .* set algorithm.f <= 3",
        ),
        (
            {"algorithm": {"name": "bridge"}, "byzantine": {"count": 4, "attack": {"name": "foe"}}},
            r"byzantine.count: f=4 of n=11 .* set byzantine.count <= 3, or add nodes",
        ),
        ({"topology": {"name": "ring", "n": 11}}, "complete graph"),
        ({"algorithm": {"name": "dsgd"}}, "does not model Byzantine"),
        ({"faults": {"drop": 0.1}}, "models missing and slow peers itself"),
    ],
)
def test_bad_robust_settings_are_refused(change: dict, match: str) -> None:
    raw = {**copy.deepcopy(BASE), **change}
    with pytest.raises(ConfigError, match=match):
        compile_plan(validate(raw))


def test_monna_learns_digits_under_label_flipping() -> None:
    raw = experiment(
        topology={"name": "complete", "n": 11},
        algorithm={"name": "monna", "lr": 0.5, "momentum": 0.9},
        problem={"name": "digits_softmax", "batch_size": 16},
        stop={"rounds": 80},
        eval={"every": 80},
        byzantine={"count": 2, "attack": {"name": "label_flip"}},
    )
    _, result, _ = run(raw)
    first, last = result.records[0], result.records[-1]
    assert first["test_accuracy"] < 0.2 and last["test_accuracy"] > 0.8
    assert result.totals.by_kind["byzantine"][0] == 80 * 2 * 9


def test_nna_runs_between_n_over_3_and_n_over_2_with_a_warning() -> None:
    # n = 16, f = 6: n/3 <= f < n/2, which the MoNNA reference code runs
    raw = experiment(
        topology={"name": "complete", "n": 16},
        algorithm={"name": "monna", "lr": 0.05, "momentum": 0.9},
        problem=PROBLEM,
        stop={"rounds": 60},
        eval={"every": 60},
        byzantine={"count": 6, "attack": {"name": "sign_flip"}},
    )
    with pytest.warns(UserWarning) as caught:
        _, result, _ = run(raw)
    (msg,) = [str(w.message) for w in caught if "n/3" in str(w.message)]
    assert msg.startswith("byzantine.count: f=6 of n=16 nodes is at or above n/3")
    assert "averaging the n - 2f = 4 nearest" in msg and "byzantine.count <= 5" in msg
    assert len(result.final_ids) == 10
    start = 90.0  # about ||x*||^2 (x(0) = 0)
    assert float(((result.final_params - result.x_star) ** 2).sum(1).mean()) < start / 10

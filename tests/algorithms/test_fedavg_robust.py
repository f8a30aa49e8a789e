"""FedAvg with a robust server rule and Byzantine clients attacking the updates."""

import copy

import pytest
from helpers import experiment, run

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.errors import ConfigError

PROBLEM = {
    "name": "quadratic",
    "dim": 10,
    "mu": 0.5,
    "L": 2.0,
    "heterogeneity": 0.5,
    "center": 3.0,
    "noise_std": 0.5,
    "init_scale": 0.0,
    "dtype": "float64",
}


def fed(aggregator: str, attack: str | None, rounds: int = 150, **params) -> dict:
    raw = experiment(
        topology={"name": "star", "n": 13},
        algorithm={
            "name": "fedavg",
            "lr": 0.1,
            "local_steps": 2,
            "aggregator": aggregator,
            "aggregator_params": params,
        },
        problem=PROBLEM,
        stop={"rounds": rounds},
        eval={"every": rounds},
    )
    if attack is not None:
        raw["byzantine"] = {"count": 2, "attack": {"name": attack}}
    return raw


def final_distance(raw: dict) -> float:
    _, result, _ = run(raw)
    return result.records[-1]["distance_to_opt"]


@pytest.mark.parametrize("attack", ["alie", "foe"])
def test_averaging_breaks_and_robust_rules_hold(attack: str) -> None:
    assert not final_distance(fed("mean", attack)) < 10  # inf or nan: diverged
    for rule, params in (("median", {}), ("trimmed_mean", {}), ("geometric_median", {})):
        assert final_distance(fed(rule, attack, iterations=10) if params else fed(rule, attack)) < 1


def test_without_attack_robust_rules_stay_close_to_fedavg() -> None:
    plain = final_distance(fed("mean", None))
    assert plain < 0.15
    assert final_distance(fed("trimmed_mean", None)) < 2 * plain + 0.1
    assert final_distance(fed("multi_krum", None)) < 2 * plain + 0.1


def test_messages_by_kind() -> None:
    _, result, _ = run(fed("median", "sign_flip", rounds=10))
    kinds = result.totals.by_kind
    assert kinds["model"][0] == 10 * 12  # the server broadcasts to every client
    assert kinds["update"][0] == 10 * 10  # honest clients send updates
    assert kinds["byzantine"][0] == 10 * 2
    assert kinds["update"][1] == 10 * 10 * (10 * 8 + 32)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (fed("krum", "alie", f=5), r"krum needs at least 13 .* m=12"),
        (
            {**fed("median", "label_flip"), "problem": {"name": "digits_softmax"}},
            "label_flip acts on peer-to-peer",
        ),
        (fed("nope", None), "nope"),
        (fed("median", None, tau=1.0), "tau"),
        # the mean is a rule like the others: its parameters are checked too
        (fed("mean", None, tau=1.0), "mean has no parameter 'tau'"),
    ],
)
def test_bad_server_rules_are_refused(raw: dict, match: str) -> None:
    raw = copy.deepcopy(raw)
    if "f" in raw["algorithm"]["aggregator_params"]:
        raw["algorithm"]["f"] = raw["algorithm"]["aggregator_params"].pop("f")
    with pytest.raises(ConfigError, match=match):
        compile_plan(validate(raw))


def test_the_mean_is_summed_without_adversaries_and_gathered_under_attack() -> None:
    """One aggregator choice: the rule's ``summable`` picks the path, not the rule's name."""
    plain, attacked = fed("mean", None, rounds=3), fed("mean", "sign_flip", rounds=3)
    for raw, summed, kinds in ((plain, True, {"model", "update"}), (attacked, False, None)):
        _, result, worker = run(raw)
        algo = worker.algorithm
        assert algo.rule.name == "mean" and algo.rule.summable and algo.summed is summed
        assert kinds is None or set(result.totals.by_kind) == kinds
    assert set(result.totals.by_kind) == {"model", "update", "byzantine"}
    _, _, worker = run(fed("trimmed_mean", None, rounds=1))
    assert not worker.algorithm.rule.summable and not worker.algorithm.summed


def _refusal(raw: dict) -> str:
    with pytest.raises(ConfigError) as err:
        compile_plan(validate(raw))
    return str(err.value)


def test_a_byzantine_server_is_refused_with_the_valid_ids() -> None:
    raw = fed("median", None)
    raw["byzantine"] = {"nodes": [0, 5], "attack": {"name": "alie"}}  # node 0: the hub
    msg = _refusal(raw)
    assert msg.startswith("byzantine.nodes: node 0 has role 'server'")
    assert "a Byzantine server is not modelled" in msg and "valid ids: 1..12" in msg


def test_byzantine_count_reaching_the_server_is_refused(tmp_path) -> None:
    plugin = tmp_path / "hub_last.py"
    plugin.write_text(
        "import networkx as nx\n\n"
        "def star(n, *, seed):\n"
        "    return nx.relabel_nodes(nx.star_graph(n - 1), {i: n - 1 - i for i in range(n)})\n"
    )
    raw = fed("median", "alie")
    raw["topology"] = {"name": f"{plugin}:star", "n": 13}  # the server is node 12
    msg = _refusal(raw)
    assert msg.startswith("byzantine.count: 2 makes the last 2 node ids 11..12 Byzantine")
    assert "node 12 has role 'server'" in msg and "valid ids: 0..11" in msg


def test_f_below_half_counts_the_clients_only() -> None:
    raw = fed("median", None)
    raw["byzantine"] = {"count": 6, "attack": {"name": "alie"}}  # 6 of 12 clients
    msg = _refusal(raw)
    assert msg.startswith("byzantine.count: f=6 Byzantine out of 12 clients")
    assert "the server does not count; n=13 nodes" in msg and "set byzantine.count <= 5" in msg

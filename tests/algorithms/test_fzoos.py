"""FZooS (spec fzoos.md 2.4): queries, messages, the shared features, the N = 1 case.

Every run here is the conformance entry's setting (``algorithm_info.FZOOS`` on the
black-box ``zo_quadratic``, ``dim = 8``, ``M = 64``, ``T = 3``); the GP and RFF
mathematics has its own tests in ``tests/zo/``.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import torch
from algorithm_info import ALGORITHM_INFOS, FZOOS, FZOOS_M, ZO_QUAD
from helpers import experiment, run

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.engine.worker import Worker

HEADER = 32  # network.header_bytes default


def _raw(n: int = 5, rounds: int = 4, problem: dict | None = None, **algorithm: Any) -> dict:
    return experiment(
        topology={"name": "star", "n": n},
        algorithm={**FZOOS, **algorithm},
        problem=problem or ZO_QUAD,
        stop={"rounds": rounds},
        eval={"every": 1},
    )


def _per_round(cfg: dict) -> int:
    """Queries of one client per round: 2 + T + local_keep (T - 1) + agg_keep (+ 2)."""
    T = cfg.get("local_steps", 10)
    q = 2 + T + cfg.get("local_keep", 5) * (T - 1) + cfg.get("agg_keep", 50)
    return q + (2 if cfg.get("safeguard") == "federated" else 0)


@pytest.mark.parametrize(
    "extra",
    [{}, {"safeguard": "federated"}, {"local_keep": 0, "agg_keep": 0, "init_queries": 0}],
    ids=["default", "safeguard", "no-active-queries"],
)
def test_every_query_is_counted_exactly(extra: dict) -> None:
    raw = _raw(**extra)
    cfg = raw["algorithm"]
    q, init = _per_round(cfg), cfg.get("init_queries", 10)
    _, result, _ = run(raw)
    clients = 4
    counts = [r["queries_total"] for r in result.records[1:]]
    assert counts == [clients * (init + r * q) for r in range(1, 5)]
    assert result.derived["queries_per_round"] == q
    assert result.derived["queries_first_round"] == q + init
    assert result.records[-1]["gradients_total"] == 0  # zeroth order: no gradient calls


def test_the_default_round_asks_107_queries() -> None:
    from fedopt.algorithms.fzoos import FZooSConfig

    assert FZooSConfig().queries_per_round() == 107  # 1 + T + 5 (T - 1) + 1 + 50, T = 10
    assert FZooSConfig(safeguard="federated").queries_per_round() == 109


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_messages_are_metered_per_spec_2_6(dtype: str) -> None:
    # per client and round: x up and down (d floats), theta up (M + 2: y_min, y_max) and
    # theta_bar down (M), in the problem's dtype
    raw = _raw(problem={**ZO_QUAD, "dtype": dtype})
    _, result, _ = run(raw)
    size = 8 if dtype == "float64" else 4
    d, M, msgs = ZO_QUAD["dim"], FZOOS_M, 4 * 4
    want = {
        "x": [msgs, msgs * (d * size + HEADER)],
        "x_global": [msgs, msgs * (d * size + HEADER)],
        "theta": [msgs, msgs * ((M + 2) * size + HEADER)],
        "theta_bar": [msgs, msgs * (M * size + HEADER)],
    }
    assert {k: list(v) for k, v in result.totals.by_kind.items()} == want
    assert result.derived["floats_up_per_round"] == d + M + 2
    assert result.derived["floats_down_per_round"] == d + M


def test_the_safeguard_is_metered_and_never_lets_F_rise() -> None:
    # 2 queries (counted above) and 2 scalars up, 1 byte of verdict down, per client and
    # round; with noiseless queries the federated test sees the true F
    raw = _raw(rounds=8, safeguard="federated", lr=0.2)
    _, result, _ = run(raw)
    msgs = 4 * 8
    kinds = result.totals.by_kind
    assert list(kinds["safeguard"]) == [msgs, msgs * (2 * 8 + HEADER)]
    assert list(kinds["safeguard_accept"]) == [msgs, msgs * (1 + HEADER)]
    assert result.totals.messages == 6 * msgs
    losses = [r["loss"] for r in result.records]
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(losses))
    assert result.derived["barriers_per_round"] == 3
    # without it the large step makes F rise in some round
    plain = run(_raw(rounds=8, lr=0.2))[1]
    free = [r["loss"] for r in plain.records]
    assert any(b > a for a, b in itertools.pairwise(free))


def test_one_client_has_no_correction_and_several_do() -> None:
    # N = 1: theta_bar is the client's own weights bit for bit, so the correction
    # grad m_bar - grad m_1 is exactly 0 in every round (spec 2.10.4)
    _, alone, worker = run(_raw(n=2, rounds=5))
    assert [r["correction_norm"] for r in alone.records] == [0.0] * 6
    assert torch.equal(worker.state["theta_bar"], worker.state["theta_own"])
    _, several, _ = run(_raw(n=5, rounds=5))
    norms = [r["correction_norm"] for r in several.records]
    assert norms[:2] == [0.0, 0.0] and all(v > 0 for v in norms[2:])  # from round 2 on (P8)


def test_fzoos_decreases_F_on_a_small_quadratic() -> None:
    info = ALGORITHM_INFOS["fzoos"]
    _, result, _ = run(info.raw)
    first, last = result.records[0], result.records[-1]
    assert last["loss"] < first["loss"]
    assert last["distance_to_opt"] < 0.1 * first["distance_to_opt"]


def test_the_features_are_bit_identical_on_the_server_and_every_client() -> None:
    # spec 2.10.3: each worker draws W, b from the seed alone
    plan = compile_plan(validate(_raw()))
    shards = ([0], [1, 2], [3, 4], [0, 3], [4])
    feats = [Worker(plan, np.array(h), torch.device("cpu")).algorithm.features for h in shards]
    for f in feats[1:]:
        assert torch.equal(f.W8, feats[0].W8) and torch.equal(f.b8, feats[0].b8)
    assert feats[0].W.shape == (ZO_QUAD["dim"], FZOOS_M)


def test_neighbourhoods_beyond_the_history_use_all_of_it() -> None:
    # a neighbourhood larger than the history is the whole history (the reference's
    # argsort(dists)[:k]): the run equals one whose sizes just cover the final history
    rounds = 3
    total = FZOOS.get("init_queries", 10) + rounds * _per_round(FZOOS)
    huge = run(_raw(rounds=rounds, gp_neighbourhood=10**9, rff_neighbourhood=10**9))[1]
    exact = run(_raw(rounds=rounds, gp_neighbourhood=total, rff_neighbourhood=total))[1]
    assert torch.equal(huge.final_params, exact.final_params)
    smaller = run(_raw(rounds=rounds, gp_neighbourhood=8, rff_neighbourhood=total))[1]
    assert not torch.equal(smaller.final_params, exact.final_params)


def test_gamma_one_ablation_changes_only_the_corrected_rounds() -> None:
    adaptive = run(_raw(rounds=3))[1]
    ablation = run(_raw(rounds=3, adaptive=False))[1]
    assert ablation.derived["gamma"] == "1" and adaptive.derived["gamma"] == "1/t"
    a, b = adaptive.records, ablation.records
    assert a[1]["loss"] == b[1]["loss"]  # round 1: no correction yet
    assert a[2]["loss"] != b[2]["loss"]
    # with gamma = 1 every step carries the whole correction: larger mean norm
    assert b[2]["correction_norm"] > a[2]["correction_norm"]


def test_noisy_queries_are_keyed_and_reproducible() -> None:
    r1 = run(_raw(rounds=3, noise_std=0.01))[1]
    r2 = run(_raw(rounds=3, noise_std=0.01))[1]
    r0 = run(_raw(rounds=3))[1]
    assert torch.equal(r1.final_params, r2.final_params)
    assert not torch.equal(r1.final_params, r0.final_params)


@pytest.mark.parametrize("uncertainty", ["frobenius", "spectral"])
@pytest.mark.parametrize("kernel", ["se", "matern52"])
def test_kernels_and_uncertainty_scores_run(kernel: str, uncertainty: str) -> None:
    raw = _raw(rounds=3, kernel=kernel, uncertainty=uncertainty)
    result = run(raw)[1]
    assert result.records[-1]["distance_to_opt"] < result.records[0]["distance_to_opt"]
    assert result.records[-1]["queries_total"] == 4 * (10 + 3 * _per_round(FZOOS))


def test_a_resumed_run_ends_as_an_uninterrupted_one(tmp_path, monkeypatch) -> None:
    # the histories, weights and query counters are state; W, b and Adam are rebuilt
    import json

    from helpers import crash_and_resume, run_records

    from fedopt.algorithms.fzoos import FZooS

    raw = _raw(rounds=5, noise_std=0.01)
    raw["output"] = {"checkpoint_every": 2}
    ref, resumed = crash_and_resume(validate(raw), FZooS, 3, tmp_path, monkeypatch)
    assert run_records(resumed) == run_records(ref)
    a = json.loads((resumed / "summary.json").read_text())
    b = json.loads((ref / "summary.json").read_text())
    assert a["params_sha256"] == b["params_sha256"] and a["queries_total"] == b["queries_total"]


def test_the_ml2_reference_mode_picks_each_clients_lengthscale_from_the_grid() -> None:
    # kernel matern52 + lengthscale_fit ml2: the reference code's local GP (pitfall P2),
    # its ML-II by a batched grid instead of scikit-learn's L-BFGS restarts
    _, result, worker = run(
        _raw(rounds=3, kernel="matern52", lengthscale_fit="ml2", lengthscale_bounds=(0.1, 10.0))
    )
    grid = torch.logspace(-1, 1, 21, dtype=torch.float64)
    picked = worker.state["lengthscale"]
    assert all(bool(torch.isclose(grid, v, rtol=1e-15, atol=0).any()) for v in picked)
    assert not bool((picked == 1.0).all())  # it does move off the fixed default
    assert result.records[-1]["distance_to_opt"] < result.records[0]["distance_to_opt"]
    fixed = run(_raw(rounds=3))[1]
    assert fixed.records[-1]["lengthscale"] == 1.0

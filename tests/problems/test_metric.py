"""Non-differentiable metric optimisation on digits: macro metrics equal scikit-learn's,
clients by class subsets, placement, no gradients, and FedZO lowers 1 - macro F1."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from prob_helpers import build
from sklearn.metrics import f1_score, jaccard_score, precision_score, recall_score

from fedopt.problems.metric import DIM, logits, macro_metric

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import experiment, run

N = 7
SKLEARN = {
    "f1": f1_score,
    "precision": precision_score,
    "recall": recall_score,
    "jaccard": jaccard_score,
}


@pytest.fixture(scope="module")
def oracle():
    return build({"name": "digits_metric"}, list(range(N)), N)


@pytest.mark.parametrize("metric", sorted(SKLEARN))
def test_macro_metrics_equal_scikit_learn(metric: str) -> None:
    gen = torch.Generator().manual_seed(0)
    truth = torch.randint(0, 4, (3, 40), generator=gen)  # classes 0-3 on the clients
    pred = torch.randint(0, 6, (3, 40), generator=gen)  # predictions also in 4, 5
    mask = torch.ones(3, 40, dtype=torch.float64)
    mask[1, 30:] = 0.0  # a shorter client (padding)
    got = macro_metric(pred, truth, mask, metric)
    for i in range(3):
        m = mask[i].bool()
        want = SKLEARN[metric](truth[i][m], pred[i][m], average="macro", zero_division=0)
        assert float(got[i]) == pytest.approx(want, abs=1e-15)


def test_clients_hold_the_test_samples_of_their_classes(oracle) -> None:
    assert oracle.dim == DIM == 2534 and not oracle.has_gradients
    counts = oracle.num_samples
    assert torch.all(counts > 200)  # 3 classes of ~90 test images each (P = 0.3)
    for i in range(N):
        m = oracle.mask[i].bool()
        assert len(torch.unique(oracle.labels[i][m])) == 3
    x0 = oracle.init_params(torch.arange(N))
    assert torch.equal(oracle.params(x0[:1])[0], oracle.theta_star)  # x_0 = theta*
    # f_i(x_0) = 1 - macro F1 of the pre-trained model on client i's samples
    rows = torch.arange(N)
    for i in (0, 4):
        m = oracle.mask[i].bool()
        pred = logits(oracle.theta_star.unsqueeze(0), oracle.inputs[i : i + 1])[0].argmax(1)
        f1 = f1_score(oracle.labels[i][m], pred[m], average="macro", zero_division=0)
        assert float(oracle.value(x0, rows)[i]) == pytest.approx(1 - f1, abs=1e-15)
    with pytest.raises(TypeError, match="black box"):
        oracle.full_grad(x0, rows)


def test_a_client_hosted_alone_has_the_same_values(oracle) -> None:
    X = torch.rand(3, DIM, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    alone = build({"name": "digits_metric"}, [5], N)
    assert torch.equal(
        alone.value(X, torch.zeros(3, dtype=torch.int64)), oracle.value(X, torch.full((3,), 5))
    )


def test_fedzo_with_a_wide_fd_step_lowers_one_minus_macro_f1() -> None:
    # the metric is piecewise constant: lambda = 0.01 moves theta by 0.004 and flips no
    # prediction on these ~270 samples per client, so the FD step is widened
    raw = experiment(
        topology={"name": "star", "n": N + 1},
        algorithm={"name": "fedzo", "fd_step": 0.5, "directions": 10, "local_steps": 5},
        problem={"name": "digits_metric"},
        stop={"rounds": 3},
        eval={"every": 3},
    )
    records = run(raw)[1].records
    assert records[-1]["loss"] < records[0]["loss"] - 0.02
    assert records[-1]["queries_total"] == N * 3 * 5 * 11

"""The federated black-box attack on digits: private class-subset classifiers, margins,
candidate images, success flag, placement and refusals."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from prob_helpers import build

from fedopt.errors import ConfigError
from fedopt.problems.attack import PIXELS, class_subsets, margins
from fedopt.problems.capabilities import Capability

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import experiment, run

SPEC = {"name": "digits_attack", "portion": 0.5, "image": 2}
N = 10


@pytest.fixture(scope="module")
def oracle():
    return build(SPEC, list(range(N)), N)


def test_clients_know_half_of_the_classes_and_classify_them(oracle) -> None:
    subsets = class_subsets(3, N, 0.5)
    assert subsets.sum(dim=1).tolist() == [5] * N
    assert len({tuple(s.tolist()) for s in subsets}) > 1  # heterogeneous
    assert class_subsets(3, N, 0.05).sum(dim=1).tolist() == [2] * N  # at least two classes
    assert torch.equal(class_subsets(3, 4, 0.5), subsets[:4])  # keyed per rank
    assert oracle.W_all.shape == (N, PIXELS + 1, 10)
    assert oracle.capabilities == {Capability.NOISY_QUERIES} and not oracle.has_gradients
    with pytest.raises(TypeError, match="black box"):
        oracle.grad(oracle.init_params(torch.arange(1)), torch.arange(1), 0)


def test_the_attacked_image_is_classified_correctly_at_x0(oracle) -> None:
    x0 = oracle.init_params(torch.arange(1))
    assert torch.equal(x0, torch.full((1, PIXELS), 0.5, dtype=torch.float64))
    assert torch.equal(oracle.perturbed(x0)[0], oracle.image)  # zero perturbation
    assert oracle.evaluate(x0[0])["loss"] > 0  # the ensemble's mean margin
    assert oracle.evaluate_test(x0[0]) == {"attack_success": 0.0}
    assert oracle.candidates >= 15  # the paper attacks 15 images


def test_margins_and_the_success_flag(oracle) -> None:
    rows = torch.arange(N)
    x = torch.rand(N, PIXELS, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = oracle.perturbed(x)
    assert float((a - oracle.image).abs().max()) <= oracle.config.epsilon + 1e-15
    z = torch.einsum("kp,kpc->kc", torch.cat([a, torch.ones(N, 1).double()], 1), oracle.W)
    y = oracle.label
    want = z[:, y] - torch.cat([z[:, :y], z[:, y + 1 :]], 1).max(dim=1).values
    torch.testing.assert_close(oracle.value(x, rows), want, rtol=1e-12, atol=1e-12)
    # an FGSM step against the ensemble (autograd on the models, not available to the
    # clients) with epsilon 0.3 fools it
    strong = build({**SPEC, "epsilon": 0.3}, list(range(N)), N)
    x0 = strong.init_params(torch.arange(1)).requires_grad_(True)
    F = margins(strong.W_all, strong.perturbed(x0).expand(N, -1), strong.label).mean()
    F.backward()
    attack = (0.5 - 0.5 * torch.sign(x0.grad))[0]
    assert strong.evaluate(attack)["loss"] < 0
    assert strong.evaluate_test(attack) == {"attack_success": 1.0}


def test_a_client_hosted_alone_has_the_same_function(oracle) -> None:
    x = torch.rand(2, PIXELS, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    alone = build(SPEC, [7], N)
    both = oracle.value(x, torch.tensor([7, 7]))
    assert torch.equal(alone.value(x, torch.tensor([0, 0])), both)
    assert torch.equal(
        alone.query(x[:1], torch.tensor([0]), 4, 0.1),
        oracle.query(x[:1], torch.tensor([7]), 4, 0.1),
    )


def test_reference_init_sends_x0_to_minus_epsilon() -> None:
    ref = build({**SPEC, "init": "reference", "image": 0}, list(range(N)), N)
    x0 = ref.init_params(torch.arange(1))
    assert torch.equal(x0, torch.zeros(1, PIXELS, dtype=torch.float64))
    torch.testing.assert_close(ref.perturbed(x0)[0], (ref.image - 0.1).clamp(0, 1))
    assert ref.evaluate(x0[0])["loss"] > 0  # still classified correctly there (P11)


def test_an_image_beyond_the_candidates_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"problem\.image: 5000 is out of range"):
        build({**SPEC, "image": 5000}, list(range(N)), N)


def test_fedzo_lowers_the_ensemble_margin() -> None:
    raw = experiment(
        topology={"name": "star", "n": N + 1},
        algorithm={"name": "fedzo", "local_steps": 5},
        problem={**SPEC, "image": 0},
        stop={"rounds": 10},
        eval={"every": 10},
    )
    records = run(raw)[1].records
    assert records[0]["attack_success"] == 0.0
    assert records[-1]["loss"] < records[0]["loss"] - 0.1
    assert records[-1]["queries_total"] == N * 10 * 5 * 21

"""The byte transformer ``byte_lm``: size, causality, batched over nodes, bad shapes."""

from __future__ import annotations

import copy

import pytest
import torch

from fedopt.errors import ConfigError
from fedopt.models import MODELS
from fedopt.models.transformer import param_count, sequence_cross_entropy

SMALL = {"layers": 2, "d_model": 8, "heads": 2, "context": 12, "mlp_ratio": 2}


def _inputs(k: int, b: int, T: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    win = torch.randint(0, 256, (k, b, T + 1), generator=g)
    return win[..., :-1], win[..., 1:]


def test_sizes_and_named_blocks() -> None:
    model = MODELS.get("byte_lm")()
    assert model.dim == param_count(2, 64, 64) == 137_216 and model.buf_dim == 0
    small = MODELS.get("byte_lm")(**SMALL)
    assert small.dim == param_count(2, 8, 12, 2) == sum(e.numel for e in small.layout.params)
    names = [e.name for e in small.layout.params]
    assert names[:6] == [
        "tok.weight",
        "pos.weight",
        "blocks.0.ln1.weight",
        "blocks.0.ln1.bias",
        "blocks.0.attn.qkv.weight",
        "blocks.0.attn.qkv.bias",
    ]
    assert {g.name: g.units for g in small.layout.groups.values()} == {"mlp0": 16, "mlp1": 16}
    # embeddings start at standard deviation 0.02 (uniform), layer norms at 1 and 0
    X = small.init_params(0, [0])
    views = small.layout.unflatten(X)
    assert float(views["tok.weight"].abs().max()) <= 0.02 * 3**0.5
    assert abs(float(views["tok.weight"].std()) - 0.02) < 0.002
    assert bool((views["blocks.1.ln2.weight"] == 1).all())


def test_the_loss_at_initialisation_is_about_ln_256() -> None:
    model = MODELS.get("byte_lm")(**SMALL)
    x, y = _inputs(2, 16, 12)
    loss = model.loss(model.init_params(0, [0, 1]), x, y)
    assert torch.allclose(loss, torch.full((2,), 5.545), atol=0.3)


def test_a_position_sees_only_the_past() -> None:
    model = MODELS.get("byte_lm")(**SMALL)
    X = model.init_params(3, [0], torch.float64) * 20  # large weights: visible effects
    x, _ = _inputs(1, 1, 12)
    changed = x.clone()
    changed[..., 7:] = (changed[..., 7:] + 1) % 256
    a = model.forward(X, x)
    b = model.forward(X, changed)
    assert torch.equal(a[..., :7, :], b[..., :7, :])
    assert not torch.allclose(a[..., 7:, :], b[..., 7:, :])


def test_batched_gradient_equals_each_module_alone() -> None:
    model = MODELS.get("byte_lm")(**SMALL)
    g = torch.Generator().manual_seed(2)
    X = model.init_params(0, [0, 1, 2], torch.float64)
    X = X + 0.1 * torch.randn(X.shape, generator=g, dtype=torch.float64)
    x, y = _inputs(3, 4, 10)
    loss, G = model.value_and_grad(X, x, y)
    for i in range(3):
        m = copy.deepcopy(model.module).double()
        m.load_state_dict(model.layout.state_dict(X, None, i))
        ref = sequence_cross_entropy(m(x[i]), y[i]).mean()
        ref.backward()
        assert float(loss[i]) == pytest.approx(float(ref.detach()), rel=1e-13)
        flat = torch.cat([p.grad.reshape(-1) for p in m.parameters()])
        assert torch.allclose(G[i], flat, rtol=0, atol=1e-12)
    # vmap over nodes (no fused attention kernel) gives the loop's numbers
    vm = MODELS.get("byte_lm")(**SMALL, strategy="vmap")
    _, Gv = vm.value_and_grad(X, x, y)
    assert torch.allclose(Gv, G, rtol=0, atol=1e-12) and not vm.fallbacks


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"d_model": 10, "heads": 4}, r"model.d_model: 10 is not divisible by heads=4.*e.g. 8"),
        ({"layers": 0}, r"model.layers: must be an integer >= 1, got 0"),
        ({"context": True}, r"model.context: must be an integer >= 1"),
    ],
)
def test_bad_shapes_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MODELS.get("byte_lm")(**kwargs)


def test_a_sequence_longer_than_the_context_is_an_error() -> None:
    model = MODELS.get("byte_lm")(**SMALL)
    x, _ = _inputs(1, 1, 13)
    with pytest.raises(ValueError, match=r"13 tokens exceeds the model's context of 12"):
        model.forward(model.init_params(0, [0]), x)

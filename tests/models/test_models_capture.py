"""Activation capture at the permutable groups' points, and the DIMAT exact-symmetry check."""

from __future__ import annotations

import pytest
import torch
from model_helpers import BUILTINS, build, inputs_for, node_module, random_state
from scipy.optimize import linear_sum_assignment

from fedopt.errors import ConfigError


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_capture_shapes_and_values_match_hooks_on_each_node(name: str) -> None:
    model = build(name)
    k, b = 2, 5
    X, B = random_state(model, k)
    x, _ = inputs_for(model, k, b)
    acts = model.capture(X, x, B)
    assert set(acts) == set(model.layout.groups)
    for group in model.layout.groups.values():
        act = acts[group.name]
        spatial = act.shape[1] // b
        assert act.shape == (k, b * spatial, group.units)
        for i in range(k):
            m = node_module(model, X, B, i).eval()
            seen: dict[str, torch.Tensor] = {}
            m.get_submodule(group.point).register_forward_hook(
                lambda _m, _i, out, seen=seen: seen.setdefault("out", out)
            )
            m(x[i])
            ref = seen["out"].movedim(1, -1).reshape(-1, group.units)  # samples x positions
            torch.testing.assert_close(act[i], ref, rtol=0, atol=1e-12)
    if name == "digits_cnn_bn":  # 8x8 -> pool -> 4x4 -> pool -> 2x2 positions per sample
        assert acts["conv1"].shape[1] == b * 16 and acts["conv2"].shape[1] == b * 4
    with pytest.raises(ConfigError, match=r"no capture point 'fc1'"):
        model.capture(X, x, B, ["fc1"])


def test_activation_matching_undoes_a_hidden_permutation_exactly() -> None:
    """DIMAT spec 3.12 T1: B is A with both hidden layers permuted; matching B's units to A's
    by the correlation of captured activations and averaging gives back A exactly."""
    model = build("synthetic_mlp", hidden=16)
    A, _ = random_state(model, 1)
    g = torch.Generator().manual_seed(5)
    Bm = A
    perms = {}
    for name, group in model.layout.groups.items():
        perms[name] = torch.randperm(group.units, generator=g).unsqueeze(0)
        Bm, _ = model.permute(Bm, name, perms[name])
    x = torch.randn(1, 500, 20, generator=g, dtype=torch.float64)
    inputs = x.expand(2, -1, -1)
    for act in model.capture(A, x).values():  # premise: at most one unit never fires
        assert int((act[0].std(0) == 0).sum()) <= 1
    aligned = Bm
    for name in model.layout.groups:  # layer by layer, on the partly aligned model
        acts = model.capture(torch.cat([A, aligned]), inputs, points=[name])[name]
        fa, fb = acts[0], acts[1]
        fa = (fa - fa.mean(0)) / fa.std(0).clamp_min(1e-7)
        fb = (fb - fb.mean(0)) / fb.std(0).clamp_min(1e-7)
        corr = (fa.T @ fb / len(fa)).numpy()
        _, match = linear_sum_assignment(corr, maximize=True)
        aligned, _ = model.permute(aligned, name, torch.as_tensor(match).unsqueeze(0))
    merged = 0.5 * (A + aligned)
    torch.testing.assert_close(merged, A, rtol=0, atol=1e-15)
    plain = 0.5 * (A + Bm)  # weight averaging without alignment changes the function
    gap = (model.forward(plain, x) - model.forward(A, x)).abs().max()
    assert float(gap) > 1e-2

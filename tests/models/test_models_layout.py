"""ParamLayout: views, offsets shared with the digits problems, permutable unit groups."""

from __future__ import annotations

import pytest
import torch
from digits_reference import Layout
from digits_reference import init_params as reference_init
from model_helpers import BUILTINS, build, inputs_for, random_state
from torch import nn

import fedopt.problems as P
from fedopt.errors import ConfigError
from fedopt.models import BatchedModel, ParamLayout, PermGroup, UnitAxis, digits_mlp, unit_group


@pytest.mark.parametrize("hidden", [(), 7, (5, 3)])
def test_digits_mlp_layout_is_the_digits_problem_layout(hidden: int | tuple) -> None:
    model = digits_mlp(hidden)
    widths = [hidden] if isinstance(hidden, int) else list(hidden)
    sizes = list(zip([64, *widths], [*widths, 10], strict=True))
    ref = Layout(sizes)
    assert model.dim == ref.dim
    weights = [e for e in model.layout.params if e.name.endswith("weight")]
    biases = [e for e in model.layout.params if e.name.endswith("bias")]
    for (w_off, b_off), (fan_in, fan_out), w, b in zip(
        ref.offsets, sizes, weights, biases, strict=True
    ):
        assert (w.offset, w.shape, b.offset, b.shape) == (
            w_off,
            (fan_in, fan_out),
            b_off,
            (fan_out,),
        )
    X = torch.randn(3, ref.dim)
    views = model.layout.unflatten(X)
    for (W, bias), w, b in zip(ref.unpack(X), weights, biases, strict=True):
        assert torch.equal(views[w.name], W) and torch.equal(views[b.name], bias)


def test_init_params_equal_the_digits_oracle_init() -> None:
    config = P.parse_problem_config({"name": "digits_mlp", "hidden": 9, "same_init": False})
    oracle = P.PROBLEMS.get("digits_mlp").build(
        config, seed=4, data_ranks=torch.arange(3), num_data_nodes=3, device=torch.device("cpu")
    )
    assert oracle.layout.entry("fc1.weight").shape == (64, 9)
    model = digits_mlp(9)
    ref = reference_init(Layout([(64, 9), (9, 10)]), 4, torch.arange(3))
    assert not torch.equal(ref[0], ref[1])
    assert torch.equal(model.init_params(4, torch.arange(3)), ref)
    assert torch.equal(oracle.init_params(torch.arange(3)), ref)


def test_views_share_storage_and_flatten_inverts_them() -> None:
    model = build("digits_cnn_bn")
    X, B = random_state(model, 3)
    views = model.layout.unflatten(X)
    for e in model.layout.params:
        v = views[e.name]
        assert v.shape == (3, *e.shape)
        assert v.untyped_storage().data_ptr() == X.untyped_storage().data_ptr()
    assert torch.equal(model.layout.flatten(views), X)
    assert torch.equal(model.layout.flatten_buffers(model.layout.unflatten_buffers(B)), B)
    S = model.layout.pack(X, B)
    assert S.shape == (3, model.dim + model.buf_dim)
    X2, B2 = model.layout.unpack(S)
    assert torch.equal(X2, X) and torch.equal(B2, B)
    views["bn1.weight"][1, 0] = 42.0  # a view writes through
    assert float(X[1, model.layout.entry("bn1.weight").offset]) == 42.0


def test_buffer_row_holds_running_stats_and_no_counters() -> None:
    model = build("digits_cnn_bn")
    names = [e.name for e in model.layout.buffers]
    assert names == ["bn1.running_mean", "bn1.running_var", "bn2.running_mean", "bn2.running_var"]
    B = model.init_buffers(2)
    stats = model.layout.unflatten_buffers(B)
    assert not stats["bn1.running_mean"].any() and bool((stats["bn2.running_var"] == 1).all())
    sd = model.layout.state_dict(*random_state(model, 2), 1)
    assert "bn1.num_batches_tracked" in sd  # from the template, so load_state_dict accepts it


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_permuting_any_group_leaves_every_node_function_unchanged(name: str) -> None:
    model = build(name)
    k = 3
    X, B = random_state(model, k)
    x, _ = inputs_for(model, k, 6)
    g = torch.Generator().manual_seed(7)
    ref = model.forward(X, x, B)
    ref_train = model.forward(X, x, None if B is None else B.clone(), train=True)
    assert model.layout.groups
    for group in model.layout.groups.values():
        perm = torch.stack([torch.randperm(group.units, generator=g) for _ in range(k)])
        assert not bool((perm == torch.arange(group.units)).all())
        Xp, Bp = model.permute(X, group.name, perm, B)
        assert not torch.equal(Xp, X)
        torch.testing.assert_close(model.forward(Xp, x, Bp), ref, rtol=0, atol=1e-12)
        out = model.forward(Xp, x, None if Bp is None else Bp.clone(), train=True)
        torch.testing.assert_close(out, ref_train, rtol=0, atol=1e-12)
        # the activations at the group's point are permuted the same way
        act = model.capture(X, x, B, [group.name])[group.name]
        act_p = model.capture(Xp, x, Bp, [group.name])[group.name]
        torch.testing.assert_close(act_p, act.gather(2, perm.unsqueeze(1).expand_as(act)))
        # the inverse permutation restores the rows
        Xb, Bb = model.permute(Xp, group.name, perm.argsort(dim=1), Bp)
        assert torch.equal(Xb, X) and (B is None or torch.equal(Bb, B))


def test_mismatched_permutable_units_are_refused_naming_both_tensors() -> None:
    module = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    group = PermGroup(
        "h",
        6,
        (UnitAxis("0.weight", 0), UnitAxis("0.bias", 0), UnitAxis("2.weight", 0)),
    )
    with pytest.raises(ConfigError) as err:
        ParamLayout.from_module(module, [group])
    msg = str(err.value)
    assert "'h'" in msg and "'0.weight' axis 0 has 6 units" in msg
    assert "'2.weight' axis 0 has 3 positions" in msg and "expected 6" in msg
    # the same mistake through unit_group: a consumer whose input is not the producer's output
    wide = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3), nn.Linear(3, 2))
    bad = unit_group(wide, "h", produce=["0"], consume=["3"])
    with pytest.raises(ConfigError, match=r"'3.weight' axis 1 has 3 positions.*expected 6"):
        BatchedModel(wide, [bad])
    flat = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 9, 2))
    unit_group(flat, "c", produce=["0"], consume=[("2", 9)])  # a block of 9 positions: fine
    with pytest.raises(ConfigError, match=r"'2.weight' axis 1 has 36 positions \(block 4\)"):
        BatchedModel(flat, [unit_group(flat, "c", produce=["0"], consume=[("2", 4)])])


def test_other_bad_groups_are_refused() -> None:
    module = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    with pytest.raises(ConfigError, match=r"no layer 'fc9'.*name one of: 0, 1, 2"):
        unit_group(module, "h", produce=["fc9"], consume=["2"])
    with pytest.raises(ConfigError, match=r"'1' \(ReLU\) cannot produce"):
        unit_group(module, "h", produce=["1"], consume=["2"])
    with pytest.raises(ConfigError, match=r"tensor '0.wieght'"):
        ParamLayout.from_module(module, [PermGroup("h", 6, (UnitAxis("0.wieght", 0),))])
    with pytest.raises(ConfigError, match=r"no axis 2"):
        ParamLayout.from_module(module, [PermGroup("h", 6, (UnitAxis("0.weight", 2),))])
    twice = PermGroup("h", 6, (UnitAxis("0.bias", 0), UnitAxis("0.bias", 0)))
    with pytest.raises(ConfigError, match=r"twice"):
        ParamLayout.from_module(module, [twice])
    g = unit_group(module, "h", produce=["0"], consume=["2"], point="nope")
    with pytest.raises(ConfigError, match=r"captures at 'nope'"):
        BatchedModel(module, [g])
    model = BatchedModel(module, [unit_group(module, "h", produce=["0"], consume=["2"])])
    with pytest.raises(ConfigError, match=r"no permutable group 'x'.*known groups: h"):
        model.permute(torch.zeros(2, model.dim), "x", torch.arange(6))
    with pytest.raises(ValueError, match=r"permutation"):
        model.permute(torch.zeros(2, model.dim), "h", torch.zeros(6))

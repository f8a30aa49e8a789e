"""Per-node BatchNorm buffers: the reset pass against torch's cumulative average, refusals."""

from __future__ import annotations

import pytest
import torch
from model_helpers import build, inputs_for, node_module, random_state
from torch import nn

from fedopt.errors import ConfigError
from fedopt.models import require_reset_data, reset_bn


def _torch_reset(model, X, i: int, batches: list[torch.Tensor]) -> torch.Tensor:
    """Node ``i``'s buffer row after torch's own reset: momentum=None, train mode, no_grad."""
    m = node_module(model, X, None if not model.buf_dim else model.init_buffers(len(X)), i)
    for sub in m.modules():
        if isinstance(sub, nn.BatchNorm2d):
            sub.momentum = None
            sub.reset_running_stats()
    m.train()
    with torch.no_grad():
        for xb in batches:
            m(xb)
    return model.layout.flatten_buffers({n: b[None] for n, b in m.named_buffers()})[0]


def test_reset_equals_torch_cumulative_average_per_node() -> None:
    model = build("digits_cnn_bn")
    X, B = random_state(model, 3)
    data, _ = inputs_for(model, 3, 23)
    before = B.clone()
    new = reset_bn(model, X, data, batch_size=8, B=B)  # batches of 8, 8 and 7
    assert torch.equal(B, before)  # the input rows are left alone
    for i in range(3):
        ref = _torch_reset(model, X, i, [data[i, :8], data[i, 8:16], data[i, 16:]])
        torch.testing.assert_close(new[i], ref, rtol=0, atol=1e-12)
    # the same batches given as a sequence
    again = reset_bn(model, X, [data[:, :8], data[:, 8:16], data[:, 16:]])
    torch.testing.assert_close(again, new, rtol=0, atol=0)
    # eval outputs after the reset are torch's
    out = model.forward(X, data[:, :4], new)
    for i in range(3):
        m = node_module(model, X, new, i).eval()
        torch.testing.assert_close(out[i], m(data[i, :4]), rtol=0, atol=1e-12)
    # the modules' momenta are restored
    assert all(model.module.get_submodule(n).momentum == 0.1 for n in model.bn_layers)


def test_reset_groups_padded_nodes_by_sample_count() -> None:
    model = build("digits_cnn_bn")
    X, B = random_state(model, 4)
    data, _ = inputs_for(model, 4, 12)
    counts = torch.tensor([12, 5, 12, 0])
    new = reset_bn(model, X, data, batch_size=4, counts=counts, B=B)
    for i in (0, 1, 2):
        c = int(counts[i])
        batches = [data[i, a : min(a + 4, c)] for a in range(0, c, 4)]
        torch.testing.assert_close(new[i], _torch_reset(model, X, i, batches), rtol=0, atol=1e-12)
    assert torch.equal(new[3], B[3])  # no samples: statistics kept


def test_train_steps_move_running_stats_with_the_module_momentum() -> None:
    model = build("digits_cnn_bn")
    X, B = random_state(model, 2)
    x, y = inputs_for(model, 2, 6)
    B_run = B.clone()
    model.grad(X, x, y, B_run, train=True)
    model.grad(X, x, y, B_run, train=True)
    for i in range(2):
        m = node_module(model, X, B, i).train()
        m(x[i])
        m(x[i])
        ref = model.layout.flatten_buffers({n: b[None] for n, b in m.named_buffers()})[0]
        torch.testing.assert_close(B_run[i], ref, rtol=0, atol=1e-12)
    B_eval = B.clone()
    model.grad(X, x, y, B_eval)  # eval mode leaves them alone
    assert torch.equal(B_eval, B)


def test_batchnorm_without_data_to_reset_on_is_refused() -> None:
    model = build("digits_cnn_bn")
    X, _ = random_state(model, 2)
    for data in (None, [], torch.zeros(2, 0, 64)):
        with pytest.raises(ConfigError, match=r"BatchNorm layers \(bn1, bn2\).*no data to reset"):
            reset_bn(model, X, data)
    with pytest.raises(ConfigError, match=r"problem 'quadratic' has no data.*without BatchNorm"):
        require_reset_data(model, None, "problem 'quadratic'")
    require_reset_data(build("digits_mlp"), None)  # nothing to reset: fine
    require_reset_data(model, torch.zeros(2, 3, 64))

"""``fedopt bench diff2``: its three per-sample-gradient variants compute the same sums."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from fedopt.bench.diff2 import _oracle, func_loop, opacus_loop


def test_the_torch_func_loop_equals_the_batched_oracle() -> None:
    oracle = _oracle(3, 0)
    rows = torch.arange(3)
    X = oracle.init_params(rows)
    ref = oracle.clipped_grad_sum(X, rows, 0.1)
    assert torch.allclose(func_loop(oracle, X, 0.1), ref, rtol=0, atol=1e-12)


@pytest.mark.skipif(
    importlib.util.find_spec("opacus") is None, reason="opacus not installed (benchmark only)"
)
def test_the_opacus_loop_equals_the_batched_oracle() -> None:
    oracle = _oracle(2, 0)
    rows = torch.arange(2)
    X = oracle.init_params(rows)
    run = opacus_loop(oracle, X, 0.1)
    assert run is not None
    assert torch.allclose(run(), oracle.clipped_grad_sum(X, rows, 0.1), rtol=0, atol=1e-12)

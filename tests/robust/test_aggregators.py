"""Robust aggregators: hand-computed cases, batching, layouts, dtypes and bound errors."""

from __future__ import annotations

import math

import pytest
import torch

from fedopt.errors import ConfigError
from fedopt.robust import (
    AGGREGATORS,
    NNA,
    Aggregator,
    CenteredClipping,
    GeometricMedian,
    Krum,
    Mean,
    Median,
    MultiKrum,
    SelfCenteredClipping,
    TrimmedMean,
    make_aggregator,
)

F64 = torch.float64


def t(rows, dtype=F64):
    return torch.tensor(rows, dtype=dtype)


def line(xs):
    """Points on the first axis of R^2, one receiver: shape [1, m, 2]."""
    return t([[[x, 0.0] for x in xs]])


# --------------------------------------------------------------- hand values
def test_nna_removes_two_planted_outliers():
    v = t([[[0, 0], [1, 0], [0, 1], [1, 1], [100, 100], [-50, 80]]])
    out = NNA(f=2).aggregate(v, pivot=v[:, 0])
    assert torch.equal(out, t([[0.5, 0.5]]))


def test_nna_selection_depends_on_pivot_and_ties_keep_earlier_row():
    v = line([0, 2, 4, 6, 8]).expand(3, -1, -1)
    pivots = t([[0, 0], [8, 0], [4, 0]])
    out = NNA(f=1).aggregate(v, pivots)
    # pivot 0 keeps {0,2,4,6}; pivot 8 keeps {2,4,6,8}; pivot 4 has a tie at distance 4
    # between rows 0 and 4 and keeps the earlier row 0.
    assert torch.equal(out[:, 0], t([3.0, 5.0, 3.0]))


def test_nna_below_its_bound_averages_the_m_minus_f_nearest_as_the_reference_does():
    # m = 4 <= 2f: outside the robustness bound, but defined (MoNNA's reference runs it)
    v = torch.tensor([[[0.0], [1.0], [5.0], [-3.0]]], dtype=torch.float64)
    out = NNA(f=2).aggregate(v, pivot=v[:, 0])
    assert out.item() == 0.5  # the pivot and its nearest other vector


def test_nna_keeps_pivot_even_when_it_is_the_outlier():
    v = line([0, 1, 2, 3, 50])
    out = NNA(f=2).aggregate(v, pivot=v[:, 4])
    # distances from 50: 0, 47, 48, 49, 50 -> keeps 50, 3, 2
    assert out[0, 0].item() == pytest.approx((50 + 3 + 2) / 3, abs=1e-12)


def test_trimmed_mean_hand_value():
    v = t([[[1, 5], [2, 4], [3, 3], [100, 2], [-50, 1]]])
    out = TrimmedMean(f=1).aggregate(v)
    assert torch.allclose(out, t([[2.0, 3.0]]), atol=1e-15)


def test_median_odd_and_even():
    odd = t([[[3.0], [1.0], [2.0]]])
    even = t([[[4.0], [1.0], [3.0], [2.0]]])
    assert Median(f=1).aggregate(odd).item() == 2.0
    assert Median(f=1).aggregate(even).item() == 2.5


def test_geometric_median_one_weiszfeld_step_by_hand():
    v = t([[[3, 0], [0, 4]]])
    out = GeometricMedian(iterations=1).aggregate(v)
    # from z = 0: weights 1/3 and 1/4 -> ((1, 0) + (0, 1)) / (7/12)
    assert torch.allclose(out, t([[12 / 7, 12 / 7]]), atol=1e-14)


def test_geometric_median_smoothing_floor():
    v = t([[[0.01, 0.0], [-0.03, 0.0]]])
    out = GeometricMedian(nu=0.1, iterations=3).aggregate(v)
    # both distances stay below nu, so both weights are 1/nu: the plain mean
    assert torch.allclose(out, t([[-0.01, 0.0]]), atol=1e-15)


def test_geometric_median_of_symmetric_points_is_the_centre():
    c = t([3.0, -2.0])
    offsets = t([[1, 0], [-1, 0], [0, 2], [0, -2], [2, 2], [-2, -2]])
    v = (c + offsets).unsqueeze(0)
    out = GeometricMedian(f=2, iterations=200).aggregate(v)
    assert torch.allclose(out[0], c, atol=1e-9)


def test_scc_three_iterations_by_hand():
    v = line([0, 1, 10])
    out = SelfCenteredClipping(f=1, tau=2.0).aggregate(v, pivot=v[:, 0])
    # v: 0 -> (0 + 1 + 2)/3 = 1 -> 1 + (-1 + 0 + 2)/3 = 4/3 -> 4/3 + (-4/3 - 1/3 + 2)/3 = 13/9
    assert torch.allclose(out, t([[13 / 9, 0.0]]), atol=1e-14)


def test_centered_clipping_default_center_is_zero():
    v = line([0, 1, 10])
    out = CenteredClipping(f=1, tau=2.0, iterations=1).aggregate(v)
    assert torch.allclose(out, t([[1.0, 0.0]]), atol=1e-15)
    around = CenteredClipping(f=1, tau=2.0, iterations=1).aggregate(v, pivot=t([[10.0, 0.0]]))
    # center 10: diffs -10 -> -2, -9 -> -2, 0 -> 10 + (-4)/3
    assert torch.allclose(around, t([[10 - 4 / 3, 0.0]]), atol=1e-14)


def test_krum_scores_and_choice():
    v = line([0, 1, 2.5, 3, 100])
    scores = Krum(f=1).scores(v)
    # q = m - f - 2 = 2 nearest others, squared distances summed
    want = t([[7.25, 3.25, 2.5, 4.25, 97.0**2 + 97.5**2]])
    assert torch.allclose(scores, want, atol=1e-12)
    assert Krum(f=1).aggregate(v)[0, 0].item() == 2.5


def test_multi_krum_averages_best_scores():
    v = line([0, 1, 2.5, 3, 100])
    assert MultiKrum(f=1, m_keep=3).aggregate(v)[0, 0].item() == pytest.approx(6.5 / 3)
    # default m_keep = m - f = 4
    assert MultiKrum(f=1).aggregate(v)[0, 0].item() == pytest.approx(1.625)


def test_mean_hand_value():
    v = t([[[1, 2], [3, 6]], [[0, 0], [-2, 2]]])
    assert torch.equal(Mean().aggregate(v), t([[2, 4], [-1, 1]]))


# ------------------------------------------------------- batching and layouts
def _all(f: int) -> list[Aggregator]:
    return [
        Mean(f=f),
        NNA(f=f),
        TrimmedMean(f=f),
        Median(f=f),
        GeometricMedian(f=f),
        CenteredClipping(f=f, tau=1.5, iterations=2),
        SelfCenteredClipping(f=f, tau=1.5),
        Krum(f=f),
        MultiKrum(f=f, m_keep=4),
    ]


def _data(r=5, m=11, d=13, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(r, m, d, generator=g, dtype=F64)
    v[:, -2:] += 25.0 * torch.randn(r, 2, d, generator=g, dtype=F64)  # outliers
    return v.to(dtype), v[:, 0].clone().to(dtype)


@pytest.mark.parametrize("agg", _all(2), ids=lambda a: a.name)
def test_batched_equals_one_receiver_at_a_time(agg):
    v, pivot = _data()
    together = agg.aggregate(v, pivot)
    alone = torch.cat([agg.aggregate(v[k : k + 1], pivot[k : k + 1]) for k in range(v.shape[0])])
    assert together.shape == (5, 13)
    assert torch.allclose(together, alone, rtol=0, atol=1e-12)


@pytest.mark.parametrize("agg", _all(2), ids=lambda a: a.name)
def test_pool_layout_equals_dense_layout(agg):
    g = torch.Generator().manual_seed(3)
    pool = torch.randn(8, 6, generator=g, dtype=F64)
    pool[7] = 40.0  # one far vector, sent in several copies
    index = torch.stack(
        [torch.cat([torch.randperm(7, generator=g)[:5], torch.full((2,), 7)]) for _ in range(4)]
    )
    pivot = pool[index[:, 0]]
    dense = agg.aggregate(pool[index], pivot)
    pooled = agg.aggregate_pool(pool, index, pivot)
    assert torch.allclose(dense, pooled, rtol=0, atol=1e-12)


@pytest.mark.parametrize("agg", _all(2), ids=lambda a: a.name)
def test_float32_matches_float64(agg):
    v64, p64 = _data(seed=1)
    out32 = agg.aggregate(v64.float(), p64.float())
    assert out32.dtype == torch.float32
    assert torch.allclose(out32.double(), agg.aggregate(v64, p64), rtol=1e-5, atol=1e-4)


def test_robust_rules_ignore_far_outliers():
    v, pivot = _data(r=3, m=11, d=4, seed=2)
    v[:, -2:] = 1e6
    for agg in (NNA(f=2), TrimmedMean(f=2), Median(f=2), Krum(f=2), MultiKrum(f=2)):
        assert agg.aggregate(v, pivot).abs().max().item() < 5.0, agg.name


def test_registry_names_and_factory():
    assert list(AGGREGATORS) == [
        "centered_clipping",
        "geometric_median",
        "krum",
        "mean",
        "median",
        "multi_krum",
        "nna",
        "scc",
        "trimmed_mean",
    ]
    agg = make_aggregator("scc", f=3, tau=5.0)
    assert (agg.f, agg.tau, agg.iterations) == (3, 5.0, 3)
    assert make_aggregator("geometric_median") == GeometricMedian(f=0, nu=0.1, iterations=3)


# ---------------------------------------------------------------- bad input
def test_bound_errors_name_bound_values_and_fix():
    with pytest.raises(ConfigError, match=r"nna needs at least 5 .*m > 2f.*m=4 with f=2"):
        NNA(f=2).check(4)
    with pytest.raises(ConfigError, match=r"nna is defined only for at least 3 .*m=2 with f=2"):
        NNA(f=2).aggregate(torch.zeros(1, 2, 3), torch.zeros(1, 3))
    with pytest.raises(ConfigError, match=r"trimmed_mean .*m > 2f.*m=6 with f=3"):
        TrimmedMean(f=3).check(6)
    with pytest.raises(ConfigError, match=r"krum needs at least 7 .*m > 2f \+ 2.*m=6 with f=2"):
        Krum(f=2).check(6)
    with pytest.raises(ConfigError, match=r"m_keep.*at most m − f = 7.*m_keep=8"):
        MultiKrum(f=2, m_keep=8).check(9)
    NNA(f=2).check(5)
    Krum(f=2).check(7)
    Krum().check(4, f=0)


def test_hyperparameter_errors():
    with pytest.raises(ConfigError, match=r"algorithm.aggregator.f: .*-1"):
        NNA(f=-1)
    with pytest.raises(ConfigError, match=r"algorithm.aggregator.tau"):
        SelfCenteredClipping(tau=0.0)
    with pytest.raises(ConfigError, match=r"algorithm.aggregator.nu"):
        GeometricMedian(nu=-1.0)
    with pytest.raises(ConfigError, match=r"algorithm.aggregator.iterations"):
        CenteredClipping(iterations=0)
    with pytest.raises(ConfigError, match=r"krum keeps exactly one"):
        Krum(m_keep=2)
    with pytest.raises(ConfigError, match=r"unknown aggregator 'nnaa'.*Did you mean 'nna'"):
        make_aggregator("nnaa")
    with pytest.raises(ConfigError, match=r"nna has no parameter 'tau'.*Fix: use only f"):
        make_aggregator("nna", tau=1.0)


def test_input_shape_errors():
    with pytest.raises(ConfigError, match=r"nna needs a pivot"):
        NNA(f=1).aggregate(torch.zeros(1, 5, 2))
    with pytest.raises(ConfigError, match=r"pivot must have shape \[r, d\] = \[1, 2\]"):
        NNA(f=1).aggregate(torch.zeros(1, 5, 2), torch.zeros(2))
    with pytest.raises(ConfigError, match=r"shape \[r, m, d\]"):
        Mean().aggregate(torch.zeros(5, 2))
    with pytest.raises(ConfigError, match=r"floating-point"):
        Mean().aggregate(torch.zeros(1, 5, 2, dtype=torch.int64))
    with pytest.raises(ConfigError, match=r"values must lie in \[0, 3\)"):
        Mean().aggregate_pool(torch.zeros(3, 2), torch.tensor([[0, 3]]))


def test_krum_scores_count_duplicate_copies():
    # receiver holds 0, 1, 2 and two copies of 10 (f = 0, q = m - 2 = 3 nearest others)
    pool = t([[0.0], [1.0], [2.0], [10.0]])
    index = torch.tensor([[0, 1, 2, 3, 3]])
    out = MultiKrum(f=0, m_keep=2).aggregate_pool(pool, index)
    # scores: 0 -> 1+4+100 = 105, 1 -> 1+1+81 = 83, 2 -> 4+1+64 = 69, 10 -> 0+64+81 = 145
    assert out.item() == pytest.approx((1.0 + 2.0) / 2)
    dense = MultiKrum(f=0, m_keep=2).aggregate(pool[index])
    assert torch.equal(out, dense)


def test_geometric_median_is_robust_to_far_copies():
    v = line([-1, 0, 1, 1e4, 1e4])
    out = GeometricMedian(f=2, iterations=50).aggregate(v)
    # on a line the geometric median is the median, here the third point, 1
    assert abs(out[0, 0].item() - 1.0) < 1e-2
    assert not math.isnan(out.sum().item())

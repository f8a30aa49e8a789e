"""Sanity numbers of Ferret's bases and projections (spec ferret.md section 3.11)."""

import math

import pytest
import torch

from fedopt.ferret import bases
from fedopt.ferret.blocks import allocate_paper, allocate_reference, partition


@pytest.mark.parametrize(
    ("d", "expected"), [(10, 3.289102e-2), (1000, 3.332889e-4), (100_000, 3.333329e-6)]
)
def test_rho_closed_form_matches_the_spec_and_the_generator(d: int, expected: float) -> None:
    assert bases.rho(d) == pytest.approx(expected, rel=2e-7)
    k = bases.keys(0, "test/rho", (d,), max(1, 1_000_000 // d))
    V = bases.dense(k, d)
    assert V.abs().max() <= 1 / math.sqrt(d)
    assert V.square().mean().item() == pytest.approx(bases.rho(d), rel=5e-3)
    assert abs(V.mean().item()) < 3 * math.sqrt(bases.rho(d) / V.numel())


def test_inverse_cdf_polynomial_equals_erfinv_to_double_precision() -> None:
    words = bases.rng.words(bases.keys(1, "test/icdf", (), 4), 0, 20_000)
    for d in (1, 3, 10, 1000):
        x = bases.entries(words, d)
        r = (bases.rng._srl(words, 12).sub(1 << 51).double() + 0.5) * 2.0**-51
        ref = math.sqrt(2) * torch.special.erfinv(math.erf(1 / math.sqrt(2 * d)) * r)
        assert (x - ref).abs().max().item() < 4e-16


def test_chunks_give_the_dense_bits_whatever_the_budget() -> None:
    k = bases.keys(3, "test/chunks", (7, 2), 37)
    V = bases.dense(k, 1001)
    for budget in (20, 500, 4096, 1 << 20):  # rows split, columns split, one piece
        out = torch.empty_like(V)
        for rs, cs, piece in bases.chunks(k, 1001, budget):
            out[rs, cs] = piece
        assert torch.equal(out, V)
    delta = torch.randn(1001, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(bases.project(k, delta), V @ delta, rtol=0, atol=1e-13)
    g = torch.randn(37, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(bases.reconstruct(k, 1001, g), g @ V, rtol=0, atol=1e-13)
    assert torch.allclose(bases.gram(k, 1001), V @ V.T, rtol=0, atol=1e-13)


def _trials(d: int, K: int, R: int) -> tuple[torch.Tensor, torch.Tensor]:
    delta = torch.randn(d, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    recs = torch.empty(R, d, dtype=torch.float64)
    for r in range(R):
        k = bases.keys(0, "test/unbiased", (r,), K)
        recs[r] = bases.reconstruct(k, d, bases.project(k, delta) / (bases.rho(d) * K))
    return delta, recs


def test_unbiasedness_and_cosine_law_at_d2000_k100() -> None:
    d, K, R = 2000, 100, 400
    delta, recs = _trials(d, K, R)
    rel = ((recs.mean(0) - delta).norm() / delta.norm()).item()
    assert rel == pytest.approx(math.sqrt(d / (K * R)), rel=0.08)  # spec: 0.221 vs 0.224
    cos = torch.nn.functional.cosine_similarity(recs, delta.unsqueeze(0), dim=1).mean().item()
    assert cos == pytest.approx(math.sqrt(K / (K + d)), rel=0.03)  # spec: 0.2180 vs 0.2182


def test_least_squares_is_exact_at_k_equal_d_and_fast_is_not() -> None:
    d = 60
    k = bases.keys(2, "test/exact", (), d)
    delta = torch.randn(d, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    rec = bases.reconstruct(k, d, bases.exact_coefficients(k, delta))
    assert ((rec - delta).norm() / delta.norm()).item() < 1e-11
    fast = bases.reconstruct(k, d, bases.project(k, delta) / (bases.rho(d) * d))
    assert ((fast - delta).norm() / delta.norm()).item() > 0.3  # eq. 7 at K = d: MSE ~ 1


def test_linearity_average_of_reconstructions_is_reconstruction_of_average() -> None:
    d, K = 500, 20
    k = bases.keys(4, "test/lin", (), K)
    gs = torch.randn(5, K, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    avg_rec = torch.stack([bases.reconstruct(k, d, g) for g in gs]).mean(0)
    rec_avg = bases.reconstruct(k, d, gs.mean(0))
    assert torch.allclose(avg_rec, rec_avg, rtol=0, atol=1e-15)


def test_blocks_by_the_median_rule() -> None:
    # digits_mlp with hidden 16: W1 1024, b1 16, W2 160, b2 10 -> median 88, limit 79.2
    entries = [("0.W", 0, 1024), ("0.b", 1024, 16), ("1.W", 1040, 160), ("1.b", 1200, 10)]
    got = [(b.start, b.stop) for b in partition(entries)]
    assert got == [(0, 1024), (1024, 1040), (1040, 1200), (1200, 1210)]
    small = [("a", 0, 100), ("n1", 100, 4), ("n2", 104, 4), ("b", 108, 100)]
    assert [b.names for b in partition(small)] == [("a",), ("n1", "n2"), ("b",)]


def test_allocations() -> None:
    dims = [1000, 10, 200]
    counts = allocate_paper([1.0, 1.0, 0.0], dims, 50)
    assert sum(counts) == 50 and counts[2] == 0 and counts[0] > counts[1]
    assert allocate_paper([1.0, 1.0, 1.0], dims, 1210) == dims  # K = d: every block full
    assert allocate_paper([0.0, 0.0, 0.0], dims, 121) == [100, 1, 20]
    assert allocate_reference([2.0, 1.0, 0.01], dims, 8) == [8, 4, 2]

"""``fedopt bench ferret`` measures the same sizes every way (tiny sizes here)."""

import pytest
import torch

from fedopt.bench import ferret as bench
from fedopt.cli import main


def test_fill_dot_reference_is_the_product_over_the_same_chunks() -> None:
    x = torch.linspace(-1, 2, 1001, dtype=torch.float64)
    out = bench._fill_dot(7, 1001, x, budget=50)
    assert torch.allclose(
        out, torch.full((7,), 0.5 * float(x.sum()), dtype=torch.float64), rtol=1e-12
    )


def test_bench_record(capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "ferret", "--dim", "2000", "--bases", "8", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert '"entries": 16000' in out and '"ratio_to_fill_dot"' in out
    rec = bench.bench_ferret(dim=3000, bases_count=5, repeats=1)
    assert rec["entries"] == 15000 and rec["ratio_to_fill_dot"]["fill_dot"] == 1.0
    assert set(rec["entries_per_s"]) == {"project", "reconstruct", "fill_dot", "torch_trunc_normal"}

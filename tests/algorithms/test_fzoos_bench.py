"""``fedopt bench fzoos``: the batched and the scikit-learn ways compute the same round."""

from __future__ import annotations

import contextlib
import io
import json
import warnings

import numpy as np
import pytest
import torch

from fedopt.bench import fzoos as bench
from fedopt.cli import main
from fedopt.zo import rff


@pytest.mark.parametrize("kernel", ["se", "matern52"])
def test_both_ways_give_the_same_answers(kernel: str) -> None:
    # small sizes, both neighbourhoods shorter than the history (nearest points matter)
    inp = bench.make_inputs(clients=3, dim=12, history=90, local_steps=4, features=400)
    s = {**bench.SETTINGS, "kernel": kernel, "gp_neighbourhood": 40, "rff_neighbourhood": 60}
    s.update(local_keep=5, agg_keep=20)
    feats = rff.features(0, 12, 400, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = {**bench.batched_gp(inp, s), **bench.batched_rff(inp, s, feats)}
        r = {**bench.reference_gp(inp, s), **bench.reference_rff(inp, s, feats)}
    agree = bench.compare(b, r, s, 12)
    assert agree["grad_rel"] < 1e-8 and agree["correction_rel"] < 1e-8
    assert agree["theta_rel"] < 1e-8 and agree["trace_rel_to_prior"] < 1e-8
    assert agree["picks_differing"] == 0
    assert b["grads"].shape == (3, 4, 12) and b["scores"].shape == (3, 3, 100)
    assert np.array_equal(b["span"].numpy(), r["span"])


def test_bench_fzoos_prints_one_json_line() -> None:
    buf = io.StringIO()
    args = ["bench", "fzoos", "--clients", "2", "--dim", "8", "--features", "64"]
    with contextlib.redirect_stdout(buf):
        assert main([*args, "--history", "60", "--repeats", "1"]) == 0
    (line,) = buf.getvalue().strip().splitlines()
    rec = json.loads(line)
    assert rec["workload"] == "fzoos" and rec["clients"] == 2 and rec["features"] == 64
    assert rec["round_s"]["batched"] > 0 and rec["speedup"]["round"] > 0
    assert rec["agreement"]["grad_rel"] < 1e-8 and rec["agreement"]["picks_differing"] == 0


def test_bench_refuses_a_device_it_cannot_use(capsys) -> None:
    from fedopt.bench.device import bench_device
    from fedopt.errors import ConfigError

    assert bench_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="--device: 'tpu' is not a torch device"):
        bench_device("tpu")
    if not torch.cuda.is_available():
        args = ["bench", "fzoos", "--clients", "2", "--dim", "8", "--device", "cuda"]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "--device: 'cuda'" in err and "use --device cpu" in err
        assert "Traceback" not in err and "internal error" not in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_batched_way_on_the_gpu_gives_the_cpu_answers() -> None:
    rec = bench.bench_fzoos(clients=3, dim=12, history=90, features=400, repeats=1, device="cuda")
    assert rec["device"].startswith("cuda")
    assert rec["agreement"]["grad_rel"] < 1e-8 and rec["agreement"]["theta_rel"] < 1e-8
    assert rec["agreement"]["picks_differing"] == 0

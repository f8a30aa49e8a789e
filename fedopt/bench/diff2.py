"""``fedopt bench diff2``: per-sample clipped gradients per second, and a DIFF2 round.

The DIFF2 paper's setting (spec diff2.md §4.6): ``fc_10`` regression, P = 10 workers,
16,512 training rows split round-robin (1,651-1,652 per worker), ``dim = 101``,
float64. Part one times what a restart round asks of every worker, the sum over its
samples of the per-sample gradients clipped at ``C``, three ways, alternated in one
process so that they share the machine's state:

* ``fedopt``: :meth:`Fc10Oracle.clipped_grad_sum`, batched over nodes *and* samples
  (explicit backpropagation, ghost norms, no ``[k, n, dim]`` tensor);
* ``func_loop``: a plain ``torch.func`` loop over the nodes: ``vmap(grad)`` over one
  node's samples, clip, sum (what one would write first);
* ``opacus``: opacus' ``GradSampleModule`` hooks on one ``nn.Module`` per node (loop
  over nodes), then clip and sum; only when opacus is installed (it is not a fedopt
  dependency; ``pip install --no-deps opacus``).

Each gives per-sample gradients per second (``P n / seconds``) and its ratio to
``fedopt``. Part two runs DIFF2-GD through the engine (as ``fedopt run`` does, with
metering and the ledger) and reports the median wall milliseconds of a round.
"""

from __future__ import annotations

import itertools
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.func import functional_call, grad, vmap

from fedopt.problems import PROBLEMS, parse_problem_config
from fedopt.problems._common import CLIP_EPS
from fedopt.problems._fc10_net import fc10_module


def _oracle(nodes: int, seed: int) -> Any:
    config = parse_problem_config({"name": "fc10_regression", "data_seed": 0})
    return PROBLEMS.get("fc10_regression").build(
        config,
        seed=seed,
        data_ranks=torch.arange(nodes),
        num_data_nodes=nodes,
        device=torch.device("cpu"),
    )


def _clip_sum(G: torch.Tensor, clip: float) -> torch.Tensor:
    """``sum_s clip_C(g_s)`` of ``G [n, dim]``."""
    f = (clip / (G.norm(dim=1) + CLIP_EPS)).clamp(max=1.0)
    return (G * f.unsqueeze(1)).sum(0)


def func_loop(oracle: Any, X: torch.Tensor, clip: float) -> torch.Tensor:
    """A ``torch.func`` loop over nodes: per-sample gradients of one node, clip, sum."""
    module = fc10_module(oracle.config.features, oracle.config.hidden).to(X.dtype)
    layout = oracle.layout

    def loss(p: dict, a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (functional_call(module, p, (a.unsqueeze(0),))[0, 0] - y).square()

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))
    out = torch.empty_like(X)
    for i in range(X.shape[0]):
        n = int(oracle.num_samples[i])
        params = {k: v[0] for k, v in layout.unflatten(X[i : i + 1]).items()}
        g = per_sample(params, oracle.A[i, :n], oracle.y[i, :n])
        G = torch.cat([g[e.name].reshape(n, -1) for e in layout.params], 1)
        out[i] = _clip_sum(G, clip)
    return out


def opacus_loop(oracle: Any, X: torch.Tensor, clip: float) -> Callable[[], torch.Tensor] | None:
    """opacus' per-sample gradients, one ``GradSampleModule`` per node; None without it."""
    try:
        from opacus import GradSampleModule
    except ImportError:
        return None
    layout = oracle.layout
    modules = []
    for i in range(X.shape[0]):
        m = fc10_module(oracle.config.features, oracle.config.hidden).to(X.dtype)
        with torch.no_grad():
            for name, p in m.named_parameters():
                p.copy_(layout.unflatten(X[i : i + 1])[name][0])
        modules.append(GradSampleModule(m, loss_reduction="sum"))

    def run() -> torch.Tensor:
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        out = torch.empty_like(X)
        for i, gm in enumerate(modules):
            n = int(oracle.num_samples[i])
            gm.zero_grad(set_to_none=True)
            pred = gm(oracle.A[i, :n])[:, 0]
            (pred - oracle.y[i, :n]).square().sum().backward()  # per-sample losses, summed
            G = torch.cat([p.grad_sample.reshape(n, -1) for p in gm.parameters()], 1)
            out[i] = _clip_sum(G, clip)
        return out

    return run


def _time(variants: dict[str, Callable[[], Any]], calls: int, repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, f in variants.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                f()
            times[name].append((time.perf_counter() - t0) / calls)
    return {name: statistics.median(v) for name, v in times.items()}


def _round_ms(rounds: int, threads: int) -> dict[str, float]:
    """Median wall ms per DIFF2 round through the engine (set-up excluded)."""
    from fedopt.config import validate
    from fedopt.engine.compile import compile_plan
    from fedopt.engine.local import run_local

    raw = {
        "name": "bench-diff2",
        "seed": 0,
        "topology": {"name": "star", "n": 11},
        "algorithm": {"name": "diff2", "lr": 0.125, "epsilon": 3.0, "tau": 0.1, "pld": False},
        "problem": {"name": "fc10_regression", "data_seed": 0},
        "stop": {"rounds": rounds},
        "eval": {"every": 10**9},
        "engine": {"threads": threads},
    }
    stamps: list[float] = []
    plan = compile_plan(validate(raw))
    run_local(plan, on_round=lambda *_: stamps.append(time.perf_counter()))
    steps = [b - a for a, b in itertools.pairwise(stamps)]
    return {"median_round_ms": round(1e3 * statistics.median(steps), 3), "rounds": rounds}


def bench_diff2(
    nodes: int = 10, calls: int = 3, repeats: int = 3, threads: int = 1, rounds: int = 40
) -> dict[str, Any]:
    """Per-sample gradients per second of each variant and a DIFF2 round (module doc)."""
    torch.set_num_threads(threads)
    oracle = _oracle(nodes, 0)
    rows = torch.arange(nodes)
    X = oracle.init_params(rows)
    clip = 0.1  # clips most samples at the initial point
    variants: dict[str, Callable[[], torch.Tensor]] = {
        "fedopt": lambda: oracle.clipped_grad_sum(X, rows, clip),
        "func_loop": lambda: func_loop(oracle, X, clip),
    }
    op = opacus_loop(oracle, X, clip)
    if op is not None:
        variants["opacus"] = op
    ref = variants["fedopt"]()
    agree = {k: float((f() - ref).abs().max()) for k, f in variants.items() if k != "fedopt"}
    med = _time(variants, calls, repeats)
    samples = int(oracle.num_samples.sum())
    out: dict[str, Any] = {
        "workload": "diff2",
        "nodes": nodes,
        "samples": samples,
        "dim": oracle.dim,
        "threads": torch.get_num_threads(),
        "per_sample_grads_per_s": {k: round(samples / v) for k, v in med.items()},
        "speedup_of_fedopt": {k: round(v / med["fedopt"], 2) for k, v in med.items()},
        "max_abs_diff_to_fedopt": agree,
    }
    if op is None:
        out["opacus"] = "skipped: opacus is not installed (pip install --no-deps opacus)"
    out.update(_round_ms(rounds, threads))
    return out

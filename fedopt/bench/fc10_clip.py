"""One DIFF2 difference round of ``fc10_regression``: ghost-norm clipping against ``torch.func``.

What a DIFF2 worker asks of the oracle in a difference round (spec diff2.md section 4.3):
``sum_s clip_c(g_s(x_r) - g_s(x_{r-1}))`` over all of each node's samples, here for
``nodes`` nodes of the default California-Housing-shaped data (1,651-1,652 samples each
for 10 nodes, ``dim = 101``, float64). Variants, timed alternately in one process:

* ``ghost``: :meth:`Fc10Oracle.clipped_grad_sum` with ``X_prev`` (explicit batched
  backpropagation, per-sample norms from the deltas, no ``[k, n, dim]`` tensor);
* ``ghost_restart``: the same without ``X_prev`` (a restart round, DP-GD);
* ``func``: ``vmap(vmap(grad))`` per-sample gradients at both points (``[k, n, dim]``
  each, ``torch.func.functional_call`` on :func:`fc10_module`), their difference
  clipped and summed.

Prints one JSON line: median and minimum wall milliseconds per call, the ratio of
``func`` to ``ghost`` and the largest difference between the two results.

``python -m fedopt.bench.fc10_clip [--nodes 10] [--calls 10] [--repeats 5] [--threads 1]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.func import functional_call, grad, vmap

from fedopt.problems import PROBLEMS, parse_problem_config
from fedopt.problems._common import CLIP_EPS
from fedopt.problems._fc10_net import fc10_module


def func_clipped_diff_sum(oracle: Any, X: torch.Tensor, Xp: torch.Tensor, clip: float) -> Any:
    """The ``torch.func`` reference: per-sample gradients at both points, clip, sum."""
    module = fc10_module(oracle.config.features, oracle.config.hidden).to(X.dtype)
    layout = oracle.layout

    def loss(p: dict, a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (functional_call(module, p, (a.unsqueeze(0),))[0, 0] - y).square()

    per_sample = vmap(vmap(grad(loss), in_dims=(None, 0, 0)), in_dims=(0, 0, 0))
    n = oracle.max_samples
    A, y, valid = oracle.A[:, :n], oracle.y[:, :n], oracle.valid[:, :n]

    def flat(W: torch.Tensor) -> torch.Tensor:
        g = per_sample(layout.unflatten(W), A, y)
        return torch.cat([g[e.name].reshape(W.shape[0], n, -1) for e in layout.params], 2)

    G = flat(X) - flat(Xp)
    f = (clip / (G.norm(dim=2) + CLIP_EPS)).clamp(max=1.0) * valid
    return (G * f.unsqueeze(2)).sum(dim=1)


def bench_fc10_clip(
    nodes: int = 10, calls: int = 10, repeats: int = 5, threads: int = 1, seed: int = 0
) -> dict[str, Any]:
    """Median ms per ``clipped_grad_sum`` call of each variant (module docstring)."""
    torch.set_num_threads(threads)
    config = parse_problem_config({"name": "fc10_regression"})
    oracle = PROBLEMS.get("fc10_regression").build(
        config,
        seed=seed,
        data_ranks=torch.arange(nodes),
        num_data_nodes=nodes,
        device=torch.device("cpu"),
    )
    rows = torch.arange(nodes)
    gen = torch.Generator().manual_seed(seed)
    X = oracle.init_params(rows)
    Xp = X + 1e-3 * torch.randn(X.shape, generator=gen, dtype=X.dtype)
    norms = (oracle.per_sample_grad(X, rows, 0) - oracle.per_sample_grad(Xp, rows, 0)).norm(dim=2)
    clip = float(norms[oracle.valid[:, : oracle.max_samples] > 0].median())  # half clipped
    variants: dict[str, Callable[[], torch.Tensor]] = {
        "ghost": lambda: oracle.clipped_grad_sum(X, rows, clip, Xp),
        "ghost_restart": lambda: oracle.clipped_grad_sum(X, rows, clip),
        "func": lambda: func_clipped_diff_sum(oracle, X, Xp, clip),
    }
    diff = float((variants["ghost"]() - variants["func"]()).abs().max())
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, f in variants.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                f()
            times[name].append(1e3 * (time.perf_counter() - t0) / calls)
    med = {name: statistics.median(v) for name, v in times.items()}
    return {
        "workload": "fc10_clipped_grad_sum",
        "nodes": nodes,
        "samples_per_node": oracle.num_samples.tolist(),
        "dim": oracle.dim,
        "dtype": str(oracle.dtype),
        "threads": torch.get_num_threads(),
        "clip": clip,
        "median_ms": {k: round(v, 3) for k, v in med.items()},
        "min_ms": {k: round(min(v), 3) for k, v in times.items()},
        "func_over_ghost": round(med["func"] / med["ghost"], 2),
        "max_abs_diff": diff,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=10)
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    print(json.dumps(bench_fc10_clip(a.nodes, a.calls, a.repeats, a.threads)))


if __name__ == "__main__":
    main()

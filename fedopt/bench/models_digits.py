"""Minibatch gradients of the digits models: ``fedopt.models`` against the hand-written kernel.

At N nodes (default 100) with the digits defaults (MLP 64 -> 32 -> 10, minibatch 32 drawn
with replacement), one step is what a D-SGD or FedAvg local step asks of the oracle: draw
every node's minibatch and compute ``[N, dim]`` gradients. Variants, timed alternately in
one process (each repeat runs every variant for ``steps`` steps, in turn):

* ``hand``: ``DigitsOracle.grad``, the problem's own path: its minibatch gather, then
  ``BatchedModel.grad`` on the hand-written kernel (explicit batched backpropagation with
  ``bmm``; until issue 9 the oracle carried its own copy of the same operations);
* ``kernel``: ``BatchedModel.grad(method="kernel")``, the same backpropagation on the
  model layout (:mod:`fedopt.models.kernels`; what ``method="auto"`` picks for this model);
* ``autograd``: ``BatchedModel.grad(method="autograd")``, a vmapped ``functional_call``
  forward and one reverse pass (the ``torch.func`` path of models without a kernel);
* ``func``: ``BatchedModel.grad(method="func")``, ``vmap(grad(f_i))`` over nodes;
* ``loop``: ``BatchedModel`` with ``strategy="loop"`` (one node at a time);
* ``cnn_vmap`` / ``cnn_loop``: the digits CNN with BatchNorm in train mode, vmap or loop.

The model variants gather the same minibatches from the oracle's data (included in the
time, as the oracle's own gather is). Prints one JSON line: median (and minimum) wall
milliseconds per step, the median CPU time of the main thread (``time.thread_time``,
which waiting for a shared core does not count; with one torch thread all the work is on
it), and the ratio of each variant to ``hand`` for each.

``python -m fedopt.bench.models_digits [--nodes 100] [--steps 20] [--repeats 7] [--threads 1]
[--cnn-steps 2] [--no-loop] [--no-cnn]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from fedopt.models import digits_cnn_bn, digits_mlp
from fedopt.problems import PROBLEMS, parse_problem_config


def _oracle(nodes: int, hidden: int, batch_size: int, seed: int) -> Any:
    config = parse_problem_config(
        {"name": "digits_mlp", "hidden": hidden, "batch_size": batch_size}
    )
    return PROBLEMS.get("digits_mlp").build(
        config,
        seed=seed,
        data_ranks=torch.arange(nodes),
        num_data_nodes=nodes,
        device=torch.device("cpu"),
    )


def bench_models_digits(
    nodes: int = 100,
    hidden: int = 32,
    batch_size: int = 32,
    steps: int = 20,
    repeats: int = 7,
    threads: int = 1,
    loop: bool = True,
    cnn: bool = True,
    cnn_steps: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Median ms per gradient step of every variant and its ratio to the hand-written one."""
    torch.set_num_threads(threads)
    oracle = _oracle(nodes, hidden, batch_size, seed)
    rows = torch.arange(nodes)
    gen = torch.Generator().manual_seed(seed)
    X = oracle.init_params(rows) + 0.05 * torch.randn(nodes, oracle.dim, generator=gen)
    mlp, mlp_loop = digits_mlp(hidden), digits_mlp(hidden, strategy="loop")
    cnn_model, cnn_loop = digits_cnn_bn(), digits_cnn_bn(strategy="loop")
    Xc = cnn_model.init_params(seed, rows)
    Bc = cnn_model.init_buffers(nodes)
    max_m = oracle.max_m

    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        flat = oracle.batch_indices(rows, step).add_(rows.unsqueeze(1) * max_m).view(-1)
        xb = oracle._X_flat.index_select(0, flat).view(nodes, batch_size, -1)
        yb = oracle._labels_flat.index_select(0, flat).view(nodes, batch_size)
        return xb, yb

    variants: dict[str, Callable[[int], torch.Tensor]] = {
        "hand": lambda s: oracle.grad(X, rows, s),
        "kernel": lambda s: mlp.grad(X, *batch(s), method="kernel"),
        "autograd": lambda s: mlp.grad(X, *batch(s), method="autograd"),
        "func": lambda s: mlp.grad(X, *batch(s), method="func"),
    }
    if loop:
        variants["loop"] = lambda s: mlp_loop.grad(X, *batch(s), method="autograd")
    if cnn:
        variants["cnn_vmap"] = lambda s: cnn_model.grad(Xc, *batch(s), Bc, train=True)
        if loop:
            variants["cnn_loop"] = lambda s: cnn_loop.grad(Xc, *batch(s), Bc, train=True)

    ref = variants["hand"](0)
    agree = {
        name: float((variants[name](0) - ref).abs().max())
        for name in variants
        if not name.startswith("cnn")
    }
    for f in variants.values():  # warm-up (first vmap calls, allocator)
        f(1)
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(repeats):
        for name, f in variants.items():
            n = cnn_steps if name.startswith("cnn") else steps
            t0, c0 = time.perf_counter(), time.thread_time()
            for s in range(n):
                f(2 + rep * n + s)
            cpu[name].append(1e3 * (time.thread_time() - c0) / n)
            times[name].append(1e3 * (time.perf_counter() - t0) / n)
    med = {name: statistics.median(v) for name, v in times.items()}
    cpu_med = {name: statistics.median(v) for name, v in cpu.items()}
    return {
        "workload": "models_digits_grad",
        "nodes": nodes,
        "hidden": hidden,
        "batch_size": batch_size,
        "dim": oracle.dim,
        "cnn_dim": cnn_model.dim,
        "threads": torch.get_num_threads(),
        "steps": steps,
        "cnn_steps": cnn_steps,
        "repeats": repeats,
        "median_ms": {k: round(v, 3) for k, v in med.items()},
        "min_ms": {k: round(min(v), 3) for k, v in times.items()},
        "ratio_to_hand": {k: round(v / med["hand"], 3) for k, v in med.items()},
        "min_ratio_to_hand": {k: round(min(v) / min(times["hand"]), 3) for k, v in times.items()},
        "cpu_median_ms": {k: round(v, 3) for k, v in cpu_med.items()},
        "cpu_ratio_to_hand": {k: round(v / cpu_med["hand"], 3) for k, v in cpu_med.items()},
        "max_abs_diff_to_hand": agree,
        "fallbacks": {"mlp": mlp.fallbacks, "cnn": cnn_model.fallbacks},
        "slow_ops": {"mlp": mlp.slow_ops, "cnn": cnn_model.slow_ops},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cnn-steps", type=int, default=2, help="steps per repeat of the CNN")
    p.add_argument("--no-loop", action="store_true", help="skip the loop-over-nodes variants")
    p.add_argument("--no-cnn", action="store_true", help="skip the CNN variants")
    a = p.parse_args(argv)
    out = bench_models_digits(
        a.nodes,
        a.hidden,
        a.batch_size,
        a.steps,
        a.repeats,
        a.threads,
        loop=not a.no_loop,
        cnn=not a.no_cnn,
        cnn_steps=a.cnn_steps,
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()

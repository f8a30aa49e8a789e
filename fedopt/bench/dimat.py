"""``fedopt bench dimat``: DIMAT's local training batched over agents, and its merge's cost.

Two measurements on the digits problem with running BatchNorm statistics (``N`` agents,
IID, default the CNN ``digits_cnn_bn`` with channels ``[8, 16]``, or ``resnet20``):

* **training**: ``steps`` minibatch Adam steps of every agent, as
  :meth:`DIMAT._train <fedopt.algorithms.dimat.DIMAT>` runs them, with the model's
  ``strategy: vmap`` (one vmapped forward and backward for all agents of the worker) and
  ``strategy: loop`` (one agent at a time), alternated ``repeats`` times in one process;
  the record gives the median seconds per step of each and their ratio;
* **merge**: one activation-matching merge round of every agent on the ring (2
  neighbours each) with the functions the algorithm calls, timed by phase: the BN
  resets of the ``3N`` (receiver, model) pairs on the receivers' data, the feature pass,
  the correlations and linear assignments, the permutation and pi-weighted average, and
  the BN reset of the merged models; median seconds of each phase and its share.

``fedopt bench dimat [--nodes 5] [--rounds STEPS] [--repeats 3] [--threads 1] [--model cnn]``
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from fedopt.merge import activation_perms, permute_groups
from fedopt.merge.calibration import LocalCalibration
from fedopt.optim import Adam
from fedopt.problems import PROBLEMS, parse_problem_config

MODELS = {
    "cnn": {"name": "digits_cnn_bn", "channels": [8, 16]},
    "resnet20": {"name": "resnet20", "width": 1},
}


def _oracle(nodes: int, model: str, strategy: str, batch_size: int, seed: int) -> Any:
    config = parse_problem_config(
        {
            "name": "digits_model",
            "model": {**MODELS[model], "strategy": strategy},
            "batch_size": batch_size,
            "batchnorm": "running",
            "same_init": False,
        }
    )
    return PROBLEMS.get("digits_model").build(
        config,
        seed=seed,
        data_ranks=torch.arange(nodes),
        num_data_nodes=nodes,
        device=torch.device("cpu"),
    )


def _train_steps(oracle: Any, steps: int) -> Callable[[], None]:
    rows = torch.arange(len(oracle.counts))
    x0 = oracle.init_params(rows)
    opt = Adam()

    def go() -> None:
        x = x0.clone()
        state = opt.init(len(x), x.shape[1], x.dtype, x.device)
        for s in range(steps):
            x.sub_(opt.update(state, oracle.grad(x, rows, s), 1e-3))

    return go


def _merge_phases(oracle: Any, samples: int) -> dict[str, float]:
    """Seconds of each phase of one ring merge round of every agent."""
    n = len(oracle.counts)
    rows = torch.arange(n)
    layout = oracle.layout
    x = oracle.init_params(rows)
    b = layout.init_buffers(n)
    calib = LocalCalibration(oracle, samples)
    points = [g for g, grp in layout.groups.items() if grp.point is not None]
    recv = rows.repeat_interleave(2)
    src = torch.stack([(rows - 1) % n, (rows + 1) % n], dim=1).reshape(-1)
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    Xp = torch.cat([x, x[src]])
    rows_p = torch.cat([rows, recv])
    Bp, _ = calib.reset(Xp, rows_p)
    t1 = time.perf_counter()
    feats = calib.features(Xp, rows_p, Bp, points)
    t2 = time.perf_counter()
    perms = activation_perms(
        {g: f[:n][recv] for g, f in feats.items()}, {g: f[n:] for g, f in feats.items()}
    )
    t3 = time.perf_counter()
    Xm, Bm = permute_groups(layout, Xp[n:], Bp[n:], perms)
    merged = (x + Xm.view(n, 2, -1).sum(1)) / 3.0
    merged_b = (Bp[:n] + Bm.view(n, 2, -1).sum(1)) / 3.0
    t4 = time.perf_counter()
    calib.reset(merged, rows)
    t5 = time.perf_counter()
    assert merged_b.shape == b.shape
    out["bn_reset_pairs"] = t1 - t0
    out["features"] = t2 - t1
    out["assignments"] = t3 - t2
    out["permute_average"] = t4 - t3
    out["bn_reset_merged"] = t5 - t4
    return out


def bench_dimat(
    nodes: int = 5,
    steps: int = 10,
    repeats: int = 3,
    threads: int = 1,
    model: str = "cnn",
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """Median seconds per training step (vmap vs loop) and per merge phase."""
    torch.set_num_threads(threads)
    vm = _oracle(nodes, model, "vmap", batch_size, seed)
    lp = _oracle(nodes, model, "loop", batch_size, seed)
    runs = {"vmap": _train_steps(vm, steps), "loop": _train_steps(lp, steps)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for name, go in runs.items():
            t0 = time.perf_counter()
            go()
            times[name].append((time.perf_counter() - t0) / steps)
    samples = int(vm.info["min_node_samples"])
    phases: dict[str, list[float]] = {}
    for _ in range(repeats):
        for k, v in _merge_phases(lp, samples).items():
            phases.setdefault(k, []).append(v)
    med = {k: statistics.median(v) for k, v in phases.items()}
    total = sum(med.values())
    train = {k: statistics.median(v) for k, v in times.items()}
    return {
        "workload": "dimat",
        "model": MODELS[model]["name"],
        "nodes": nodes,
        "dim": vm.dim,
        "buf_dim": vm.buf_dim,
        "threads": threads,
        "train_step_s": {k: round(v, 6) for k, v in train.items()},
        "train_loop_over_vmap": round(train["loop"] / train["vmap"], 3),
        "merge_round_s": round(total, 6),
        "merge_phase_s": {k: round(v, 6) for k, v in med.items()},
        "merge_phase_share": {k: round(v / total, 3) for k, v in med.items()},
        "feature_samples": samples,
    }

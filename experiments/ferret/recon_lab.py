"""Ferret's reconstruction lab (the paper's App. C.5, Figs. 7-8; spec ferret.md 3.9).

Two measurements with the simulator's own bases (:mod:`fedopt.ferret.bases`), CPU only:

``k_sweep``  F(x) = sum x_i^2 at d = 10^5: the update of one gradient step from a keyed
             x_0, projected on K fresh bases with the unbiased scale 1/(rho K) (eq. 7):
             cosine(Delta~, Delta) and relative error against K, with the law
             sqrt(K/(K+d)) and sqrt(d/K) next to them (average over ``--trials``).
``t_sweep``  F(x) = sum sin^2(x_i) at d = 5x10^4, T steps of gradient descent (lr 0.1)
             from x_0 = keyed U(-1, 1): the true update Delta_T = x_0 - x_T, and
               * Ferret: Delta_T projected on K bases (eq. 7), cosine to Delta_T;
               * ZO: T steps along the forward-difference estimate
                 g = (1/(rho K)) sum_k (F(x + eps v_k) - F(x))/eps v_k with K fresh bases
                 per step (the estimator of Thm 3), cosine of x_0 - x'_T to Delta_T
             (Fig. 8a: Ferret's cosine flat in T, ZO's decaying).

Usage: ``python experiments/ferret/recon_lab.py [--d 100000] [--d-sin 50000] [--ks ...]
[--K 500] [--ts 1 2 4 8] [--out results.json]``; prints a JSON record.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from fedopt import rng
from fedopt.ferret import bases

F64 = torch.float64


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def _x0(d: int, purpose: str) -> torch.Tensor:
    keys = rng.node_keys(0, purpose, torch.zeros(1, dtype=torch.int64), 0)
    return rng.uniform(keys, d, F64)[0].mul_(2).sub_(1)


def ferret_projection(delta: torch.Tensor, K: int, ids: tuple[int, ...]) -> torch.Tensor:
    """Eq. 7: (rho K)^-1 V^T V delta on K fresh keyed bases."""
    d = delta.numel()
    keys = bases.keys(0, "lab/bases", ids, K)
    return bases.reconstruct(keys, d, bases.project(keys, delta) / (bases.rho(d) * K))


def k_sweep(d: int, ks: list[int], trials: int) -> list[dict[str, float]]:
    x0 = _x0(d, "lab/x0_square")
    delta = 0.1 * 2 * x0  # one gradient step of sum x^2, lr 0.1
    out = []
    for K in ks:
        cos, err = [], []
        for r in range(trials):
            rec = ferret_projection(delta, K, (K, r))
            cos.append(_cos(rec, delta))
            err.append(float((rec - delta).norm() / delta.norm()))
        out.append(
            {
                "K": K,
                "cosine": sum(cos) / trials,
                "cosine_law": math.sqrt(K / (K + d)),
                "relative_error": sum(err) / trials,
                "error_law": math.sqrt(d / K),
            }
        )
    return out


def _sin_value_rows(x: torch.Tensor, keys: torch.Tensor, eps: float) -> torch.Tensor:
    """``F(x + eps v_k)`` for every basis ``k`` (chunked, never ``K x d`` at once)."""
    d = x.numel()
    vals = torch.zeros(len(keys), dtype=F64)
    for rs, cs, V in bases.chunks(keys, d):
        vals[rs] += torch.sin(x[cs] + eps * V).square().sum(dim=1)
    return vals


def t_sweep(d: int, K: int, ts: list[int], lr: float, eps: float) -> list[dict[str, float]]:
    x0 = _x0(d, "lab/x0_sin")
    out = []
    for T in ts:
        x = x0.clone()
        for _ in range(T):
            x -= lr * torch.sin(2 * x)  # grad of sin^2
        delta = x0 - x
        fer = _cos(ferret_projection(delta, K, (T, 0)), delta)
        z = x0.clone()
        for s in range(T):
            keys = bases.keys(0, "lab/zo", (T, s), K)
            f0 = float(torch.sin(z).square().sum())
            g = (_sin_value_rows(z, keys, eps) - f0) / eps
            z -= lr * bases.reconstruct(keys, d, g / (bases.rho(d) * K))
        out.append({"T": T, "ferret_cosine": fer, "zo_cosine": _cos(x0 - z, delta)})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d", type=int, default=100_000, help="k_sweep dimension")
    p.add_argument("--ks", type=int, nargs="+", default=[50, 100, 200, 350, 500])
    p.add_argument("--trials", type=int, default=2)
    p.add_argument("--d-sin", type=int, default=50_000, help="t_sweep dimension")
    p.add_argument("--K", type=int, default=500, help="t_sweep bases")
    p.add_argument("--ts", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--eps", type=float, default=1e-3)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rec = {"k_sweep": {"d": args.d, "rows": k_sweep(args.d, args.ks, args.trials)}}
    t1 = time.perf_counter()
    rec["t_sweep"] = {
        "d": args.d_sin,
        "K": args.K,
        "lr": args.lr,
        "eps": args.eps,
        "rows": t_sweep(args.d_sin, args.K, args.ts, args.lr, args.eps),
    }
    rec["seconds"] = {"k_sweep": t1 - t0, "t_sweep": time.perf_counter() - t1}
    text = json.dumps(rec, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()

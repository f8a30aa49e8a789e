"""``fedopt bench fzoos``: one FZooS round's surrogate work, batched vs per client.

The surrogate work of one round of FZooS (spec fzoos.md 2.4) for ``N`` clients, on the
same query histories and at the same iterates, two ways, alternated in one process:

* ``batched``: :mod:`fedopt.zo` as :mod:`fedopt.algorithms.fzoos` calls it, all clients
  at once (one batched Cholesky factorisation per call, closed-form gradients, the
      ``O(n^2)`` trace of the gradient covariance);
* ``reference``: the reference code's way, a Python loop over clients: a fresh
  scikit-learn ``GaussianProcessRegressor`` (fixed kernel, ``optimizer=None``) per
  neighbourhood, the gradient of its mean from its ``alpha_``, the gradient covariance
  from explicit ``n x d`` Jacobians and the inverse kernel matrix (as the reference
  builds its ``(0, 0)`` entry, here for the whole trace), and scikit-learn's
  ``RBFSampler`` (given the same ``W, b``) with ``Ridge`` (same ``s2``, Cholesky
  solver) for the feature weights.

Per client the round is: for each of the ``T`` local steps, the ``gp_neighbourhood``
points nearest the iterate, the GP fit, its mean gradient, the feature correction
``grad m(theta_bar - theta_i)``, and (``T - 1`` times) the trace of the gradient
covariance of ``local_candidates`` candidates conditioned on the neighbourhood plus the
next iterate, keeping the ``local_keep`` largest; after aggregation the same for
``agg_candidates`` candidates around ``x_r`` and the feature fit on the
``rff_neighbourhood`` points nearest it. Histories are drawn once (keyed RNG) like an
FZooS trajectory after a few rounds: a walk of Adam-sized steps with the local and
post-aggregation query boxes around it, targets from the spec's quadratic. The iterates
are fixed inputs, so both ways do the same work. The record gives the median seconds
of each way (``gp``: neighbourhoods, fits, gradients and scores; ``rff``: fit and
corrections), their ratios, and the largest differences between the two answers.

``device`` moves the batched way (histories, iterates and the features ``W, b``) to a
torch device such as ``cuda``; the reference way always runs on the CPU, as the
reference code does, and the batched timings wait for the device to finish.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fedopt import rng
from fedopt.bench.device import bench_device
from fedopt.zo import align, gp, kernels, rff

F64 = torch.float64


def make_inputs(
    clients: int = 5,
    dim: int = 300,
    history: int = 545,
    local_steps: int = 10,
    local_candidates: int = 100,
    agg_candidates: int = 200,
    features: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Histories, iterates, candidate boxes and weights differences of one round."""
    ids = torch.arange(clients)

    def draw(purpose: str, count: int, step: int = 0) -> torch.Tensor:
        return rng.uniform(rng.node_keys(seed, purpose, ids, step), count, F64)

    x0 = draw("bench/x0", dim).mul_(0.6).add_(0.2)  # [c, d]
    # a walk of 0.01-steps per coordinate (Adam with lr 0.01) with boxes around it
    signs = torch.where(draw("bench/walk", history * dim) < 0.5, -1.0, 1.0)
    walk = x0.unsqueeze(1) + 0.01 * signs.reshape(clients, history, dim).cumsum(1) / 4
    boxes = 0.01 * (2 * draw("bench/box", history * dim) - 1).reshape(clients, history, dim)
    X = walk + boxes
    u = 20 * X - 10  # the spec's quadratic with per-client curvatures
    a = 1 + 0.5 * (draw("bench/a", dim) - 0.5)
    y = ((a.unsqueeze(1) * u.square()).sum(-1) + u.sum(-1) + 1) / (10 * dim)
    step = torch.where(draw("bench/step", dim) < 0.5, -1.0, 1.0)
    xs = X[:, -1].unsqueeze(1) + 0.01 * torch.arange(local_steps + 1).view(
        1, -1, 1
    ) * step.unsqueeze(1)
    x_r = xs[:, -1].mean(0, keepdim=True).expand(clients, dim).clone()
    local_box = 2 * draw("bench/local", (local_steps - 1) * local_candidates * dim) - 1
    agg_box = 2 * draw("bench/agg", agg_candidates * dim) - 1
    theta_diff = 1e-2 * rng.normal(rng.node_keys(seed, "bench/theta", ids, 0), features, F64)
    return {
        "X": X,
        "y": y,
        "xs": xs,  # [c, T + 1, d]: x_0 .. x_T of the local steps
        "x_r": x_r,
        "local_box": local_box.reshape(clients, local_steps - 1, local_candidates, dim),
        "agg_box": agg_box.reshape(clients, agg_candidates, dim),
        "theta_diff": theta_diff,
    }


SETTINGS: dict[str, Any] = {
    "kernel": "se",
    "lengthscale": 1.0,
    "gp_noise": 1e-6,
    "gp_neighbourhood": 150,
    "local_radius": 0.01,
    "local_keep": 5,
    "agg_keep": 50,
    "rff_neighbourhood": 500,
    "rff_noise": 1e-6,
    "rff_lengthscale": 1.0,
}


# ----------------------------------------------------------------------------- batched
def _stored(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The history as FZooS stores it: padded to multiples of 8, with its squared norms."""
    Xp = align.pad(align.pad(X, 1, align.up(X.shape[1])), 2, align.up(X.shape[2]))
    return Xp, Xp.square().sum(-1)


def batched_gp(inp: dict[str, Any], s: dict[str, Any]) -> dict[str, torch.Tensor]:
    """GP part of the round for every client at once (the algorithm's calls)."""
    X, y, xs = inp["X"], inp["y"], inp["xs"]
    c, H, d = X.shape
    count = torch.full((c,), H, dtype=torch.int64)
    Xp, sq = _stored(X)
    yp = align.pad(y, 1, Xp.shape[1])
    T = xs.shape[1] - 1
    kern, ell, noise = s["kernel"], s["lengthscale"], s["gp_noise"]
    grads, scores, picks = [], [], []
    for t in range(T):
        x = xs[:, t]
        idx, mask = gp.nearest(Xp, count, x, s["gp_neighbourhood"], sq)
        Xn, yn = gp.take(Xp, idx)[..., :d], gp.take(yp, idx)
        post = gp.fit(Xn, yn, mask, x, kern, ell, noise)
        grads.append(gp.mean_grad(post, x))
        if t < T - 1:
            nxt = xs[:, t + 1]
            cand = nxt.unsqueeze(1) + s["local_radius"] * inp["local_box"][:, t]
            sc = gp.grad_cov_scores_after(post, nxt, cand)
            scores.append(sc)
            picks.append(gp.top(sc, s["local_keep"]))
    x_r = inp["x_r"]
    h = (x_r - xs[:, -1]).abs().mean(1) / 2
    cand = x_r.unsqueeze(1) + h.view(c, 1, 1) * inp["agg_box"]
    idx, mask = gp.nearest(Xp, count, x_r, s["gp_neighbourhood"], sq)
    S = torch.cat([gp.take(Xp, idx)[..., :d], x_r.unsqueeze(1)], 1)
    Smask = torch.cat([mask, torch.ones(c, 1, dtype=torch.bool)], 1)
    agg = gp.grad_cov_scores(S, Smask, x_r, cand, kern, ell, noise)
    return {
        "grads": torch.stack(grads, 1),
        "scores": torch.stack(scores, 1),
        "picks": torch.stack(picks, 1),
        "agg_scores": agg,
        "agg_picks": gp.top(agg, s["agg_keep"]),
    }


def batched_rff(inp: dict[str, Any], s: dict[str, Any], feats: rff.Features):
    """Feature part: the corrections at the ``T`` iterates and the fit at ``x_r``."""
    X, y, xs = inp["X"], inp["y"], inp["xs"]
    c, H, d = X.shape
    corr = [rff.grad(inp["theta_diff"], xs[:, t], feats) for t in range(xs.shape[1] - 1)]
    count = torch.full((c,), H, dtype=torch.int64)
    Xp, sq = _stored(X)
    idx, mask = gp.nearest(Xp, count, inp["x_r"], s["rff_neighbourhood"], sq)
    Xn = gp.take(Xp, idx)[..., :d]
    yn = gp.take(align.pad(y, 1, Xp.shape[1]), idx)
    theta, _, span = rff.fit(Xn, yn, mask, feats, s["rff_noise"])
    return {"corrections": torch.stack(corr, 1), "theta": theta, "span": span}


# ----------------------------------------------------------------------------- reference
def _sk_kernel(s: dict[str, Any]) -> Any:
    from sklearn.gaussian_process.kernels import RBF, Matern

    ell = s["lengthscale"]
    return RBF(ell) if s["kernel"] == "se" else Matern(ell, nu=2.5)


def _factor(r2: np.ndarray, s: dict[str, Any]) -> np.ndarray:
    """``g(r)`` of ``d/dx k = -g (x - x')`` in numpy."""
    ell = s["lengthscale"]
    if s["kernel"] == "se":
        return np.exp(-0.5 * r2 / ell**2) / ell**2
    a = math.sqrt(5.0) / ell
    ar = a * np.sqrt(r2)
    return a * a / 3.0 * (1.0 + ar) * np.exp(-ar)


def _nearest(X: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(((X - x) ** 2).sum(1), kind="stable")[:k]


def _trace_scores(S: np.ndarray, cand: np.ndarray, s: dict[str, Any]) -> np.ndarray:
    """``tr Sigma_grad`` of each candidate from explicit Jacobians and ``inv(K + s2 I)``."""
    K = _sk_kernel(s)(S) + s["gp_noise"] * np.eye(len(S))
    A = np.linalg.inv(K)
    diff = cand[:, None, :] - S[None, :, :]  # [m, n, d]
    J = -_factor((diff**2).sum(-1), s)[..., None] * diff
    quad = np.einsum("mnd,nk,mkd->m", J, A, J, optimize=True)
    d = S.shape[1]
    return d * kernels.gradient_prior(s["kernel"], s["lengthscale"]) - quad


def reference_gp(inp: dict[str, Any], s: dict[str, Any]) -> dict[str, np.ndarray]:
    """GP part, one client at a time, scikit-learn GPs (module doc)."""
    from sklearn.gaussian_process import GaussianProcessRegressor

    X, y, xs = inp["X"].numpy(), inp["y"].numpy(), inp["xs"].numpy()
    local_box, agg_box, x_r = inp["local_box"].numpy(), inp["agg_box"].numpy(), inp["x_r"].numpy()
    c, T = X.shape[0], xs.shape[1] - 1
    out = {k: [] for k in ("grads", "scores", "picks", "agg_scores", "agg_picks")}
    for i in range(c):
        grads, scores, picks = [], [], []
        for t in range(T):
            x = xs[i, t]
            nb = _nearest(X[i], x, s["gp_neighbourhood"])
            Xn, yn = X[i, nb], y[i, nb]
            lo, span = yn.min(), yn.max() - yn.min()
            model = GaussianProcessRegressor(_sk_kernel(s), alpha=s["gp_noise"], optimizer=None)
            model.fit(Xn, (yn - lo) / (span + gp.SPAN_EPS))
            diff = x - Xn
            w = model.alpha_ * _factor((diff**2).sum(1), s)
            grads.append(-span * (w[:, None] * diff).sum(0))
            if t < T - 1:
                nxt = xs[i, t + 1]
                cand = nxt + s["local_radius"] * local_box[i, t]
                sc = _trace_scores(np.vstack([Xn, nxt]), cand, s)
                scores.append(sc)
                picks.append(np.argsort(-sc, kind="stable")[: s["local_keep"]])
        h = np.abs(x_r[i] - xs[i, -1]).mean() / 2
        cand = x_r[i] + h * agg_box[i]
        nb = _nearest(X[i], x_r[i], s["gp_neighbourhood"])
        agg = _trace_scores(np.vstack([X[i, nb], x_r[i]]), cand, s)
        for key, v in (("grads", grads), ("scores", scores), ("picks", picks)):
            out[key].append(np.stack(v))
        out["agg_scores"].append(agg)
        out["agg_picks"].append(np.argsort(-agg, kind="stable")[: s["agg_keep"]])
    return {k: np.stack(v) for k, v in out.items()}


def reference_rff(inp: dict[str, Any], s: dict[str, Any], feats: rff.Features):
    """Feature part, one client at a time: ``RBFSampler`` + ``Ridge`` (module doc)."""
    from sklearn.kernel_approximation import RBFSampler
    from sklearn.linear_model import Ridge

    X, y, xs, x_r = inp["X"].numpy(), inp["y"].numpy(), inp["xs"].numpy(), inp["x_r"].numpy()
    W, b, M = feats.W.numpy(), feats.b.numpy(), feats.count
    diff = inp["theta_diff"].numpy()
    sampler = RBFSampler(gamma=0.5 / s["rff_lengthscale"] ** 2, n_components=M).fit(X[0, :1])
    sampler.random_weights_, sampler.random_offset_ = W, b
    corr, thetas, spans = [], [], []
    for i in range(X.shape[0]):
        g = [
            -math.sqrt(2.0 / M) * W @ (diff[i] * np.sin(xs[i, t] @ W + b))
            for t in range(xs.shape[1] - 1)
        ]
        corr.append(np.stack(g))
        nb = _nearest(X[i], x_r[i], s["rff_neighbourhood"])
        yn = y[i, nb]
        lo, span = yn.min(), yn.max() - yn.min()
        ridge = Ridge(alpha=s["rff_noise"], fit_intercept=False, solver="cholesky")
        thetas.append(
            ridge.fit(sampler.transform(X[i, nb]), (yn - lo) / (span + gp.SPAN_EPS)).coef_
        )
        spans.append(span)
    return {"corrections": np.stack(corr), "theta": np.stack(thetas), "span": np.array(spans)}


# ----------------------------------------------------------------------------- compare
def _rel(a: Any, b: Any, axis: int = -1) -> float:
    """Largest ``||a - b|| / ||b||`` over rows (norms along ``axis``)."""
    a, b = np.asarray(a), np.asarray(b)
    return float((np.linalg.norm(a - b, axis=axis) / np.linalg.norm(b, axis=axis)).max())


def compare(batched: dict[str, Any], reference: dict[str, Any], s: dict[str, Any], dim: int):
    """Largest differences of the two ways' answers (relative, or counts of disagreements)."""
    prior = dim * kernels.gradient_prior(s["kernel"], s["lengthscale"])
    b = {k: v.numpy() for k, v in batched.items()}
    return {
        "grad_rel": _rel(b["grads"], reference["grads"]),
        "correction_rel": _rel(b["corrections"], reference["corrections"]),
        "theta_rel": _rel(b["theta"], reference["theta"]),
        "trace_rel_to_prior": float(
            max(
                np.abs(b["scores"] - reference["scores"]).max(),
                np.abs(b["agg_scores"] - reference["agg_scores"]).max(),
            )
            / prior
        ),
        "picks_differing": int(
            sum(
                len(set(p.tolist()) ^ set(q.tolist())) // 2
                for bb, rr in (
                    (b["picks"], reference["picks"]),
                    (b["agg_picks"], reference["agg_picks"]),
                )
                for p, q in zip(
                    bb.reshape(-1, bb.shape[-1]), rr.reshape(-1, rr.shape[-1]), strict=True
                )
            )
        ),
    }


def on_device(inp: dict[str, Any], feats: rff.Features, device: torch.device):
    """The batched way's inputs and features moved to ``device``."""
    moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inp.items()}
    return moved, rff.Features(feats.W8.to(device), feats.b8.to(device), feats.dim, feats.count)


def _synced(f: Callable[[], Any], device: torch.device) -> Callable[[], Any]:
    """``f`` followed by a wait for ``device`` (kernels run asynchronously on a GPU)."""
    if device.type != "cuda":
        return f

    def run() -> Any:
        out = f()
        torch.cuda.synchronize(device)
        return out

    return run


def _cpu(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.cpu() for k, v in out.items()}


def _time(variants: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, f in variants.items():
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def bench_fzoos(
    clients: int = 5,
    dim: int = 300,
    history: int = 545,
    features: int = 10_000,
    local_steps: int = 10,
    repeats: int = 3,
    threads: int = 1,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Seconds of one round's surrogate work each way, their ratio and agreement."""
    dev = bench_device(device)
    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn depends on it
        threadpool_limits = None
    limiter = threadpool_limits(threads) if threadpool_limits is not None else None
    s = dict(SETTINGS)
    inp = make_inputs(clients, dim, history, local_steps, 100, 200, features, seed)
    feats = rff.features(seed, dim, features, s["rff_lengthscale"])
    dinp, dfeats = on_device(inp, feats, dev)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's ill-conditioning notes
        runs = {
            "batched_gp": _synced(lambda: batched_gp(dinp, s), dev),
            "reference_gp": lambda: reference_gp(inp, s),
            "batched_rff": _synced(lambda: batched_rff(dinp, s, dfeats), dev),
            "reference_rff": lambda: reference_rff(inp, s, feats),
        }
        answers = {k: f() for k, f in runs.items()}
        med = _time(runs, repeats)
    if limiter is not None:
        limiter.unregister()
    agree = compare(
        {**_cpu(answers["batched_gp"]), **_cpu(answers["batched_rff"])},
        {**answers["reference_gp"], **answers["reference_rff"]},
        s,
        dim,
    )
    batched = med["batched_gp"] + med["batched_rff"]
    reference = med["reference_gp"] + med["reference_rff"]
    return {
        "workload": "fzoos",
        "clients": clients,
        "dim": dim,
        "history": history,
        "features": features,
        "local_steps": local_steps,
        "threads": threads,
        "device": str(dev),
        "seconds": {k: round(v, 4) for k, v in med.items()},
        "round_s": {"batched": round(batched, 4), "reference": round(reference, 4)},
        "speedup": {
            "round": round(reference / batched, 2),
            "gp": round(med["reference_gp"] / med["batched_gp"], 2),
            "rff": round(med["reference_rff"] / med["batched_rff"], 2),
        },
        "agreement": agree,
    }

"""Peer check: fedopt.robust against ByzFL 0.0.11 (EPFL DCL / INRIA WIDE) on identical inputs.

Inputs are fixed-seed float64 vectors with planted outliers, passed to ByzFL as numpy
arrays (its torch path casts everything to float32) and to fedopt as float64 tensors.
Where the two definitions agree, the outputs must agree to ``1e-12``.

Installing ByzFL
----------------
``byzfl`` declares ``torch>=2.2``, ``torchvision>=0.17``, ``numpy``, ``matplotlib``,
``scipy`` and ``seaborn``. A plain ``pip install byzfl`` here replaces our CPU torch
2.13.0 by torch 2.14.1 with the CUDA wheels (it picks the newest torchvision, which pins
the newest torch). Pinning torch (``-c`` with ``torch==2.13.0``) gets torchvision 0.28.0
from PyPI instead, which is a CUDA build: with the CPU torch, ``import torchvision``
fails with ``RuntimeError: operator torchvision::nms does not exist``. torchvision and
seaborn are only used by ByzFL's benchmark code, and the aggregators and attacks need
only numpy, torch and scipy, so install it without dependencies::

    pip install --no-deps "byzfl==0.0.11"

``byzfl/__init__.py`` imports the benchmark package (torchvision, seaborn). When that
import fails, :func:`_byzfl` registers an empty ``byzfl`` package object whose path is
the installed folder and imports only ``byzfl.aggregators`` and ``byzfl.attacks``. The
module is skipped when ByzFL is not installed at all.

Where the definitions match (tested equal)
------------------------------------------
* ``TrMean(f)`` = ``trimmed_mean(f)``; ``Median`` = ``median`` (both average the two
  middle values for even ``m``); ``Average`` = ``mean``.
* ``GeometricMedian(nu, T)`` = ``geometric_median(nu, iterations=T)``: both run smoothed
  Weiszfeld from 0 with weights ``1 / max(nu, distance)``. (ByzFL also drops vectors with
  an infinite coordinate before iterating; fedopt does not.)
* ``MoNNA(f, idx)`` = ``nna(f)`` with pivot ``V[idx]``; ``NNM(f)`` (nearest-neighbour
  mixing pre-aggregator) = ``nna(f)`` batched over all ``m`` receivers with each vector
  as its own pivot.
* ``CenteredClipping(tau, L)`` = ``centered_clipping(tau, iterations=L)`` with the
  center passed as pivot. ByzFL keeps the previous aggregate inside the object (first
  call: center 0); fedopt is stateless and takes the center as pivot. Its ``m=``
  argument cannot be used (the type check rejects every array), so only the zero and
  previous-aggregate centers are compared.
* ``SignFlipping`` = ``sign_flip``; ``ALittleIsEnough(tau)`` = ``alie(factor=tau)``
  (both use the unbiased std); ``InnerProductManipulation(tau)`` (``−tau μ_H``) =
  ``foe(factor=1 + tau)``; ``Mimic(epsilon)`` = ``mimic(target=epsilon)``.
* The attack objective: ``Optimal_ALittleIsEnough._evaluate`` with ``pre_agg_list=[]``
  is ``‖Agg(H ∪ f copies) − μ_H‖`` for one server, the square root of fedopt's
  ``make_drift`` for a pivot-free rule.

Where they differ (and what is tested instead)
----------------------------------------------
* Krum and Multi-Krum: ByzFL scores a vector by the **mean** squared distance to its
  ``m − f − 1`` nearest others; Blanchard et al. (and fedopt) use the **sum** over the
  ``m − f − 2`` nearest. The mean does not change the ranking, so ByzFL's ``Krum(f)``
  equals fedopt's ``krum(f − 1)``, and ``MultiKrum(f)`` (which averages ``m − f``
  vectors) equals ``multi_krum(f − 1, m_keep=m − f)``.
* Line search (``Optimal_ALittleIsEnough``, ``Optimal_InnerProductManipulation``):
  ByzFL's defaults are 20 evaluations and a first step of 10, and its contraction phase
  always probes ``best + step`` (one side only). The MoNNA reference (and fedopt) uses
  16 evaluations, step 1, and walks from the last probe toward the best point from both
  sides. The expansions agree, so on a drift that grows without bound (the plain mean)
  both end at ``s = 2^15 − 1`` after 16 evaluations with step 1; that is tested. On a
  drift with an interior maximum the two searches probe different points.
  ByzFL's objective is for one server aggregator, not the mean over honest receivers
  with their own pivots (§2.4 of the MoNNA spec), and by default applies static
  clipping (``pre_agg_list=[Clipping()]``) first.
* ALIE factor: ByzFL uses a fixed ``tau = 1.5``; fedopt searches ``s`` or takes a given
  factor, and offers Baruch et al.'s ``z_max`` as ``alie_paper_factor(n, f)``.
* Gaussian: ByzFL sends ``N(mu, sigma^2 I)`` around a fixed ``mu`` (default 0) from the
  global numpy/torch RNG; fedopt sends ``μ_H + σ N(0, I)`` keyed by (seed, node,
  round). Not compared.
* Label flipping: ByzFL's ``LabelFlipping`` is the mean of vectors the caller computed
  on flipped labels; fedopt's is the MoNNA combination step ``μ_H − γ mean(g_flip)``.
  Not compared.
* Self-centered clipping has no ByzFL counterpart; it is ``centered_clipping`` started at
  the pivot, which the centered-clipping comparison covers.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

from fedopt.robust import (
    NNA,
    CenteredClipping,
    GeometricMedian,
    Krum,
    Mean,
    Median,
    MultiKrum,
    TrimmedMean,
    make_attack,
    make_drift,
)

TOL = {"rtol": 1e-12, "atol": 1e-12}


def _byzfl() -> tuple[types.ModuleType, types.ModuleType]:
    """Return ByzFL's ``aggregators`` and ``attacks`` modules, or skip."""
    spec = importlib.util.find_spec("byzfl")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(
            "byzfl is not installed: the ByzFL peer checks need it "
            "(pip install --no-deps 'byzfl==0.0.11')",
            allow_module_level=True,
        )
    try:
        import byzfl

        return byzfl.aggregators, byzfl.attacks
    except (ImportError, RuntimeError):
        # byzfl/__init__.py pulls the benchmark code (torchvision, seaborn); load the
        # pure modules under an empty package object instead.
        for name in [m for m in sys.modules if m == "byzfl" or m.startswith("byzfl.")]:
            del sys.modules[name]
        shell = types.ModuleType("byzfl")
        shell.__path__ = list(spec.submodule_search_locations)
        sys.modules["byzfl"] = shell
        return importlib.import_module("byzfl.aggregators"), importlib.import_module(
            "byzfl.attacks"
        )


AGG, ATT = _byzfl()


def _vectors(m=13, d=17, outliers=3, seed=0) -> np.ndarray:
    rs = np.random.default_rng(seed)
    v = rs.normal(2.0, 1.0, size=(m, d))
    v[-outliers:] += rs.normal(0.0, 30.0, size=(outliers, d))
    return v


def _ours(agg, v: np.ndarray, pivot: np.ndarray | None = None) -> np.ndarray:
    x = torch.from_numpy(v).unsqueeze(0)
    p = None if pivot is None else torch.from_numpy(pivot).reshape(1, -1)
    return agg.aggregate(x, p)[0].numpy()


# ---------------------------------------------------------------- aggregators
@pytest.mark.parametrize("m", [12, 13])
def test_trimmed_mean_median_average(m):
    v = _vectors(m=m)
    np.testing.assert_allclose(_ours(TrimmedMean(f=3), v), AGG.TrMean(f=3)(v), **TOL)
    np.testing.assert_allclose(_ours(Median(f=3), v), AGG.Median()(v), **TOL)
    np.testing.assert_allclose(_ours(Mean(), v), AGG.Average()(v), **TOL)


@pytest.mark.parametrize("iterations", [1, 3, 10])
def test_geometric_median(iterations):
    v = _vectors()
    ours = _ours(GeometricMedian(f=3, nu=0.1, iterations=iterations), v)
    np.testing.assert_allclose(ours, AGG.GeometricMedian(nu=0.1, T=iterations)(v), **TOL)


def test_geometric_median_smoothing_binds():
    v = 0.01 * _vectors(m=9, d=4, outliers=1, seed=5)  # several points within nu of 0
    ours = _ours(GeometricMedian(f=2, nu=0.5, iterations=3), v)
    np.testing.assert_allclose(ours, AGG.GeometricMedian(nu=0.5, T=3)(v), **TOL)


@pytest.mark.parametrize("f", [1, 3, 5])
def test_krum_with_shifted_neighbour_count(f):
    v = _vectors(m=13, outliers=f)
    theirs = AGG.Krum(f=f)(v)
    np.testing.assert_allclose(_ours(Krum(f=f - 1), v), theirs, **TOL)
    assert not np.allclose(theirs, v[-1])  # an outlier is never chosen


@pytest.mark.parametrize("f", [1, 3, 5])
def test_multi_krum_with_shifted_neighbour_count(f):
    m = 13
    v = _vectors(m=m, outliers=f)
    ours = _ours(MultiKrum(f=f - 1, m_keep=m - f), v)
    np.testing.assert_allclose(ours, AGG.MultiKrum(f=f)(v), **TOL)


def test_nna_equals_monna_for_every_pivot_at_once():
    v = _vectors()
    f = 3
    batch = torch.from_numpy(v).unsqueeze(0).expand(len(v), -1, -1)
    ours = NNA(f=f).aggregate(batch, torch.from_numpy(v)).numpy()
    theirs = np.stack([AGG.MoNNA(f=f, idx=i)(v) for i in range(len(v))])
    np.testing.assert_allclose(ours, theirs, **TOL)
    # ByzFL's nearest-neighbour mixing is the same computation as one batched call
    np.testing.assert_allclose(ours, AGG.NNM(f=f)(v), **TOL)


def test_nna_float32_against_byzfl_torch_path():
    v = _vectors().astype(np.float32)
    x = torch.from_numpy(v)
    ours = NNA(f=3).aggregate(x.unsqueeze(0), x[4:5])[0]
    theirs = AGG.MoNNA(f=3, idx=4)(x)
    assert theirs.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize(("tau", "iterations"), [(1.0, 1), (5.0, 3), (100.0, 2)])
def test_centered_clipping_first_and_second_call(tau, iterations):
    v = _vectors()
    theirs = AGG.CenteredClipping(L=iterations, tau=tau)
    first = theirs(v)  # center 0
    ours_first = _ours(CenteredClipping(f=3, tau=tau, iterations=iterations), v)
    np.testing.assert_allclose(ours_first, first, **TOL)
    w = _vectors(seed=1)
    second = theirs(w)  # center: previous aggregate
    ours_second = _ours(CenteredClipping(f=3, tau=tau, iterations=iterations), w, ours_first)
    np.testing.assert_allclose(ours_second, second, **TOL)


# -------------------------------------------------------------------- attacks
def _honest(h=21, d=40, seed=3) -> np.ndarray:
    return np.random.default_rng(seed).normal(1.0, 0.5, size=(h, d))


def test_sign_flip_alie_foe_mimic():
    h = _honest()
    ht = torch.from_numpy(h)
    ids = [21, 22]
    np.testing.assert_allclose(
        make_attack("sign_flip")(ht, ids)[0].numpy(), ATT.SignFlipping()(h), **TOL
    )
    np.testing.assert_allclose(
        make_attack("alie", factor=1.5)(ht, ids)[1].numpy(), ATT.ALittleIsEnough(tau=1.5)(h), **TOL
    )
    np.testing.assert_allclose(
        make_attack("foe", factor=1.0 + 2.0)(ht, ids)[0].numpy(),
        ATT.InnerProductManipulation(tau=2.0)(h),
        **TOL,
    )
    np.testing.assert_allclose(
        make_attack("mimic", target=4)(ht, ids)[0].numpy(), ATT.Mimic(epsilon=4)(h), **TOL
    )


@pytest.mark.parametrize("s", [0.0, 0.7, 3.0])
def test_drift_objective_equals_byzfl_evaluate(s):
    h = _honest()
    f = 5
    theirs = ATT.Optimal_ALittleIsEnough(agg=AGG.TrMean(f=f), pre_agg_list=[], f=f)
    value = theirs._evaluate(h, h.mean(axis=0), s)
    ht = torch.from_numpy(h)
    drift = make_drift(TrimmedMean(f=f), ht, f)
    ours = drift(make_attack("alie").vector(ht, s))
    assert ours == pytest.approx(value**2, rel=1e-12, abs=1e-24)


def test_line_search_expansion_agrees_on_unbounded_drift():
    h = _honest()
    f = 5
    theirs = ATT.Optimal_ALittleIsEnough(
        agg=AGG.Average(), pre_agg_list=[], f=f, evals=16, start=0.0, delta=1.0, ratio=0.8
    )(h)
    ht = torch.from_numpy(h)
    attack = make_attack("alie")
    ours = attack(ht, [21], drift=make_drift(Mean(), ht, f))[0]
    assert attack.search(ht, make_drift(Mean(), ht, f)).s == 2.0**15 - 1
    np.testing.assert_allclose(ours.numpy(), theirs, **TOL)

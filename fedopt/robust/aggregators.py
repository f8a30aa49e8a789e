"""Byzantine-robust aggregation rules, batched over receivers.

Every rule is a frozen dataclass built from its hyperparameters. It aggregates, for
each of ``r`` receivers at once, the ``m`` vectors that receiver holds:

``aggregate(V[r, m, d], pivot[r, d] | None) -> [r, d]``
    Dense input: receiver ``k`` aggregates the rows of ``V[k]``.
``aggregate_pool(P[N, d], index[r, m], pivot[r, d] | None) -> [r, d]``
    Shared pool: receiver ``k`` aggregates ``P[index[k]]`` (repeats count as copies).
    Rules based on distances never build the ``[r, m, d]`` tensor in this form.

In a peer-to-peer round each honest node is a receiver and its pivot is its own
vector. A server is one receiver (``r = 1``). ``check(m, f)`` raises
:class:`~fedopt.errors.ConfigError` when ``m`` vectors are too few for ``f`` faults.

Registered names (``AGGREGATORS``, config field ``algorithm.aggregator``): ``mean``,
``nna``, ``trimmed_mean``, ``median``, ``geometric_median``, ``centered_clipping``,
``scc``, ``krum``, ``multi_krum``.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from fedopt.errors import ConfigError
from fedopt.registry import Registry
from fedopt.robust.received import Received, keep_smallest

FIELD = "algorithm.aggregator"

AGGREGATORS: Registry[type[Aggregator]] = Registry("aggregator", field=FIELD)


_register = functools.partial(AGGREGATORS.register, named=True)


def _int_at_least(value: Any, low: int, what: str, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{FIELD}.{what}: must be an integer >= {low}, got {value!r}. Fix: {fix}")


def _positive(value: Any, what: str, fix: str) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{FIELD}.{what}: must be a finite number > 0, got {value!r}. Fix: {fix}")


@dataclass(frozen=True)
class Aggregator(ABC):
    """Base class: hyperparameters, input checks and the two input layouts.

    Parameters
    ----------
    f
        Number of faulty vectors each receiver must tolerate.
    """

    f: int = 0

    name: ClassVar[str] = "?"
    uses_pivot: ClassVar[bool] = False
    """True when the result depends on the pivot (the receiver's own reference point)."""
    needs_pivot: ClassVar[bool] = False
    """True when a pivot must be given."""
    summable: ClassVar[bool] = False
    """True when the rule is a (weighted) mean of its inputs, so a server may receive
    canonical partial sums (:func:`~fedopt.engine.reduce.block_partials`) instead of every
    vector: FedAvg's streaming path."""

    def __post_init__(self) -> None:
        _int_at_least(self.f, 0, "f", "give the number of Byzantine inputs to tolerate.")

    # ----------------------------------------------------------------- bounds
    def min_inputs(self, f: int) -> int:
        """Fewest received vectors that tolerate ``f`` faults (default ``2f + 1``)."""
        return 2 * f + 1

    def min_defined(self, f: int) -> int:
        """Fewest received vectors for which the rule is defined at all.

        Default :meth:`min_inputs`: the rule refuses to run below its robustness bound.
        A rule that is still computable below it (NNA) returns less, so that callers
        can run it there, as reference codes do, with a warning instead of a guarantee.
        """
        return self.min_inputs(f)

    def check(self, n_inputs: int, f: int | None = None, *, defined_only: bool = False) -> None:
        """Raise ConfigError unless ``n_inputs`` vectors can tolerate ``f`` faults.

        Parameters
        ----------
        n_inputs
            Number ``m`` of vectors each receiver aggregates.
        f
            Faults to tolerate; default ``self.f``.
        defined_only
            Check only that the rule is defined (:meth:`min_defined`), not its
            robustness bound (:meth:`min_inputs`); used when aggregating.
        """
        f = self.f if f is None else f
        need = self.min_inputs(f)
        defined = self.min_defined(f)
        if defined_only and defined < need:
            if n_inputs < defined:
                raise ConfigError(
                    f"{FIELD}: {self.name} is defined only for at least {defined} received "
                    f"vectors per receiver ({self._defined_text()}), got m={n_inputs} with "
                    f"f={f}. Fix: lower f below m or let each receiver aggregate at least "
                    f"{defined} vectors."
                )
            return
        if n_inputs < need:
            raise ConfigError(
                f"{FIELD}: {self.name} needs at least {need} received vectors per receiver "
                f"({self._bound_text()}), got m={n_inputs} with f={f}. Fix: lower f or let "
                f"each receiver aggregate at least {need} vectors."
            )

    def _bound_text(self) -> str:
        return "m > 2f"

    def _defined_text(self) -> str:
        return self._bound_text()

    # ------------------------------------------------------------ aggregation
    def aggregate(self, vectors: Tensor, pivot: Tensor | None = None) -> Tensor:
        """Aggregate ``vectors[k]`` (``[r, m, d]``) for each receiver ``k``: ``[r, d]``.

        Parameters
        ----------
        vectors
            ``[r, m, d]`` received vectors, float32 or float64.
        pivot
            ``[r, d]`` reference point of each receiver (its own vector in P2P), or None.
        """
        return self._run(Received.dense(vectors), pivot)

    def aggregate_pool(self, pool: Tensor, index: Tensor, pivot: Tensor | None = None) -> Tensor:
        """Aggregate ``pool[index[k]]`` for each receiver ``k``: ``[r, d]``.

        Parameters
        ----------
        pool
            ``[N, d]`` distinct vectors of the round (honest ones and Byzantine ones).
        index
            ``[r, m]`` rows of ``pool`` that receiver ``k`` holds; a repeated row is a
            repeated copy (e.g. ``f`` identical Byzantine vectors).
        pivot
            ``[r, d]`` reference point of each receiver, or None.
        """
        return self._run(Received.pool(pool, index), pivot)

    def __call__(self, vectors: Tensor, pivot: Tensor | None = None) -> Tensor:
        """Same as :meth:`aggregate`."""
        return self.aggregate(vectors, pivot)

    def _run(self, rec: Received, pivot: Tensor | None) -> Tensor:
        self.check(rec.m, defined_only=True)
        if pivot is not None:
            if pivot.shape != (rec.r, rec.d):
                raise ConfigError(
                    f"{FIELD}: {self.name} pivot must have shape [r, d] = [{rec.r}, {rec.d}], "
                    f"got {tuple(pivot.shape)}. Fix: give one pivot row per receiver."
                )
            pivot = pivot.to(rec.points.dtype)
        elif self.needs_pivot:
            raise ConfigError(
                f"{FIELD}: {self.name} needs a pivot per receiver, got None. Fix: pass "
                "pivot=[r, d] (in peer-to-peer, each node's own vector)."
            )
        return self._apply(rec, pivot)

    @abstractmethod
    def _apply(self, rec: Received, pivot: Tensor | None) -> Tensor:
        """The rule itself on a checked batch."""

    # ------------------------------------------------- attack simulation hook
    def copies_mean_fn(
        self, honest: Tensor, copies: int, pivots: Tensor | None = None
    ) -> Callable[[Tensor], Tensor]:
        """Build ``b -> mean_k Agg(honest ∪ {copies × b}; pivots[k])``.

        Every receiver holds all ``h`` honest vectors and ``copies`` copies of ``b``
        (``m = h + copies``). An omniscient attacker uses this map to predict the
        honest nodes' average after aggregation.

        Parameters
        ----------
        honest
            ``[h, d]`` honest vectors.
        copies
            Number of copies of the Byzantine vector (usually ``f``).
        pivots
            ``[r, d]`` pivots of the receivers. When None, a rule that uses a pivot takes
            each honest vector as the pivot of one receiver (peer-to-peer); a rule that
            ignores pivots simulates one receiver, since all receivers agree.

        Returns
        -------
        Callable
            Maps ``b`` of shape ``[d]`` to the ``[d]`` mean over receivers.
        """
        h = honest.shape[0]
        self.check(h + copies)
        row = torch.cat(
            [
                torch.arange(h, device=honest.device),
                torch.full((copies,), h, device=honest.device, dtype=torch.int64),
            ]
        )
        if self.uses_pivot:
            receivers = honest if pivots is None else pivots
            index = row.expand(receivers.shape[0], -1)
        else:
            receivers = None
            index = row.unsqueeze(0)

        def mean_after(b: Tensor) -> Tensor:
            pool = torch.cat([honest, b.unsqueeze(0).to(honest.dtype)])
            return self.aggregate_pool(pool, index, receivers).mean(0)

        return mean_after


def sort_received(V: Tensor) -> Tensor:
    """``V [r, m, d]`` sorted along ``m`` (each coordinate's received values in order).

    On the CPU numpy's sort is used: for a short axis with a long stride it is about 5x
    faster than ``torch.sort`` (20 vs 100 ms for ``[21, 20, 4810]`` on one thread); the
    sorted values are the same.
    """
    if V.device.type == "cpu":
        return torch.from_numpy(np.sort(V.numpy(), axis=1))
    return torch.sort(V, dim=1).values


# --------------------------------------------------------------------- rules
@_register("mean")
@dataclass(frozen=True)
class Mean(Aggregator):
    """Plain average of the received vectors (not robust; ``f`` is ignored).

    Used for D-SGD (``f = 0``), for FedAvg's server (summed, with sample weights, when
    no client is Byzantine) and for the "averaging under attack" reference curve.
    """

    summable: ClassVar[bool] = True

    def min_inputs(self, f: int) -> int:
        return 1

    def _bound_text(self) -> str:
        return "m >= 1"

    def _apply(self, rec: Received, pivot: Tensor | None) -> Tensor:
        return rec.combine(rec.counts / rec.m)


@_register("nna")
@dataclass(frozen=True)
class NNA(Aggregator):
    """Nearest-neighbour averaging around the pivot (Farhadkhani et al., MoNNA).

    Rule: sort the ``m`` received vectors by ``‖x − p‖₂`` over the whole flattened
    vector, keep the ``m − f`` closest and return their plain average. When the pivot is
    one of the received vectors (P2P: each node's own half step) its distance is exactly
    0, so it is always kept. With ``m = n − f`` received, ``n − 2f`` vectors are averaged.
    Ties keep the earlier row. Its robustness bound is ``m > 2f`` (:meth:`check`); it is
    defined whenever it keeps at least one vector, ``m > f``, and aggregates there too
    (the MoNNA reference code runs ``n/3 <= f < n/2``, where ``m = n − f <= 2f``).
    """

    uses_pivot: ClassVar[bool] = True
    needs_pivot: ClassVar[bool] = True

    def min_defined(self, f: int) -> int:
        return f + 1

    def _defined_text(self) -> str:
        return "it keeps the m − f nearest, so m > f"

    def _apply(self, rec: Received, pivot: Tensor | None) -> Tensor:
        keep = rec.m - self.f
        kept = keep_smallest(rec.distances(pivot), rec.counts, keep)
        return rec.combine(kept / keep)

    def copies_mean_fn(
        self, honest: Tensor, copies: int, pivots: Tensor | None = None
    ) -> Callable[[Tensor], Tensor]:
        """Fast form of :meth:`Aggregator.copies_mean_fn` for NNA.

        The honest-to-pivot distances are computed once; each call costs ``O(r d)``
        (distances from ``b`` to the pivots) plus one ``[h + 1] × [h + 1, d]`` product,
        because the mean of the receivers' averages is an average of the pool rows with
        weights ``mean_k kept[k] / (m − f)``.
        """
        h = honest.shape[0]
        m = h + copies
        self.check(m, defined_only=True)
        pivots = honest if pivots is None else pivots.to(honest.dtype)
        keep = m - self.f
        to_honest = torch.cdist(pivots, honest, compute_mode="donot_use_mm_for_euclid_dist")
        counts = honest.new_ones(pivots.shape[0], h + 1)
        counts[:, h] = copies

        def mean_after(b: Tensor) -> Tensor:
            b = b.to(honest.dtype)
            to_b = torch.cdist(pivots, b.unsqueeze(0), compute_mode="donot_use_mm_for_euclid_dist")
            kept = keep_smallest(torch.cat([to_honest, to_b], dim=1), counts, keep)
            w = kept.mean(0) / keep
            return w[:h] @ honest + w[h] * b

        return mean_after


@_register("trimmed_mean")
@dataclass(frozen=True)
class TrimmedMean(Aggregator):
    """Coordinate-wise trimmed mean (Yin et al. 2018; BRIDGE, Yang & Bajwa 2019).

    Rule: in every coordinate drop the ``f`` lowest and the ``f`` highest values and
    average the remaining ``m − 2f``. Needs ``m > 2f``.
    """

    def _apply(self, rec: Received, pivot: Tensor | None) -> Tensor:
        ordered = sort_received(rec.stacked())
        return ordered[:, self.f : rec.m - self.f].mean(dim=1)


@_register("median")
@dataclass(frozen=True)
class Median(Aggregator):
    """Coordinate-wise median (Yin et al. 2018).

    Rule: the middle value of every coordinate; for even ``m`` the average of the two
    middle values (the numpy convention, not ``torch.median``'s lower median). Needs
    ``m > 2f``.
    """

    def _apply(self, rec: Received, pivot: Tensor | None) -> Tensor:
        ordered = sort_received(rec.stacked())
        mid = rec.m // 2
        if rec.m % 2:
            return ordered[:, mid]
        return 0.5 * (ordered[:, mid - 1] + ordered[:, mid])


@_register("geometric_median")
@dataclass(frozen=True)
class GeometricMedian(Aggregator):
    """Geometric median by smoothed Weiszfeld iterations (RFA, Pillutla et al. 2022).

    Rule: start at ``z = 0`` and repeat ``iterations`` times
    ``β_i = 1 / max(ν, ‖z − x_i‖₂)``, ``z ← Σ β_i x_i / Σ β_i`` (equal weights ``α_i``
    cancel). The MoNNA baselines use ``ν = 0.1`` and ``T = 3``. Needs ``m > 2f``.

    Parameters
    ----------
    nu
        Smoothing ``ν > 0``: distances below ``ν`` count as ``ν``.
    iterations
        Number ``T`` of Weiszfeld steps.
    """

    nu: float = 0.1
    iterations: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self.nu, "nu", "use the smoothing of RFA, e.g. nu: 0.1.")
        _int_at_least(self.iterations, 1, "iterations", "use e.g. iterations: 3.")

    def _apply(self, rec: Received, pivot: Tensor | None) -> Tensor:
        z = rec.points.new_zeros(rec.r, rec.d)
        for _ in range(self.iterations):
            beta = rec.counts / rec.distances(z).clamp(min=self.nu)
            z = rec.combine(beta) / beta.sum(dim=1, keepdim=True)
        return z


@_register("centered_clipping")
@dataclass(frozen=True)
class CenteredClipping(Aggregator):
    """Centered clipping (Karimireddy, He & Jaggi, ICML 2021).

    Rule: start at the center ``v`` (the pivot; 0 when no pivot is given) and repeat
    ``iterations`` times ``v ← v + (1/m) Σ_i clip(x_i − v, τ)`` with
    ``clip(u, τ) = u · min(1, τ / ‖u‖₂)``. The paper's center is the previous aggregate:
    the caller keeps it and passes it as the pivot (the rule itself is stateless).
    ``τ`` has no universal value and must be tuned. Needs ``m > 2f`` (honest majority);
    the paper's guarantee needs a smaller fraction ``f/m``.

    Parameters
    ----------
    tau
        Clipping radius ``τ > 0``.
    iterations
        Number ``L`` of clipping steps.
    """

    tau: float = 10.0
    iterations: int = 1

    uses_pivot: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self.tau, "tau", "give the clipping radius, e.g. tau: 2.0.")
        _int_at_least(self.iterations, 1, "iterations", "use e.g. iterations: 3.")

    def _apply(self, rec: Received, pivot: Tensor | None) -> Tensor:
        v = rec.points.new_zeros(rec.r, rec.d) if pivot is None else pivot
        for _ in range(self.iterations):
            dist = rec.distances(v)
            scale = rec.counts * torch.where(dist > self.tau, self.tau / dist, 1.0)
            v = v + (rec.combine(scale) - scale.sum(dim=1, keepdim=True) * v) / rec.m
        return v


@_register("scc")
@dataclass(frozen=True)
class SelfCenteredClipping(CenteredClipping):
    """Self-centered clipping (He, Karimireddy & Jaggi 2022, ClippedGossip).

    Rule: centered clipping started at the receiver's own vector (the pivot, required):
    ``v ← own; repeat 3×: v ← v + (1/m) Σ_i clip(x_i − v, τ)``. The MoNNA baselines use
    ``τ = 2`` (MNIST) and ``τ = 5`` (CIFAR-10). Needs ``m > 2f``.
    """

    tau: float = 2.0
    iterations: int = 3

    needs_pivot: ClassVar[bool] = True


@_register("multi_krum")
@dataclass(frozen=True)
class MultiKrum(Aggregator):
    """Multi-Krum (Blanchard et al., NeurIPS 2017).

    Rule: the score of a received vector is the sum of its squared distances to its
    ``m − f − 2`` nearest other received vectors; average the ``m_keep`` vectors of
    lowest score (ties: earlier row first). Needs ``m > 2f + 2`` and
    ``1 <= m_keep <= m − f``.

    Parameters
    ----------
    m_keep
        Number of vectors averaged; None means ``m − f``.
    """

    m_keep: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.m_keep is not None:
            _int_at_least(self.m_keep, 1, "m_keep", "use at least 1 (1 is plain Krum).")

    def min_inputs(self, f: int) -> int:
        return 2 * f + 3

    def _bound_text(self) -> str:
        return "m > 2f + 2"

    def check(self, n_inputs: int, f: int | None = None, *, defined_only: bool = False) -> None:
        super().check(n_inputs, f, defined_only=defined_only)
        f = self.f if f is None else f
        if self.m_keep is not None and self.m_keep > n_inputs - f:
            raise ConfigError(
                f"{FIELD}.m_keep: {self.name} averages at most m − f = {n_inputs - f} vectors "
                f"(m={n_inputs}, f={f}), got m_keep={self.m_keep}. Fix: set m_keep <= "
                f"{n_inputs - f} or leave it unset."
            )

    def _keep(self, m: int) -> int:
        return m - self.f if self.m_keep is None else self.m_keep

    def scores(self, vectors: Tensor) -> Tensor:
        """Krum scores of the received vectors ``[r, m, d]``: ``[r, m]``."""
        rec = Received.dense(vectors)
        self.check(rec.m)
        return krum_scores(rec, self.f)

    def _apply(self, rec: Received, pivot: Tensor | None) -> Tensor:
        keep = self._keep(rec.m)
        kept = keep_smallest(krum_scores(rec, self.f), rec.counts, keep)
        return rec.combine(kept / keep)


@_register("krum")
@dataclass(frozen=True)
class Krum(MultiKrum):
    """Krum (Blanchard et al., NeurIPS 2017): the received vector of lowest score.

    Rule: score as in Multi-Krum (sum of squared distances to the ``m − f − 2`` nearest
    others) and return the vector of lowest score (ties: earlier row). Needs
    ``m > 2f + 2``.
    """

    m_keep: int | None = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.m_keep != 1:
            raise ConfigError(
                f"{FIELD}.m_keep: krum keeps exactly one vector, got m_keep={self.m_keep!r}. "
                "Fix: use aggregator multi_krum to average several."
            )


def krum_scores(rec: Received, f: int) -> Tensor:
    """Krum score of every point of every receiver: ``[r, N]``.

    The score of point ``j`` for receiver ``k`` is the sum of the ``q = m − f − 2``
    smallest squared distances from ``j`` to the other entries of receiver ``k``'s
    multiset (one copy of ``j`` itself is left out; further copies count, at distance 0).
    Points the receiver does not hold score ``+inf``.
    """
    q = rec.m - f - 2
    sq = rec.pairwise().square()
    order = torch.argsort(sq, dim=-1, stable=True)
    sq_sorted = sq.gather(-1, order)
    n_pts = rec.counts.shape[1]
    eye = torch.eye(n_pts, dtype=rec.counts.dtype, device=rec.counts.device)
    others = rec.counts.unsqueeze(1) - eye
    others_sorted = others.gather(-1, order.expand(rec.r, n_pts, n_pts))
    before = others_sorted.cumsum(-1) - others_sorted
    taken = (q - before).clamp_(min=0).minimum(others_sorted)
    scores = (taken * sq_sorted).sum(-1)
    return scores.masked_fill(rec.counts == 0, math.inf)


# ------------------------------------------------------------------- factory
def rule_constants(rule: Aggregator, prefix: str = "aggregator") -> dict[str, Any]:
    """The rule's name and hyperparameters as flat constants (``aggregator.f``, ...)."""
    out: dict[str, Any] = {prefix: rule.name}
    out.update({f"{prefix}.{fl.name}": getattr(rule, fl.name) for fl in fields(rule)})
    return out


def make_aggregator(name: str, **params: Any) -> Aggregator:
    """Build the aggregator registered as ``name`` from its hyperparameters.

    Raises ConfigError for an unknown name (listing the known ones) or an unknown
    hyperparameter (listing the accepted ones).
    """
    cls = AGGREGATORS.get(name)
    accepted = [fl.name for fl in fields(cls)]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(
            f"{FIELD}: {name} has no parameter {', '.join(map(repr, unknown))}. "
            f"Fix: use only {', '.join(accepted)}."
        )
    return cls(**params)

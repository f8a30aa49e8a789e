"""The problem seam: a node-batched oracle built inside a worker from a spec and a seed.

A *problem* defines the global objective

    F(x) = sum_i p_i f_i(x),   p_i >= 0,  sum_i p_i = 1,

over the *data nodes* (every node whose role is not ``server``). Node ``i``'s data are
generated or loaded where the node lives, from the experiment seed and the node's
*data rank* (its index among data nodes), never shipped from the driver.

An :class:`Oracle` serves a batch of hosted data nodes at once: every method takes a
parameter matrix ``X`` of shape ``[k, dim]`` (one row per node in ``rows``) and works on
all rows with batched tensor math. ``rows`` are indices into the oracle's own hosted
list (0..k_hosted-1), so the same call works on the whole shard or on a chunk.
Minibatch randomness is drawn with :mod:`fedopt.rng` keyed by
``(seed, purpose, data_rank, step)``, so a node's stream never depends on placement;
``step`` is one ``int`` for all rows or a ``[k]`` int64 tensor giving each row its own
step (asynchronous methods), and row ``j`` then has the bits of a call at ``step[j]``.

The oracle is a small core; what more a problem provides (conjugate gradients, labels,
counted zeroth-order queries, per-sample gradients, a neural model) it declares as
capabilities (:mod:`fedopt.problems.capabilities`), which algorithms require by name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

import torch

from fedopt.fields import Section
from fedopt.problems.capabilities import Capability, check_declaration

Step: TypeAlias = int | torch.Tensor
"""A step counter: one ``int`` for all rows, or a ``[k]`` int64 tensor (one per row)."""


class ProblemConfig(Section):
    """Base of every problem's hyperparameter model (frozen, closed, finite: see
    :class:`~fedopt.fields.Section`)."""

    name: str


@dataclass(frozen=True)
class OptimumStats:
    """Per-node sufficient statistics of a closed-form optimum.

    The optimum is ``x* = solve(sum_i H_i, sum_i g_i)`` where node ``i`` contributes
    ``H_i`` and ``g_i`` (already multiplied by its objective weight ``p_i``). Rows are
    kept per node, keyed by data rank, and summed in the canonical order of
    :mod:`fedopt.engine.reduce`, so ``x*`` has the same bits however the nodes are
    split across workers. ``H`` rows are ``[dim]`` for a diagonal curvature or
    ``[dim, dim]`` otherwise.
    """

    ranks: torch.Tensor  # [k] int64
    H: torch.Tensor  # [k, dim] (diagonal) or [k, dim, dim], float64
    g: torch.Tensor  # [k, dim], float64

    def __add__(self, other: OptimumStats) -> OptimumStats:
        return OptimumStats(
            torch.cat([self.ranks, other.ranks]),
            torch.cat([self.H, other.H]),
            torch.cat([self.g, other.g]),
        )

    def totals(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sum_i H_i, sum_i g_i)`` in canonical (rank) order."""
        from fedopt.engine.reduce import canonical_sum

        order = torch.argsort(self.ranks)
        k = len(order)
        H = canonical_sum(self.H[order].reshape(k, -1)).reshape(self.H.shape[1:])
        return H, canonical_sum(self.g[order])

    def solve(self) -> torch.Tensor:
        """The optimum ``x*`` in float64 (``g / H`` for a diagonal curvature)."""
        H, g = self.totals()
        if H.ndim == 1:
            return g / H
        return torch.linalg.solve(H, g)


def solve_optimum(parts: Sequence[OptimumStats | None]) -> torch.Tensor | None:
    """``x*`` from every worker's partial statistics (None when a problem has none)."""
    stats = [s for s in parts if s is not None]
    if not stats:
        return None
    total = stats[0]
    for s in stats[1:]:
        total = total + s
    return total.solve()


class Oracle(ABC):
    """Node-batched first- and zeroth-order oracle for the hosted data nodes (the core).

    Attributes
    ----------
    dim
        Number of parameters per node.
    dtype
        Declared dtype of the parameters and data (what :meth:`grad` returns; workers
        keep node parameters in it).
    data_ranks
        ``[k]`` int64, data rank of each hosted node (row order of every batch).
    weights
        ``[k]`` float64, the objective weights ``p_i`` of the hosted nodes (global
        normalisation: the ``p_i`` of *all* data nodes sum to one).
    num_samples
        ``[k]`` float64, number of training samples per hosted node (1 for problems
        without samples).
    capabilities
        What the oracle provides beyond the core (:class:`Capability`), each with its
        protocol's methods; a class declaring one without them cannot be defined.
    has_gradients
        Whether the core gradients (:meth:`grad`, :meth:`full_grad`, :meth:`sgd_step_`)
        exist. False for black-box problems (:mod:`fedopt.problems.blackbox`), whose
        ``f_i`` can only be queried (capability ``noisy_queries``): their gradient
        methods raise ``TypeError``, and the compiler refuses them to every algorithm
        that is not :attr:`~fedopt.algorithms.base.Algorithm.zeroth_order`.
    """

    dim: int
    dtype: torch.dtype = torch.float32
    data_ranks: torch.Tensor
    weights: torch.Tensor
    num_samples: torch.Tensor
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    has_gradients: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_declaration(cls)

    def provides(self, capability: Capability) -> bool:
        """Whether this oracle declares ``capability``."""
        return capability in self.capabilities

    @abstractmethod
    def init_params(self, rows: torch.Tensor) -> torch.Tensor:
        """Initial parameters ``[len(rows), dim]`` (deterministic from the seed)."""

    @abstractmethod
    def grad(self, X: torch.Tensor, rows: torch.Tensor, step: Step) -> torch.Tensor:
        """Stochastic (minibatch) gradient ``[k, dim]`` of f_i at X[k] for each row.

        The minibatch of node ``i`` at ``step`` is keyed by (seed, "batch", rank_i, step);
        ``step`` is an ``int`` or a ``[k]`` int64 tensor of per-row steps. Full-batch
        problems ignore ``step``.
        """

    def full_grad(self, X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Exact gradient of f_i at X for each row (default: :meth:`grad` at step 0)."""
        return self.grad(X, rows, 0)

    @abstractmethod
    def value(self, X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Exact local objective ``f_i(X[k])`` for each row: ``[k]`` float64."""

    def sgd_step_(self, X: torch.Tensor, rows: torch.Tensor, step: Step, lr: float) -> None:
        """In-place ``X <- X - lr * grad(X)``; problems may fuse this (fast path)."""
        X.sub_(self.grad(X, rows, step), alpha=lr)

    def evaluate(self, x: torch.Tensor) -> dict[str, float]:
        """Additive evaluation sums of a single model ``x [dim]`` on the hosted nodes.

        Returns ``{"loss": sum_i p_i f_i(x)}`` plus, with the ``labels`` capability,
        ``{"correct": ..., "count": ...}`` over the hosted training samples. Sums from
        all workers add up to the global figures.
        """
        rows = torch.arange(len(self.data_ranks), device=x.device)
        vals = self.value(x.unsqueeze(0).expand(len(rows), -1), rows)
        return {"loss": float((vals * self.weights).sum())}

    def evaluate_test(self, x: torch.Tensor) -> dict[str, float]:
        """Metrics of ``x`` on a held-out test set shared by all nodes (may be empty)."""
        return {}

    def curvature_bounds(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Per hosted node ``(mu_i, L_i)``: ``mu_i I <= Hessian of f_i <= L_i I`` (float64).

        None when the problem cannot bound its curvature (methods that need mu and L,
        such as DADAO, then ask for them in their config).
        """
        return None

    def optimum_stats(self) -> OptimumStats | None:
        """Partial sufficient statistics of the closed-form optimum, or None if unknown."""
        return None


class Problem:
    """A registered problem family: its config model and the oracle class it builds.

    Subclasses set ``Config`` and ``oracle_class``; the oracle class is constructed as
    ``oracle_class(config, seed, data_ranks, num_data_nodes, device)``.
    """

    Config: ClassVar[type[ProblemConfig]]
    oracle_class: ClassVar[type[Oracle]]

    @classmethod
    def capabilities(cls, config: ProblemConfig | None = None) -> frozenset[Capability]:
        """What the oracle built from ``config`` provides (default: its class declaration).

        The compiler checks an algorithm's required capabilities against this; a
        problem whose capabilities depend on its config overrides it.
        """
        return cls.oracle_class.capabilities

    @classmethod
    def has_gradients(cls, config: ProblemConfig | None = None) -> bool:
        """Whether the oracle built from ``config`` has gradients (default: its class's
        :attr:`Oracle.has_gradients`); False for query-only black boxes."""
        return cls.oracle_class.has_gradients

    @classmethod
    def build(
        cls,
        config: ProblemConfig,
        *,
        seed: int,
        data_ranks: torch.Tensor,
        num_data_nodes: int,
        device: torch.device,
    ) -> Oracle:
        """Build the oracle for the hosted data nodes ``data_ranks`` (int64 ``[k]``)."""
        from fedopt.problems._common import coerce_config

        cfg = coerce_config(config, cls.Config, "problem")
        return cls.oracle_class(cfg, seed, data_ranks, num_data_nodes, torch.device(device))  # type: ignore[call-arg]

    @classmethod
    def param_dim(cls, config: ProblemConfig) -> int | None:
        """Parameters per node before any oracle is built (None when unknown).

        Used by the memory budget (:mod:`fedopt.engine.budget`); default: the config's
        ``dim`` field.
        """
        dim = getattr(config, "dim", None)
        return int(dim) if isinstance(dim, int) else None

    @classmethod
    def buffer_dim(cls, config: ProblemConfig) -> int:
        """Width of the per-node buffer rows that travel with the parameters (0: none).

        Non-zero for a model that keeps running statistics (``digits_model`` with
        ``batchnorm: running``; capability ``model``): algorithms must then move the rows
        with the models (``Algorithm.moves_buffers``), which the compiler checks.
        """
        return 0

    @classmethod
    def param_itemsize(cls, config: ProblemConfig) -> int:
        """Bytes per parameter: 8 for ``dtype: float64``, else 4 (float32)."""
        return 8 if getattr(config, "dtype", "float32") == "float64" else 4

    @classmethod
    def data_bytes(cls, config: ProblemConfig, num_nodes: int) -> tuple[int, str]:
        """Upper bound of the bytes an oracle for ``num_nodes`` data nodes holds at once:
        stored data plus evaluation temporaries, and how it was computed.

        Used by the memory budget before any data exist; default ``(0, "")`` (a plug-in
        problem that stores data should override it).
        """
        return 0, ""

    @staticmethod
    def summary(config: ProblemConfig) -> dict[str, object]:
        """Facts for ``fedopt list`` / run records (dimension, dataset size...)."""
        return {}

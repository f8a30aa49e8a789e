"""Declared oracle capabilities: what a problem provides beyond the core oracle.

Every :class:`~fedopt.problems.base.Oracle` has the small core (``init_params``,
``grad``, ``full_grad``, ``value``, ``evaluate``, ``dim``, ``dtype``). Anything more is a
*capability*: a named :class:`Capability` with a protocol (the methods and attributes
that come with it). An oracle class declares what it provides,

    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.LABELS})

and an algorithm names what it needs in ``Algorithm.requires`` (next to its topology
requirements); :func:`~fedopt.engine.compile.compile_plan` refuses a mismatch, naming
the algorithm, the problem, the missing capability and the problems that provide it
(:func:`require`). A declaration cannot lie: defining an oracle class that declares a
capability without its methods raises ``TypeError`` (:func:`check_declaration`), and
the test suite checks every registered problem both ways (declared == implemented).

========================  ===========================================================
``conjugate_gradients``   :class:`ConjugateGradients`: ``conjugate_grad`` (dual methods)
``labels``                :class:`Labels`: ``num_classes``, ``flipped_grad``; evaluation
                          reports accuracy (``correct``, ``count``)
``noisy_queries``         :class:`NoisyQueries`: counted zeroth-order ``query``
``per_sample_gradients``  :class:`PerSampleGradients`: ``per_sample_grad``,
                          ``clipped_mean_grad``, ``clipped_grad_sum``, ``max_samples``
                          (differential privacy)
``model``                 :class:`ModelOracle`: ``layout``, ``buf_dim``, ``buffers``,
                          ``get_buffers``, ``set_buffers``, ``reset_buffers``,
                          ``evaluate_nodes``, ``activations`` (neural models;
                          :mod:`fedopt.models`)
``batch_values``          :class:`BatchValues`: ``batch_value`` (the loss on ``grad``'s
                          minibatch, MeZO/FedKSeed two-point estimates), ``forwards``,
                          ``backwards`` (counted passes)
========================  ===========================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import torch

from fedopt import rng
from fedopt.errors import ConfigError

if TYPE_CHECKING:
    from fedopt.problems.base import Step


class Capability(StrEnum):
    """A named oracle capability (its value is the name used in messages and lists)."""

    CONJUGATE_GRADIENTS = "conjugate_gradients"
    LABELS = "labels"
    NOISY_QUERIES = "noisy_queries"
    PER_SAMPLE_GRADIENTS = "per_sample_gradients"
    MODEL = "model"
    BATCH_VALUES = "batch_values"


# ----------------------------------------------------------------------------- protocols


@runtime_checkable
class ConjugateGradients(Protocol):
    """Gradients of the convex conjugates ``grad f_i*`` (MSDA, continuized gossip)."""

    def conjugate_grad(self, Y: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``grad f_i*(y) = argmax_x <x, y> - f_i(x)`` per row: float64 ``[k, dim]``.

        May raise ``ValueError`` when some ``f_i*`` is not differentiable (a singular
        curvature); callers turn that into a :class:`~fedopt.errors.ConfigError`.
        """
        ...


@runtime_checkable
class Labels(Protocol):
    """Classification with ``num_classes`` class labels.

    :meth:`flipped_grad` is what a label-flipping attacker computes (Allen-Zhu et al.,
    ICLR 2021); the oracle's ``evaluate`` also reports ``correct`` and ``count`` (the
    accuracy of the model on the hosted training samples).
    """

    num_classes: int

    def flipped_grad(self, X: torch.Tensor, rows: torch.Tensor, step: Step) -> torch.Tensor:
        """``grad`` on the same minibatch with every label ``y`` mapped to ``K - 1 - y``."""
        ...


@runtime_checkable
class NoisyQueries(Protocol):
    """Counted zeroth-order queries ``y_i = f_i(x_i) + noise_std * xi`` (FedZO-type methods).

    ``queries`` is the number of function values served so far (one per row per call),
    for the worker to read and report.
    """

    queries: int

    def query(
        self, X: torch.Tensor, rows: torch.Tensor, step: Step, noise_std: float
    ) -> torch.Tensor:
        """Noisy values ``[k]`` float64; the noise is keyed by (seed, "query", rank, step)."""
        ...


@runtime_checkable
class PerSampleGradients(Protocol):
    """Gradients of every sample of the minibatch or of the whole local dataset (DP-SGD,
    DP-GD and DIFF2-type clipping).

    The per-sample loss includes the ridge term, so the mean of the per-sample
    gradients over the batch is :meth:`~fedopt.problems.base.Oracle.grad`.
    ``max_samples`` is the size of the largest local dataset among the hosted nodes
    (the width of :meth:`clipped_grad_sum`'s mask).
    """

    max_samples: int

    def per_sample_grad(self, X: torch.Tensor, rows: torch.Tensor, step: Step) -> torch.Tensor:
        """``[k, b, dim]``: the gradient of each of the ``b`` samples of ``grad``'s batch."""
        ...

    def clipped_mean_grad(
        self, X: torch.Tensor, rows: torch.Tensor, step: Step, clip: float
    ) -> torch.Tensor:
        """``[k, dim]``: ``(1/b) sum_s g_s min(1, clip / ||g_s||)`` over the same batch."""
        ...

    def clipped_grad_sum(
        self,
        X: torch.Tensor,
        rows: torch.Tensor,
        clip: float | torch.Tensor,
        X_prev: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[k, dim]``: sum over every training sample ``s`` of node ``rows[i]``.

        The sum runs over the node's whole local dataset (ignoring ``batch_size``) of

            mask[i, s] * clip_c( g_s(X[i]) - g_s(X_prev[i]) )

        (the ``g_s(X_prev)`` term only when ``X_prev`` is given), with
        ``clip_c(v) = v * min(1, c / (||v|| + 1e-10))`` (DIFF2's clipping, spec diff2.md
        section 4.3). ``c = clip``: a float, or a ``[k]`` tensor (one radius per row);
        ``c = inf``: no clipping; ``c = 0``: zeros. ``mask``: ``[k, max_samples]`` 0/1
        float; entries beyond a node's ``num_samples`` are ignored; None = all samples.

        A sum, not a mean, so the caller divides by ``n_i`` exactly (never a mean of batch
        means: DIFF2 pitfall D1) or by an expected batch size (DP-SGD with a Poisson mask).
        Replacing one sample of node ``i`` changes row ``i`` by at most ``2c`` in norm.
        """
        ...


@runtime_checkable
class ModelOracle(Protocol):
    """A neural model of :mod:`fedopt.models`: layout, per-node buffers, per-node evaluation,
    activations.

    Buffers are the non-trained per-node state that travels with the parameters
    (BatchNorm running means and variances, ``problem.batchnorm: running``): the oracle
    keeps one flat row ``[buf_dim]`` per hosted node (``layout.buffers`` order), which its
    training calls (``grad``, ``sgd_step_``) update in place as a train-mode forward pass
    of ``torch.nn.BatchNorm`` does, and which its evaluation reads (eval mode). Algorithms
    that move models move these rows too (:attr:`Algorithm.moves_buffers
    <fedopt.algorithms.base.Algorithm.moves_buffers>`): they load them with
    :meth:`set_buffers` before local training and read them back with :meth:`get_buffers`.
    ``buf_dim`` is 0 when nothing travels (no BatchNorm, or batch statistics only); the
    buffer methods then work on ``[k, 0]`` rows.
    """

    layout: Any
    buf_dim: int

    def buffers(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """The rows' buffers by tensor name, ``{name: [k, *shape]}`` (``{}`` when none)."""
        ...

    def get_buffers(self, rows: torch.Tensor) -> torch.Tensor:
        """A copy of the rows' flat buffer rows ``[k, buf_dim]``."""
        ...

    def set_buffers(self, rows: torch.Tensor, B: torch.Tensor) -> None:
        """Replace the rows' buffer rows by ``B [k, buf_dim]``."""
        ...

    def reset_buffers(
        self, X: torch.Tensor, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """BN reset: ``(buffers [k, buf_dim], forward passes [k])`` recomputed for the
        parameter rows ``X`` on each node's own training samples (cumulative average,
        :func:`fedopt.models.reset_bn`); the oracle keeps the new rows."""
        ...

    def evaluate_nodes(
        self, X: torch.Tensor, rows: torch.Tensor, buffers: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-node metrics ``[k]`` of each row's own model (loss, accuracy...)."""
        ...

    def activations(
        self,
        X: torch.Tensor,
        rows: torch.Tensor,
        points: Any = None,
        data: Any = "train",
        samples: int | None = None,
        buffers: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Activations ``{group: [k, samples, units]}`` at the layout's capture points."""
        ...


@runtime_checkable
class BatchValues(Protocol):
    """Loss values on the minibatch of a step, with counted forward and backward passes.

    ``batch_value(X, rows, step)`` is the minibatch loss whose gradient
    :meth:`~fedopt.problems.base.Oracle.grad` returns at the same ``(rows, step)``: the
    same samples, so two calls at ``x + eps z`` and ``x - eps z`` with one ``step`` give a
    two-point zeroth-order estimate on one minibatch (MeZO, FedKSeed). ``forwards`` and
    ``backwards`` count model passes over one row's minibatch (a ``grad`` call adds
    ``len(rows)`` to both, a ``batch_value`` call ``len(rows)`` to ``forwards``), per
    oracle, i.e. per worker, like ``queries``.
    """

    forwards: int
    backwards: int

    def batch_value(self, X: torch.Tensor, rows: torch.Tensor, step: Step) -> torch.Tensor:
        """Minibatch losses ``[k]`` float64 at ``X`` on ``grad``'s minibatch of ``step``."""
        ...


PROTOCOLS: dict[Capability, type] = {
    Capability.CONJUGATE_GRADIENTS: ConjugateGradients,
    Capability.LABELS: Labels,
    Capability.NOISY_QUERIES: NoisyQueries,
    Capability.PER_SAMPLE_GRADIENTS: PerSampleGradients,
    Capability.MODEL: ModelOracle,
    Capability.BATCH_VALUES: BatchValues,
}


def members(capability: Capability) -> tuple[str, ...]:
    """Names of the methods and attributes the capability's protocol asks for."""
    proto = PROTOCOLS[capability]
    names = {n for n, v in vars(proto).items() if callable(v) and not n.startswith("_")}
    return tuple(sorted(names | set(proto.__annotations__)))


def methods(capability: Capability) -> tuple[str, ...]:
    """The protocol's methods (the members a class must define, not just its instances)."""
    proto = PROTOCOLS[capability]
    return tuple(sorted(n for n, v in vars(proto).items() if callable(v) and n[0] != "_"))


def implemented(obj: Any) -> frozenset[Capability]:
    """Capabilities whose every member ``obj`` (a class or an instance) has.

    On a class, attributes set in ``__init__`` are invisible; pass an instance to see
    them.
    """
    return frozenset(c for c in Capability if all(hasattr(obj, m) for m in members(c)))


def check_declaration(cls: type) -> None:
    """Raise ``TypeError`` when ``cls`` declares a capability without its methods."""
    for cap in sorted(getattr(cls, "capabilities", frozenset())):
        if not isinstance(cap, Capability):
            raise TypeError(
                f"{cls.__name__}.capabilities: {cap!r} is not a Capability; use one of "
                f"{', '.join(c.value for c in Capability)}"
            )
        missing = [m for m in methods(cap) if not callable(getattr(cls, m, None))]
        if missing:
            raise TypeError(
                f"{cls.__name__} declares capability {cap.value!r} but does not define "
                f"{', '.join(missing)}; implement them or drop the declaration"
            )


def providers(capability: Capability) -> list[str]:
    """Sorted names of the registered problems whose oracle declares ``capability``."""
    from fedopt.problems.registry import PROBLEMS

    return sorted(n for n in PROBLEMS if capability in PROBLEMS.get(n).capabilities())


def require(
    needs: Iterable[Capability],
    who: str,
    problem_name: str,
    problem_cls: Any,
    config: Any = None,
    field: str = "problem.name",
) -> None:
    """Refuse a problem that lacks a capability ``who`` needs (a :class:`ConfigError`).

    Parameters
    ----------
    needs
        The capabilities required.
    who
        What needs them, as it reads in the message (``"algorithm 'msda'"``).
    problem_name, problem_cls, config
        The experiment's problem, its registered class and its config.
    field
        The config field the message starts with.
    """
    have = problem_cls.capabilities(config)
    for cap in sorted(needs):
        if cap in have:
            continue
        others = providers(cap)
        offer = ", ".join(others) if others else "none registered"
        fix = "set problem.name to one of them" if others else "register a problem that provides it"
        raise ConfigError(
            f"{field}: {who} needs capability {cap.value!r} which problem {problem_name!r} "
            f"does not provide; problems that provide it: {offer}. Fix: {fix}, or use "
            f"something that does not need {cap.value!r}"
        )


# ----------------------------------------------------------------------------- helpers


class CountedQueries:
    """Mixin implementing :class:`NoisyQueries` on top of the oracle's exact ``value``.

    ``query(X, rows, step, noise_std) = value(X, rows) + noise_std * xi``, ``xi`` one
    standard normal per row keyed by (seed, "query", data rank, step) (``step`` an int
    or a ``[k]`` per-row tensor), so the noise of a node at a step does not depend on
    placement. Each call adds ``len(rows)`` to :attr:`queries` (counted per oracle, that
    is per worker; the counter is not part of a checkpoint).
    """

    queries: int = 0
    seed: int
    data_ranks: torch.Tensor
    value: Any
    capabilities: ClassVar[frozenset[Capability]]

    def query(
        self, X: torch.Tensor, rows: torch.Tensor, step: Step, noise_std: float
    ) -> torch.Tensor:
        """Noisy exact values ``f_i(X[k]) + noise_std * xi_k``: ``[k]`` float64."""
        if not noise_std >= 0:
            raise ValueError(f"noise_std: must be >= 0, got {noise_std!r}")
        values = self.value(X, rows)
        self.queries += len(rows)
        if noise_std > 0:
            keys = rng.node_keys(self.seed, "query", self.data_ranks.index_select(0, rows), step)
            values = values + noise_std * rng.normal(keys, 1, torch.float64)[:, 0]
        return values

"""A gradient canary in any problem with per-sample gradients (``canary``; privacy audits).

``{name: canary, inner: {...}, node: p, sample: s, norm: N, coordinate: k, present: true}``
wraps the problem ``inner`` (any registered problem with the ``per_sample_gradients``
capability) and gives sample ``s`` of data node ``p`` the *constant* per-sample gradient

    g_c = N u,   ||u|| = 1   (u = e_k, or ``direction`` normalised),

whatever the parameters: a "gradient canary" (a sample with the linear loss
``<g_c, x>``). With ``N`` far above every clip radius (default ``1e6``), clipping turns
it into exactly ``C u``: the largest contribution one sample can make, all of it along
one public direction, the worst case the mechanism's sensitivity must cover (Jagielski
et al., NeurIPS 2020; Nasr et al., IEEE S&P 2021). Its per-sample *difference*
``g_c - g_c`` is zero, so it adds nothing to DIFF2's difference rounds.

Neighbouring datasets for :mod:`fedopt.privacy.audit`:

* ``present: true``: slot ``s`` holds the canary (the inner sample is gone);
* ``present: false, absent: inner``: slot ``s`` holds the inner problem's own sample,
  and the oracle *is* the inner one (every call is delegated, bit for bit);
* ``present: false, absent: empty``: slot ``s`` holds nothing: its gradient is zero
  and it is masked out of every sum, while the node's sample count stays ``n_p``.
  With the mechanisms' fixed, public denominators (``n_p``, ``q n_p``) a sample that
  contributes nothing is the same as one that is not there, so ``present: true``
  against this is the add/remove-one pair (DP-SGD's adjacency), and ``direction: u``
  against ``direction: -u`` the replace-one pair with the full ``2C`` (DIFF2's).

What the oracle reports, with the canary active (``present`` or ``absent: empty``):

* :meth:`clipped_grad_sum`: the inner sum with slot ``s`` masked out, plus
  ``mask[s] * clip_c(g_c)`` (no ``X_prev``) or nothing (with ``X_prev``: zero
  difference); ``clip_c(v) = v min(1, c / (||v|| + 1e-10))``.
* :meth:`per_sample_grad`: the inner tensor with ``g_c`` (or ``0``) at every batch
  position that holds sample ``s``; :meth:`clipped_mean_grad` and :meth:`grad`
  accordingly (the mean of the per-sample gradients is ``grad``, as the capability
  says). Positions: slot ``s`` of the full batch (``batch_size`` 0), else where the
  inner oracle's ``batch_indices(rows, step)`` equals ``s`` (every built-in problem
  has it; a plug-in problem with minibatches needs it too).
* :meth:`value`, ``evaluate``, ``evaluate_test``: the inner problem's, unchanged: loss
  curves measure the model on the real data, not on the canary's linear loss (so on
  the canary's node ``grad`` is not the gradient of ``value``).
* no closed-form optimum and no curvature bounds (the canary changes both).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field, SerializeAsAny, field_validator, model_validator

from fedopt.errors import ConfigError
from fedopt.fields import COUNT_MAX
from fedopt.problems._common import CLIP_EPS, clip_radii, coerce_config
from fedopt.problems.base import OptimumStats, Oracle, Problem, ProblemConfig, Step
from fedopt.problems.capabilities import Capability
from fedopt.problems.logistic import LogisticConfig
from fedopt.problems.registry import PROBLEMS, parse_problem_config


class CanaryConfig(ProblemConfig):
    """The ``canary`` wrapper: an inner problem with one gradient canary."""

    name: Literal["canary"] = "canary"
    inner: SerializeAsAny[ProblemConfig] = Field(
        default_factory=LogisticConfig,
        description="the problem that gets the canary: any problem with per_sample_gradients",
    )
    node: int = Field(0, ge=0, le=COUNT_MAX, description="data rank of the node with the canary")
    sample: int = Field(
        0, ge=0, le=COUNT_MAX, description="index of the sample (of that node) the canary replaces"
    )
    norm: float = Field(
        1e6,
        gt=0,
        description="norm of the canary's constant per-sample gradient (far above any clip "
        "radius, so that clipping leaves exactly C along the direction)",
    )
    coordinate: int = Field(
        0,
        ge=0,
        le=COUNT_MAX,
        description="u = e_k, the k-th coordinate (unless direction is given)",
    )
    direction: list[float] | None = Field(
        None,
        description="u as dim numbers (normalised; overrides coordinate), e.g. [-1, 0, 0]",
    )
    present: bool = Field(True, description="whether the canary is in the data")
    absent: Literal["inner", "empty"] = Field(
        "inner",
        description="what slot `sample` holds when present is false: inner (the inner "
        "problem's own sample; the oracle is then the inner one, bit for bit) or empty "
        "(nothing: zero gradient, the node's sample count unchanged)",
    )

    @field_validator("inner", mode="before")
    @classmethod
    def _inner(cls, v: Any) -> Any:
        if isinstance(v, dict):
            try:
                return parse_problem_config(v)
            except ConfigError as exc:  # pydantic would wrap it as "Value error, ..."
                raise ValueError(_inner_message(str(exc))) from None
        return v

    @field_validator("direction")
    @classmethod
    def _direction(cls, v: Any) -> Any:
        if v is not None and not any(x != 0 for x in v):
            raise ValueError("the direction must be a non-zero vector")
        return v

    @model_validator(mode="after")
    def _capability(self) -> CanaryConfig:
        have = PROBLEMS.get(self.inner.name).capabilities(self.inner)
        if Capability.PER_SAMPLE_GRADIENTS not in have:
            raise ValueError(
                f"problem.inner: problem {self.inner.name!r} has no per-sample gradients "
                "(capability 'per_sample_gradients'), so it cannot hold a gradient canary; "
                "use logistic, least_squares or another problem that provides them"
            )
        return self

    @property
    def active(self) -> bool:
        """Whether slot ``sample`` differs from the inner problem's own sample."""
        return self.present or self.absent == "empty"


def _inner_message(text: str) -> str:
    """The inner problem's error with its fields under ``problem.inner``."""
    return text.replace("problem.", "problem.inner.").removeprefix("problem.inner.inner.")


def unit_direction(config: CanaryConfig, dim: int) -> torch.Tensor:
    """``u`` as a float64 ``[dim]`` unit vector (a :class:`ConfigError` if it does not fit)."""
    if config.direction is None:
        k = config.coordinate
        if k >= dim:
            raise ConfigError(
                f"problem.coordinate: coordinate {k} does not exist, the inner problem has "
                f"dim={dim} parameters; give an index in [0, {dim})"
            )
        u = torch.zeros(dim, dtype=torch.float64)
        u[k] = 1.0
        return u
    if len(config.direction) != dim:
        raise ConfigError(
            f"problem.direction: got {len(config.direction)} numbers but the inner problem "
            f"has dim={dim} parameters; give {dim} numbers, or a coordinate"
        )
    u = torch.tensor(config.direction, dtype=torch.float64)
    return u / torch.linalg.vector_norm(u)


class CanaryOracle(Oracle):
    """The inner oracle with sample ``sample`` of data rank ``node`` replaced (or emptied)."""

    capabilities = frozenset({Capability.PER_SAMPLE_GRADIENTS})

    def __init__(
        self,
        config: CanaryConfig,
        seed: int,
        data_ranks: torch.Tensor,
        num_data_nodes: int,
        device: torch.device,
    ) -> None:
        self.config = config
        self.seed = int(seed)
        self.inner = PROBLEMS.get(config.inner.name).build(
            config.inner,
            seed=seed,
            data_ranks=data_ranks,
            num_data_nodes=num_data_nodes,
            device=device,
        )
        inner = self.inner
        self.dim, self.dtype = inner.dim, inner.dtype
        self.data_ranks, self.weights = inner.data_ranks, inner.weights
        self.num_samples = inner.num_samples
        self.device = device
        if config.node >= num_data_nodes:
            raise ConfigError(
                f"problem.node: data rank {config.node} does not exist, the run has "
                f"{num_data_nodes} data nodes; give a rank in [0, {num_data_nodes})"
            )
        self.u = unit_direction(config, self.dim)
        self.g = (config.norm * self.u).to(device)
        hit = torch.nonzero(inner.data_ranks == config.node).flatten()
        self.row: int | None = int(hit[0]) if len(hit) else None
        if self.row is not None:
            n = int(inner.num_samples[self.row])
            if config.sample >= n:
                raise ConfigError(
                    f"problem.sample: node {config.node} has {n} samples, so sample "
                    f"{config.sample} does not exist; give an index in [0, {n})"
                )
        self.active = config.active and self.row is not None

    # ------------------------------------------------------------------ helpers

    @property
    def max_samples(self) -> int:
        """The inner oracle's ``max_samples``."""
        return int(self.inner.max_samples)  # type: ignore[attr-defined]

    def _canary_rows(self, rows: torch.Tensor) -> list[int]:
        """Positions ``j`` in ``rows`` of the canary's node (none when inactive)."""
        if not self.active:
            return []
        return torch.nonzero(rows == self.row).flatten().tolist()

    def _vector(self) -> torch.Tensor:
        """Slot ``sample``'s per-sample gradient: ``g_c`` (present) or zero (empty)."""
        return self.g if self.config.present else torch.zeros_like(self.g)

    def _own_sample(self, X: torch.Tensor, j: int, rows: torch.Tensor, clip: float) -> Any:
        """``clip_c(g_s(X[j]))`` of the inner sample ``s`` (float64 ``[dim]``)."""
        mask = torch.zeros(1, self.max_samples, dtype=torch.float64, device=X.device)
        mask[0, self.config.sample] = 1.0
        one = self.inner.clipped_grad_sum(X[j : j + 1], rows[j : j + 1], clip, mask=mask)  # type: ignore[attr-defined]
        return one[0].to(torch.float64)

    def _positions(self, rows: torch.Tensor, j: int, step: Step, width: int) -> torch.Tensor:
        """Boolean ``[width]``: the batch positions of row ``j`` that hold sample ``s``."""
        batch = getattr(self.inner, "batch_size", None)
        if batch is None:
            batch = getattr(getattr(self.inner, "config", None), "batch_size", 0)
        out = torch.zeros(width, dtype=torch.bool, device=rows.device)
        if not batch:
            out[self.config.sample] = True
            return out
        row_step = step[j : j + 1] if isinstance(step, torch.Tensor) and step.ndim else step
        idx = self.inner.batch_indices(rows[j : j + 1], row_step)[0]  # type: ignore[attr-defined]
        return idx.to(rows.device) == self.config.sample

    @staticmethod
    def _clip(v: torch.Tensor, radius: float) -> torch.Tensor:
        """``v min(1, radius / (||v|| + 1e-10))`` (``inf``: ``v``; ``0``: zeros)."""
        if math.isinf(radius):
            return v.clone()
        norm = float(torch.linalg.vector_norm(v))
        return v * min(1.0, radius / (norm + CLIP_EPS))

    # ------------------------------------------------------------------ core oracle

    def init_params(self, rows: torch.Tensor) -> torch.Tensor:
        return self.inner.init_params(rows)

    def grad(self, X: torch.Tensor, rows: torch.Tensor, step: Step) -> torch.Tensor:
        """The inner minibatch gradient, sample ``s``'s share replaced by the canary's."""
        out = self.inner.grad(X, rows, step)
        for j in self._canary_rows(rows):
            width = int(self.inner.per_sample_grad(X[j : j + 1], rows[j : j + 1], step).shape[1])  # type: ignore[attr-defined]
            share = int(self._positions(rows, j, step, width).sum()) / width
            if share:
                swap = self._vector() - self._own_sample(X, j, rows, math.inf)
                out[j] += (share * swap).to(out.dtype)
        return out

    def full_grad(self, X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The inner full gradient plus ``(g_c - g_s) / n_p`` on the canary's node."""
        out = self.inner.full_grad(X, rows)
        for j in self._canary_rows(rows):
            n = float(self.num_samples[int(rows[j])])
            swap = self._vector() - self._own_sample(X, j, rows, math.inf)
            out[j] += (swap / n).to(out.dtype)
        return out

    def value(self, X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The inner problem's objective (see the module docstring)."""
        return self.inner.value(X, rows)

    def evaluate(self, x: torch.Tensor) -> dict[str, float]:
        return self.inner.evaluate(x)

    def evaluate_test(self, x: torch.Tensor) -> dict[str, float]:
        return self.inner.evaluate_test(x)

    def curvature_bounds(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return None if self.config.active else self.inner.curvature_bounds()

    def optimum_stats(self) -> OptimumStats | None:
        return None if self.config.active else self.inner.optimum_stats()

    # ------------------------------------------------------------------ per-sample gradients

    def per_sample_grad(self, X: torch.Tensor, rows: torch.Tensor, step: Step) -> torch.Tensor:
        """The inner ``[k, b, dim]`` with the canary's vector wherever sample ``s`` is."""
        out = self.inner.per_sample_grad(X, rows, step)  # type: ignore[attr-defined]
        for j in self._canary_rows(rows):
            where = self._positions(rows, j, step, out.shape[1])
            out[j, where] = self._vector().to(out.dtype)
        return out

    def clipped_mean_grad(
        self, X: torch.Tensor, rows: torch.Tensor, step: Step, clip: float
    ) -> torch.Tensor:
        """The inner clipped mean with sample ``s``'s clipped share replaced."""
        out = self.inner.clipped_mean_grad(X, rows, step, clip)  # type: ignore[attr-defined]
        for j in self._canary_rows(rows):
            width = int(self.inner.per_sample_grad(X[j : j + 1], rows[j : j + 1], step).shape[1])  # type: ignore[attr-defined]
            share = int(self._positions(rows, j, step, width).sum()) / width
            if share:
                swap = self._clip(self._vector(), clip) - self._own_sample(X, j, rows, clip)
                out[j] += (share * swap).to(out.dtype)
        return out

    def clipped_grad_sum(
        self,
        X: torch.Tensor,
        rows: torch.Tensor,
        clip: float | torch.Tensor,
        X_prev: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``sum_s mask_s clip_c(g_s(X) - g_s(X_prev))`` with slot ``s`` the canary's.

        Inactive: the inner call itself. Active: the inner sum with slot ``s`` masked
        out, plus ``mask[s] clip_c(g_c)`` on the canary's row without ``X_prev`` (its
        difference is zero, so nothing with ``X_prev``, and nothing when empty).
        """
        inner = self.inner
        here = self._canary_rows(rows)
        if not here:
            return inner.clipped_grad_sum(X, rows, clip, X_prev=X_prev, mask=mask)  # type: ignore[attr-defined]
        k = len(rows)
        keep = (
            torch.ones(k, self.max_samples, dtype=torch.float64, device=X.device)
            if mask is None
            else mask.clone()
        )
        weight = [float(keep[j, self.config.sample]) for j in here]
        keep[here, self.config.sample] = 0.0
        out = inner.clipped_grad_sum(X, rows, clip, X_prev=X_prev, mask=keep)  # type: ignore[attr-defined]
        if X_prev is not None or not self.config.present:
            return out
        radii = clip_radii(clip, k, torch.float64, X.device)
        for j, w in zip(here, weight, strict=True):
            if w:
                out[j] += (w * self._clip(self.g, float(radii[j]))).to(out.dtype)
        return out


@PROBLEMS.register("canary")
class Canary(Problem):
    """A gradient canary in an inner problem (see the module docstring)."""

    Config = CanaryConfig
    oracle_class = CanaryOracle

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
        """The inner oracle itself when the canary is inactive (bit-identical), else a
        :class:`CanaryOracle` around it."""
        cfg = coerce_config(config, CanaryConfig, "problem")
        if not cfg.active:
            return PROBLEMS.get(cfg.inner.name).build(
                cfg.inner,
                seed=seed,
                data_ranks=data_ranks,
                num_data_nodes=num_data_nodes,
                device=device,
            )
        return CanaryOracle(cfg, seed, data_ranks, num_data_nodes, torch.device(device))

    @classmethod
    def param_dim(cls, config: ProblemConfig) -> int | None:
        cfg = coerce_config(config, CanaryConfig, "problem")
        return PROBLEMS.get(cfg.inner.name).param_dim(cfg.inner)

    @classmethod
    def param_itemsize(cls, config: ProblemConfig) -> int:
        cfg = coerce_config(config, CanaryConfig, "problem")
        return PROBLEMS.get(cfg.inner.name).param_itemsize(cfg.inner)

    @classmethod
    def data_bytes(cls, config: ProblemConfig, num_nodes: int) -> tuple[int, str]:
        cfg = coerce_config(config, CanaryConfig, "problem")
        return PROBLEMS.get(cfg.inner.name).data_bytes(cfg.inner, num_nodes)

    @staticmethod
    def summary(config: ProblemConfig) -> dict[str, object]:
        cfg = coerce_config(config, CanaryConfig, "problem")
        out = dict(PROBLEMS.get(cfg.inner.name).summary(cfg.inner))
        out.update(
            inner=cfg.inner.name,
            canary_node=cfg.node,
            canary_sample=cfg.sample,
            canary_present=cfg.present,
        )
        return out

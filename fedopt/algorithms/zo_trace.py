"""How well a zeroth-order method's local directions point: cosines with the true gradients.

A diagnostic for the FZooS paper's Fig. 5 (Shu et al., section 5.1): within a round,
the cosine between the direction ``g_{i,s}`` a client hands its optimiser at local step
``s`` and the true gradient of the *global* objective at its iterate::

    cos_s = < g_{i,s}, grad F(x_{i,s}) > / (||g_{i,s}|| ||grad F(x_{i,s})||)

the cosine of the method's own local estimate (the direction without the correction)
with the client's true gradient, ``< g_{i,s} - c_i, grad f_i(x_{i,s}) >`` normalised
(``local_cosine``: how good the surrogate or finite-difference estimate is, apart from
heterogeneity), and, for a method with a correction ``c_i`` (FZooS's
``gamma (grad m_bar - grad m_i)``, SCAFFOLD's ``c - c_i``), how well it points at the
client's drift::

    cos_corr = < c_i, grad F(x) - grad f_i(x) > / (||c_i|| ||grad F(x) - grad f_i(x)||)

No federated node can compute these: they read the problem's closed-form gradients
(:meth:`fedopt.problems.blackbox.ZOQuadraticOracle.true_gradients`), spend no query and
send no message, and leave the trajectory bit for bit unchanged. Algorithms turn them
on with ``trace_cosine: true`` and report them as metrics ``direction_cosine`` (mean over
the round's steps), ``direction_cosine_s01 ..`` (per step), ``local_cosine`` and
``correction_cosine`` (means over the round's steps).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from fedopt.errors import ConfigError

METHOD = "true_gradients"
"""Oracle method the trace needs: ``true_gradients(X, rows) -> (grad F, grad f_i)``."""


def check_traceable(config: Any, plan: Any) -> None:
    """Refuse ``trace_cosine: true`` on a problem without closed-form gradients."""
    if not getattr(config, "trace_cosine", False):
        return
    from fedopt.problems import PROBLEMS

    name = plan.config.problem.name
    oracle_class = getattr(PROBLEMS.get(name), "oracle_class", None)
    if not callable(getattr(oracle_class, METHOD, None)):
        raise ConfigError(
            f"algorithm.trace_cosine: problem {name!r} has no closed-form gradients to "
            "compare the directions with (it is a black box); use problem zo_quadratic, "
            "or set algorithm.trace_cosine: false"
        )


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine ``[k]`` of ``a, b [k, d]`` (NaN where either row is zero)."""
    a, b = a.to(torch.float64), b.to(torch.float64)
    den = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(den > 0, (a * b).sum(1) / den, torch.full_like(den, math.nan))


class DirectionTrace:
    """Per-step direction cosines of the hosted clients of one round (module doc).

    Parameters
    ----------
    oracle
        The worker's oracle; must have :data:`METHOD`.
    rows
        ``[c]`` data rows of the hosted clients.
    steps
        ``T``, local steps per round.
    """

    def __init__(self, oracle: Any, rows: torch.Tensor, steps: int) -> None:
        self.oracle = oracle
        self.rows = rows
        self.steps = steps
        c = len(rows)
        self.direction = torch.full((c, steps), math.nan, dtype=torch.float64)
        self.correction = torch.full((c,), math.nan, dtype=torch.float64)
        self.local = torch.full((c, steps), math.nan, dtype=torch.float64)
        self._corr_sum = torch.zeros(c, dtype=torch.float64)
        self._corr_count = 0

    def start_round(self) -> None:
        """Forget the previous round's figures."""
        self.direction.fill_(math.nan)
        self.correction.fill_(math.nan)
        self.local.fill_(math.nan)
        self._corr_sum.zero_()
        self._corr_count = 0

    def step(
        self, s: int, X: torch.Tensor, g: torch.Tensor, corr: torch.Tensor | None = None
    ) -> None:
        """Record step ``s`` (0-based): iterates ``X [c, d]``, direction ``g [c, d]``, and
        the correction ``corr [c, d]`` (or ``[d]``, or None) inside ``g``."""
        if not len(self.rows):
            return
        grad_F, grad_f = getattr(self.oracle, METHOD)(X.to(torch.float64), self.rows)
        self.direction[:, s] = _cosine(g, grad_F).cpu()
        own = g
        if corr is not None:
            c = corr.expand_as(X) if corr.ndim == 1 else corr
            own = g - c
            self._corr_sum += _cosine(c, grad_F - grad_f).nan_to_num(0.0).cpu()
            self._corr_count += 1
            self.correction = self._corr_sum / self._corr_count
        self.local[:, s] = _cosine(own, grad_f).cpu()

    def metrics(self, hosted: int, local: torch.Tensor) -> dict[str, torch.Tensor]:
        """``name -> [hosted]`` values (NaN off the clients), for ``Algorithm.metrics``."""
        out: dict[str, torch.Tensor] = {}

        def put(name: str, values: torch.Tensor) -> None:
            full = torch.full((hosted,), math.nan, dtype=torch.float64)
            if len(local):
                full[local] = values
            out[name] = full

        put("direction_cosine", self.direction.nanmean(dim=1))
        for s in range(self.steps):
            put(f"direction_cosine_s{s + 1:02d}", self.direction[:, s])
        put("local_cosine", self.local.nanmean(dim=1))
        put("correction_cosine", self.correction)
        return out

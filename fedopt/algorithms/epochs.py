"""Epochs of minibatch steps and the per-epoch step decay (``StepLR``) of DIMAT's baselines.

DIMAT's baselines (Saadati et al., CVPR 2024; spec ``dimat.md`` 3.9) take one minibatch
step per round and decay the step size once per epoch, as ``torch.optim.lr_scheduler.
StepLR(step_size=1, gamma)`` stepped after every epoch::

    lr_t = lr * gamma ** floor(t / steps_per_epoch)

An epoch is ``steps_per_epoch`` rounds: set in the algorithm's config, or (``None``)
``ceil(m_max / batch_size)`` with ``m_max`` the most training samples of any data node
and ``batch_size`` the problem's (one step per epoch for a full-batch or sample-free
problem). It is computed once at compile time (:func:`steps_per_epoch_fact`) so every
worker uses the same value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pydantic import Field

from fedopt.algorithms.base import AlgorithmConfig
from fedopt.fields import COUNT_MAX


class EpochConfig(AlgorithmConfig):
    """Fields shared by the baselines: the step size and its per-epoch decay."""

    lr: float = Field(0.01, gt=0, description="initial step size")
    gamma: float = Field(
        0.981, gt=0, le=1, description="StepLR factor applied once per epoch (1: constant)"
    )
    steps_per_epoch: int | None = Field(
        None,
        ge=1,
        le=COUNT_MAX,
        description="rounds (minibatch steps) per epoch; None: ceil(most samples of a node "
        "/ problem.batch_size)",
    )


def steps_per_epoch_fact(config: Any, plan: Any, oracle: Callable[[], Any]) -> int:
    """Rounds per epoch: ``config.steps_per_epoch``, else ``ceil(m_max / batch_size)``."""
    if config.steps_per_epoch is not None:
        return int(config.steps_per_epoch)
    batch = int(getattr(plan.config.problem, "batch_size", 0) or 0)
    if batch <= 0:
        return 1
    m_max = float(oracle().num_samples.max())
    return max(1, math.ceil(m_max / batch))


def step_lr(lr: float, gamma: float, t: int, steps_per_epoch: int) -> float:
    """``lr * gamma ** floor(t / steps_per_epoch)``: the step size of round ``t``."""
    return lr * gamma ** (t // steps_per_epoch)


def schedule_text(lr: float, gamma: float, steps_per_epoch: int) -> str:
    """The schedule as written to ``summary.json``'s derived constants."""
    if gamma == 1:
        return f"{lr:g}"
    return f"{lr:g} * {gamma:g} ** floor(t / {steps_per_epoch})"

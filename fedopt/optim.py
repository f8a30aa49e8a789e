"""Node-batched optimizers: pure ``init`` / ``update`` steps over ``[k, dim]`` state.

Every node of a worker owns one row of each state tensor, so one call updates all
hosted nodes at once (no Python loop over nodes). An optimizer holds only its
hyperparameters; its state is a plain ``dict[str, Tensor]`` that the algorithm keeps in
its own state record (checkpointed and pickled with it)::

    opt = SGD(momentum=0.9)
    state = {"x": x, **opt.init(k, dim, dtype, device)}
    step = opt.update(state, grad, lr, rows)      # state updated in place
    x[rows] -= step                               # or x[rows] - step for a half step

``update`` returns the step ``s`` of ``x <- x - s`` for the given rows (local indices
into the ``k`` rows; ``None`` for all of them) and never touches ``x``. The optimizer
reads and writes only its :attr:`~Optimizer.state_keys` of the record. ``reset`` says
when the state restarts: ``"never"`` (kept across rounds, as the robust peer-to-peer
family's momentum) or ``"round"`` (a client's optimizer that starts afresh each round:
the algorithm calls :meth:`Optimizer.start_round`).

References: Polyak, "Some methods of speeding up the convergence of iteration methods"
(1964, heavy ball); Sutskever, Martens, Dahl & Hinton, ICML 2013 (Nesterov momentum in
the form of ``torch.optim.SGD``); Kingma & Ba, "Adam", ICLR 2015 (with bias correction).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

OptState = dict[str, Tensor]
Reset = Literal["round", "never"]


def _check(value: float, low: float, high: float | None, what: str) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value >= high):
        bound = f"in [{low:g}, {high:g})" if high is not None else f">= {low:g}"
        raise ValueError(f"{what}: must be a number {bound}, got {value!r}")


@dataclass(frozen=True)
class Optimizer(ABC):
    """Base class: hyperparameters only; the state lives in the caller's record.

    Parameters
    ----------
    reset
        ``"never"``: the state persists across rounds; ``"round"``: :meth:`start_round`
        zeroes it (and the step counts) at the start of every round.
    """

    reset: Reset = "never"

    def __post_init__(self) -> None:
        if self.reset not in ("round", "never"):
            raise ValueError(f"reset: must be 'round' or 'never', got {self.reset!r}")

    @property
    def state_keys(self) -> tuple[str, ...]:
        """The keys of the state record this optimizer owns (``init`` creates them)."""
        return tuple(self.init(0, 0, torch.float64, torch.device("cpu")))

    @abstractmethod
    def init(self, k: int, dim: int, dtype: torch.dtype, device: torch.device) -> OptState:
        """Fresh state for ``k`` nodes of ``dim`` parameters (an empty dict if stateless)."""

    @abstractmethod
    def update(
        self, state: OptState, grad: Tensor, lr: float, rows: Tensor | None = None
    ) -> Tensor:
        """Advance the state of ``rows`` with their gradients ``grad``; return the step.

        ``grad`` is ``[len(rows), dim]`` (``[k, dim]`` without ``rows``) and is not
        modified; the returned step ``s`` is what ``x <- x - s`` subtracts.
        """

    def start_round(self, state: OptState) -> None:
        """Zero this optimizer's state in place when ``reset == "round"`` (else no-op).

        ``state`` may be the algorithm's whole record: only :attr:`state_keys` are reset.
        """
        if self.reset == "round":
            for key in self.state_keys:
                state[key].zero_()


def _rows(state: Tensor, rows: Tensor | None) -> Tensor:
    """The state rows to update: a view of all of them, or a copy of ``rows``."""
    return state if rows is None else state[rows]


def _store(state: OptState, key: str, value: Tensor, rows: Tensor | None) -> None:
    if rows is not None:
        state[key][rows] = value


@dataclass(frozen=True)
class SGD(Optimizer):
    """SGD with heavy-ball or Nesterov momentum, the buffer starting at zero.

    With ``beta = momentum`` and ``tau = dampening``, per node::

        m <- beta m + (1 - tau) g                     (m_0 = 0)
        s = lr m                 (heavy ball)   or   s = lr (g + beta m)   (Nesterov)

    ``momentum = 0`` is plain SGD, ``s = lr g``, without state. ``dampening = momentum``
    is the exponential moving average ``m <- beta m + (1 - beta) g`` of the MoNNA paper.
    With ``dampening = 0`` this is ``torch.optim.SGD`` exactly (whose first step copies
    ``g`` into the buffer, which equals ``0 * beta + g``); with ``dampening > 0`` torch's
    first step differs (it copies ``g`` undamped), fedopt's starts from zero.
    """

    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.momentum, 0.0, 1.0, "momentum")
        if not 0 <= self.dampening <= 1:
            raise ValueError(f"dampening: must be in [0, 1], got {self.dampening!r}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov: needs momentum > 0, got momentum=0")

    def init(self, k: int, dim: int, dtype: torch.dtype, device: torch.device) -> OptState:
        if self.momentum == 0:
            return {}
        return {"m": torch.zeros((k, dim), dtype=dtype, device=device)}

    def update(
        self, state: OptState, grad: Tensor, lr: float, rows: Tensor | None = None
    ) -> Tensor:
        beta = self.momentum
        if beta == 0:
            return lr * grad
        m = _rows(state["m"], rows).mul_(beta).add_(grad, alpha=1 - self.dampening)
        _store(state, "m", m, rows)
        if self.nesterov:
            return lr * grad.add(m, alpha=beta)
        return lr * m


@dataclass(frozen=True)
class Adam(Optimizer):
    """Adam with bias correction, one step count per node (Kingma & Ba, ICLR 2015).

    Per node, with its own step count ``t`` (incremented on each update of its row)::

        m <- beta1 m + (1 - beta1) g
        v <- beta2 v + (1 - beta2) g * g
        s = lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    the arithmetic of ``torch.optim.Adam`` (single-tensor path, no weight decay), so a
    node's trajectory equals torch's on that node alone. Nodes updated in different
    rounds (sampled clients) keep separate bias corrections.
    """

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.beta1, 0.0, 1.0, "beta1")
        _check(self.beta2, 0.0, 1.0, "beta2")
        if not self.eps > 0:
            raise ValueError(f"eps: must be > 0, got {self.eps!r}")

    def init(self, k: int, dim: int, dtype: torch.dtype, device: torch.device) -> OptState:
        return {
            "m": torch.zeros((k, dim), dtype=dtype, device=device),
            "v": torch.zeros((k, dim), dtype=dtype, device=device),
            "step": torch.zeros((k, 1), dtype=dtype, device=device),
        }

    def update(
        self, state: OptState, grad: Tensor, lr: float, rows: Tensor | None = None
    ) -> Tensor:
        b1, b2 = self.beta1, self.beta2
        m = _rows(state["m"], rows).lerp_(grad, 1 - b1)
        v = _rows(state["v"], rows).mul_(b2).addcmul_(grad, grad, value=1 - b2)
        t = _rows(state["step"], rows).add_(1)
        for key, value in (("m", m), ("v", v), ("step", t)):
            _store(state, key, value, rows)
        correction1 = 1 - torch.pow(b1, t)
        correction2_sqrt = (1 - torch.pow(b2, t)).sqrt()
        denom = (v.sqrt() / correction2_sqrt).add_(self.eps)
        return (lr / correction1) * m / denom

"""Local training only: every node trains its own model on its own data, nothing is sent.

DIMAT's lower baseline (Saadati et al., CVPR 2024; its connectivity case 4, ``Pi = I``):
each node ``i`` takes one minibatch step per round with its optimizer,

    x_i <- x_i - s_i(g_i(x_i), lr_t),     lr_t = lr * gamma ** floor(t / steps_per_epoch)

with ``s_i`` Adam (``optimizer: adam``, DIMAT's local solver: lr 1e-3, betas 0.9/0.999)
or SGD with optional (Nesterov) momentum (``optimizer: sgd``). Runs on any topology
(``disconnected`` included): no message is ever sent. Work: one gradient per node and
round (running BatchNorm statistics, if the problem keeps them, stay each node's own).
Evaluation is DIMAT's (each node's own model on the whole test set, averaged).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedopt.algorithms.base import ALGORITHMS, AlgorithmConfig, State, WorkerContext
from fedopt.algorithms.cdsgd import EpochBaseline
from fedopt.algorithms.epochs import EpochConfig
from fedopt.optim import SGD, Adam, Optimizer


class LocalTrainingConfig(EpochConfig):
    """Each node on its own: Adam (default) or SGD with momentum."""

    name: Literal["local_training"] = "local_training"
    optimizer: Literal["adam", "sgd"] = Field("adam", description="local solver")
    lr: float = Field(1e-3, gt=0, description="initial step size")
    gamma: float = Field(1.0, gt=0, le=1, description="StepLR factor per epoch (1: constant)")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum (optimizer: sgd)")
    nesterov: bool = Field(False, description="Nesterov momentum (optimizer: sgd)")


@ALGORITHMS.register("local_training")
class LocalTraining(EpochBaseline):
    """No communication: one local optimizer step per node and round."""

    Config = LocalTrainingConfig
    requires = frozenset()
    roles = ("gossip", "client")
    sends = False

    def __init__(self, config: LocalTrainingConfig, ctx: WorkerContext) -> None:
        super().__init__(config, ctx)
        self.opt: Optimizer
        if config.optimizer == "adam":
            self.opt = Adam()
        else:
            self.opt = SGD(
                momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0
            )

    def init_state(self) -> State:
        state = super().init_state()
        x = state["x"]
        state.update(self.opt.init(len(x), x.shape[1], x.dtype, x.device))
        return state

    def round(self, state: State, t: int) -> None:
        x = state["x"]
        g = self.gradients(x, t, state).to(x.dtype)
        x.sub_(self.opt.update(state, g, self.lr_at(t)))

    @classmethod
    def analytic_traffic(cls, config: AlgorithmConfig, plan: object, rounds: int) -> int:
        return 0

"""Test plug-in: D-SGD that fails, kills its own process, or sleeps on demand.

``faulty_dsgd`` is D-SGD with three extra fields: ``fail_at`` (raise RuntimeError at
that round), ``kill_at`` (SIGKILL its own process at that round: a worker that dies, as
under the out-of-memory killer) and ``sleep_s`` (sleep that long every round: a slow
cell to interrupt). Negative values switch a behaviour off.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Literal

from fedopt.algorithms.base import ALGORITHMS, State
from fedopt.algorithms.dsgd import DSGD, DSGDConfig


class FaultyConfig(DSGDConfig):
    name: Literal["faulty_dsgd"] = "faulty_dsgd"  # type: ignore[assignment]
    fail_at: int = -1
    kill_at: int = -1
    sleep_s: float = 0.0


@ALGORITHMS.register("faulty_dsgd")
class FaultyDSGD(DSGD):
    Config = FaultyConfig

    def round(self, state: State, t: int) -> None:
        cfg = self.config
        if t == cfg.fail_at:
            raise RuntimeError(f"faulty_dsgd: told to fail at round {t}")
        if t == cfg.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if cfg.sleep_s > 0:
            time.sleep(cfg.sleep_s)
        super().round(state, t)

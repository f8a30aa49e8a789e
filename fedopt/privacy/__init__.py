"""Differential privacy for fedopt's DP algorithms (DIFF2, DP-GD, DP-SGD).

* :mod:`fedopt.privacy.calibration`: DIFF2's closed-form noise levels (Murata & Suzuki,
  ICML 2023) and a DP-SGD noise multiplier found with the RDP accountant.
* :mod:`fedopt.privacy.accountant`: epsilon spent by composed (subsampled) Gaussian
  mechanisms, with dp-accounting's RDP (Mironov 2017) or PLD accountant.
* :mod:`fedopt.privacy.ledger`: :class:`PrivacyLedger`, the server's mergeable account
  of noisy releases (a :class:`fedopt.engine.ledger.Ledger`).
* :mod:`fedopt.privacy.lower_bound`: a statistical lower bound on epsilon from a
  threshold test's error rates (Clopper–Pearson; Kairouz et al., ICML 2015).
* :mod:`fedopt.privacy.audit`: ``fedopt audit``, the empirical audit of a private run
  against its accountant, with a gradient canary (:mod:`fedopt.problems.canary`).

Nothing here imports dp-accounting at import time; the functions that need it raise a
:class:`~fedopt.errors.ConfigError` with the install command when it is missing.
"""

from fedopt.privacy.accountant import (
    MISSING,
    PLD_INTERVAL,
    GaussianRounds,
    Mechanism,
    check_budget,
    epsilon_spent,
)
from fedopt.privacy.calibration import (
    FIELDS,
    Diff2Calibration,
    diff2_calibration,
    dp_sgd_noise_multiplier,
    period_from_tau,
)
from fedopt.privacy.ledger import PrivacyLedger

__all__ = [
    "FIELDS",
    "MISSING",
    "PLD_INTERVAL",
    "Diff2Calibration",
    "GaussianRounds",
    "Mechanism",
    "PrivacyLedger",
    "check_budget",
    "diff2_calibration",
    "dp_sgd_noise_multiplier",
    "epsilon_spent",
    "period_from_tau",
]

"""Without dp-accounting the DP entry points say how to install it (import made to fail)."""

from __future__ import annotations

import sys

import pytest

from fedopt.errors import ConfigError
from fedopt.privacy import (
    MISSING,
    GaussianRounds,
    PrivacyLedger,
    diff2_calibration,
    dp_sgd_noise_multiplier,
    epsilon_spent,
)

DELTA = 1e-5


def test_missing_library_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "dp_accounting", None)  # import now raises ImportError
    for call in (
        lambda: epsilon_spent([GaussianRounds(1.0, 1)], DELTA),
        lambda: dp_sgd_noise_multiplier(3.0, DELTA, 0.1, 10),
        lambda: PrivacyLedger(DELTA, "central", {"restart": 1.0}),
    ):
        with pytest.raises(ConfigError) as err:
            call()
        assert str(err.value).startswith(MISSING)
    assert MISSING == (
        "DIFF2/DP accounting needs dp-accounting: "
        "pip install --no-deps dp-accounting==0.6.0 absl-py"
    )
    # The closed form needs no accountant, and free compositions need no import either.
    assert diff2_calibration(3, DELTA, 2000, 6, 10, 1651).alpha == 9
    assert epsilon_spent([GaussianRounds(1.0, 0)], DELTA) == 0.0

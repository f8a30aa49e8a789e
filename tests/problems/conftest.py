"""Fixtures of the problem tests."""

from __future__ import annotations

import pytest
import torch
from prob_helpers import SMALL

torch.set_num_threads(1)


@pytest.fixture(params=sorted(SMALL))
def spec(request: pytest.FixtureRequest) -> dict[str, object]:
    return SMALL[request.param]

"""Fixtures of the sweep tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml


@pytest.fixture
def write_sweep(tmp_path: Path):
    """``write_sweep(data, name="sweep.yaml") -> path`` of a sweep file in tmp_path."""

    def write(data: dict[str, Any], name: str = "sweep.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write

"""Environment record of a run: versions, git SHA, platform, seed."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

_PACKAGES = ("fedopt", "torch", "numpy", "scipy", "networkx", "pydantic", "PyYAML", "ray")


def git_sha(path: Path) -> str | None:
    """Commit SHA of the repository containing ``path`` (None outside a checkout)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(seed: int, threads: int, device: str) -> dict[str, Any]:
    """What produced a run: versions, platform, git SHA, seed, threads, device."""
    versions = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
        "git_sha": git_sha(Path(__file__).resolve().parent),
        "seed": seed,
        "torch_threads": threads,
        "device": device,
        "cuda_available": torch.cuda.is_available(),
        "argv": sys.argv,
    }

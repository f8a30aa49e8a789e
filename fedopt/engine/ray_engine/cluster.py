"""Start and join Ray clusters with token authentication (``fedopt cluster ...``).

Every process of a cluster (head, workers, drivers) needs ``RAY_AUTH_MODE=token`` and
the same ``RAY_AUTH_TOKEN``; ``fedopt cluster token`` prints a fresh random one. These
wrappers refuse to start a node without a token, so a cluster started through fedopt
is never open. docker-compose runs exactly these commands (with ``--block``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess

from fedopt.errors import ConfigError


def new_token() -> str:
    """A random 256-bit hex secret for ``RAY_AUTH_TOKEN``."""
    return secrets.token_hex(32)


def auth_env() -> dict[str, str]:
    """The current environment with token auth switched on; error when no token is set."""
    token = os.environ.get("RAY_AUTH_TOKEN", "")
    if len(token) < 16:
        raise ConfigError(
            "RAY_AUTH_TOKEN: not set (or shorter than 16 characters); create one with "
            "`export RAY_AUTH_TOKEN=$(fedopt cluster token)` and use the same value on every "
            "node and driver"
        )
    env = dict(os.environ)
    env["RAY_AUTH_MODE"] = "token"
    return env


def _ray_cli() -> str:
    exe = shutil.which("ray")
    if exe is None:
        raise ConfigError("the `ray` command is not on PATH; install fedopt with its dependencies")
    return exe


def start_head(
    port: int, num_cpus: int | None, num_gpus: int | None, node_ip: str | None, block: bool
) -> list[str]:
    """``ray start --head`` with token auth; returns the command it ran."""
    cmd = [
        _ray_cli(),
        "start",
        "--head",
        f"--port={port}",
        "--include-dashboard=false",
        "--disable-usage-stats",
    ]
    cmd += _common(num_cpus, num_gpus, node_ip, block)
    subprocess.run(cmd, env=auth_env(), check=True)
    return cmd


def join(
    address: str, num_cpus: int | None, num_gpus: int | None, node_ip: str | None, block: bool
) -> list[str]:
    """``ray start --address`` with token auth; returns the command it ran."""
    cmd = [_ray_cli(), "start", f"--address={address}", "--disable-usage-stats"]
    cmd += _common(num_cpus, num_gpus, node_ip, block)
    subprocess.run(cmd, env=auth_env(), check=True)
    return cmd


def stop() -> None:
    """``ray stop``: stops the Ray processes this machine's user started."""
    subprocess.run([_ray_cli(), "stop"], check=False)


def _common(
    num_cpus: int | None, num_gpus: int | None, node_ip: str | None, block: bool
) -> list[str]:
    out = []
    if num_cpus is not None:
        out.append(f"--num-cpus={num_cpus}")
    if num_gpus is not None:
        out.append(f"--num-gpus={num_gpus}")
    if node_ip:
        out.append(f"--node-ip-address={node_ip}")
    if block:
        out.append("--block")
    return out

"""A sweep on a real 2-node Ray cluster on loopback (token auth): one Ray task per cell,
the cells land on both nodes, and each cell equals the local run of the same config.

The cluster is started with ``fedopt cluster start-head`` / ``join`` (1 CPU each), and
only the processes this test started are stopped (by PID). When the cluster cannot
start here, the test is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from sweep_helpers import HERE, tiny

pytestmark = pytest.mark.slow
pytest.importorskip("ray")  # Ray ships a copy of psutil on its path once imported
psutil = pytest.importorskip("psutil", reason="the cluster test stops Ray by PID with psutil")

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_pids() -> set[int]:
    out = set()
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "ray" in cmd and ("raylet" in cmd or "gcs_server" in cmd or "ray/" in cmd):
            out.add(p.info["pid"])
    return out


def stop_pids(pids: set[int]) -> None:
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    for p in procs:
        p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        p.kill()


def fedopt(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fedopt", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def cluster():
    token = secrets.token_hex(16)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env["PYTHONPATH"] = str(ROOT)  # the Ray workers import this tree's fedopt
    port = free_port()
    before = ray_pids()
    try:
        common = ["--num-cpus", "1", "--node-ip", "127.0.0.1"]
        r = fedopt("cluster", "start-head", "--port", str(port), *common, env=env)
        if r.returncode != 0:
            pytest.skip(f"cannot start a Ray head here: {r.stderr.strip()[-400:]}")
        r = fedopt("cluster", "join", f"127.0.0.1:{port}", *common, env=env)
        if r.returncode != 0:
            pytest.skip(f"cannot join a second Ray node here: {r.stderr.strip()[-400:]}")
        time.sleep(2)
        yield {"address": f"127.0.0.1:{port}", "env": env}
    finally:
        stop_pids(ray_pids() - before)


def test_sweep_cells_land_on_both_nodes(cluster, tmp_path: Path) -> None:
    base = tiny(
        plugins=[str(HERE / "faulty_plugin.py")],  # shipped to the nodes with each task
        algorithm={"name": "faulty_dsgd", "lr": 0.1, "sleep_s": 0.1},
        stop={"rounds": 12},
    )
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {"name": "ray", "experiment": base, "grid": {"algorithm.lr": [0.1, 0.2, 0.3, 0.4]}}
        )
    )
    out = tmp_path / "out"
    r = fedopt(
        "sweep",
        str(sweep),
        "--out",
        str(out),
        "--address",
        cluster["address"],
        "--no-plots",
        env=cluster["env"],
    )
    assert r.returncode == 0, r.stderr[-3000:]
    cells = json.loads((out / "sweep.json").read_text())["cells"]
    assert [c["status"] for c in cells.values()] == ["complete"] * 4
    assert len({c["ray_node_id"] for c in cells.values()}) == 2  # both nodes ran cells
    local = tmp_path / "local"
    r = fedopt(
        "sweep", str(sweep), "--out", str(local), "--jobs", "1", "--no-report", env=cluster["env"]
    )
    assert r.returncode == 0, r.stderr[-3000:]
    for name in cells:
        a = json.loads((out / name / "summary.json").read_text())
        b = json.loads((local / name / "summary.json").read_text())
        assert a["params_sha256"] == b["params_sha256"] and a["final_loss"] == b["final_loss"]
        assert (out / name / "config.yaml").read_text() == (
            local / name / "config.yaml"
        ).read_text()
        assert (out / name / "inputs" / "faulty_plugin.py").is_file()
        env = json.loads((out / name / "env.json").read_text())
        assert env["inputs"][0]["original"] == str(HERE / "faulty_plugin.py")

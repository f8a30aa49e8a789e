"""A real 2-node Ray cluster on loopback, started with the commands docker-compose runs.

The cluster uses token authentication; a driver with the wrong token is refused. The
test stops only the processes it started (by PID), never other Ray instances.
"""

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

# psutil is not a fedopt dependency; Ray ships a copy on its path once imported
psutil = pytest.importorskip("psutil", reason="the cluster test stops Ray by PID with psutil")

ROOT = Path(__file__).resolve().parents[2]
QUICK = str(ROOT / "experiments" / "quickstart.yaml")


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
    port = free_port()
    before = ray_pids()
    started: set[int] = set()
    try:
        common = ["--num-cpus", "1", "--node-ip", "127.0.0.1"]
        r = fedopt("cluster", "start-head", "--port", str(port), *common, env=env)
        assert r.returncode == 0, r.stderr
        r = fedopt("cluster", "join", f"127.0.0.1:{port}", *common, env=env)
        assert r.returncode == 0, r.stderr
        time.sleep(2)
        started = ray_pids() - before
        yield {"address": f"127.0.0.1:{port}", "env": env}
    finally:
        stop_pids((ray_pids() - before) | started)


def _cluster_run_equals_local(
    cluster, tmp_path: Path, rounds: int, *extra: str
) -> tuple[Path, Path]:
    """Run QUICK on the 2-node cluster (2 actors, ``extra`` flags) and locally; assert
    one actor on each Ray node and equal summaries; return both run directories."""
    env, address = cluster["env"], cluster["address"]
    ray_out, local_out = tmp_path / "ray", tmp_path / "local"
    common = ["--set", f"stop.rounds={rounds}", "--quiet"]
    r = fedopt(
        "run",
        QUICK,
        *common,
        *extra,
        "--engine",
        "ray",
        "--actors",
        "2",
        "--address",
        address,
        "--out",
        str(ray_out),
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    r = fedopt("run", QUICK, *common, "--out", str(local_out), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    workers = json.loads((ray_out / "env.json").read_text())["workers"]
    assert len({w["ray_node_id"] for w in workers}) == 2  # one actor on each Ray node
    a = json.loads((ray_out / "summary.json").read_text())
    b = json.loads((local_out / "summary.json").read_text())
    for key in ("params_sha256", "final_loss", "bytes_total", "messages_total", "sim_time_s"):
        assert a[key] == b[key]
    return ray_out, local_out


def test_run_spans_both_nodes_and_equals_local(cluster, tmp_path: Path) -> None:
    ray_out, local_out = _cluster_run_equals_local(cluster, tmp_path, 20)

    def strip(p: Path) -> list[dict]:
        lines = (p / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k != "wall_time_s"} for x in lines]

    assert strip(ray_out) == strip(local_out)


def test_grpc_transport_across_the_two_nodes(cluster, tmp_path: Path) -> None:
    """Payloads cross the two Ray nodes over gRPC (the cluster's token in metadata)."""
    out, _ = _cluster_run_equals_local(cluster, tmp_path, 10, "--set", "engine.transport=grpc")
    # ring of 16 on 2 workers: 2 cut edges each way, one payload each
    tr = json.loads((out / "summary.json").read_text())["transport"]
    assert tr["grpc_payloads"] == 10 * 2 and tr["logical_cross_worker_messages"] == 10 * 4
    assert tr["logical_cross_worker_bytes"] < tr["grpc_bytes"] < tr["wire_bytes"]


def test_wrong_token_is_refused(cluster, tmp_path: Path) -> None:
    env = {**cluster["env"], "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    r = fedopt(
        "run",
        QUICK,
        "--set",
        "stop.rounds=2",
        "--quiet",
        "--engine",
        "ray",
        "--address",
        cluster["address"],
        "--out",
        str(tmp_path / "x"),
        env=env,
    )
    assert r.returncode == 2
    assert "cannot join a Ray cluster" in r.stderr and "RAY_AUTH_TOKEN" in r.stderr
    assert not (tmp_path / "x").exists()


def test_cluster_commands_refuse_to_start_without_a_token() -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}
    r = fedopt("cluster", "start-head", "--port", str(free_port()), env=env)
    assert r.returncode == 2 and "RAY_AUTH_TOKEN" in r.stderr


def test_compose_file_structure() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"head", "worker", "runner", "worker-gpu"} <= set(services)
    anchor = compose["x-fedopt"]
    assert anchor["env_file"] == [".env"] and anchor["environment"]["RAY_AUTH_MODE"] == "token"
    assert services["head"]["command"][:3] == ["fedopt", "cluster", "start-head"]
    assert services["worker"]["command"][:4] == ["fedopt", "cluster", "join", "head:6379"]
    assert "--block" in services["head"]["command"] and "--block" in services["worker"]["command"]
    runner = services["runner"]["command"]
    assert runner[:2] == ["fedopt", "run"] and "--engine" in runner and "ray" in runner
    assert (ROOT / runner[2]).is_file()  # the experiment it runs exists
    gpu = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    text = (ROOT / "docker-compose.yml").read_text()
    assert "RAY_AUTH_TOKEN=" not in text.replace("RAY_AUTH_TOKEN=$(", "")  # no literal token
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert "FROM python" in (ROOT / "Dockerfile").read_text()

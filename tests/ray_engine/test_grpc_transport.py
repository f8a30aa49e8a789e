"""engine.transport: grpc gives the local engine's bits, and three meters side by side."""

import copy
import csv
import json
import shutil
import socket

import pytest
import torch
from test_ray_events import CASES as EVENT_CASES
from test_ray_events import _strip
from test_ray_faults import CASES as FAULT_CASES
from test_ray_identical import CASES, assert_identical, run_on
from test_ray_restart import PLUGIN

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.errors import ConfigError
from fedopt.run import execute, run_experiment

NEEDS_SS = pytest.mark.skipif(
    shutil.which("ss") is None, reason="the wire meter reads `ss -tinp` (iproute2)"
)


@pytest.mark.parametrize(
    ("case", "actors"),
    [
        ("dsgd-one-peer-exp", 3),  # halo rows
        pytest.param("fedavg-digits-mlp", 2, marks=pytest.mark.slow),  # broadcast, gathers
    ],
)
def test_grpc_transport_equals_local(ray_session, case: str, actors: int) -> None:
    # the Ray transport equals local on the same cases (test_ray_identical), so all three agree
    local = run_on(CASES[case], kind="local")
    out = run_on(CASES[case], kind="ray", actors=actors, transport="grpc")
    assert_identical(local, out)
    links = [lm for st in out.transport for lm in st.links.values()]
    assert len(out.transport) == actors and sum(lm.payloads for lm in links) > 0


def test_grpc_event_swaps_equal_local(ray_session) -> None:
    raw = EVENT_CASES["dadao-ring"]
    local = execute(compile_plan(validate(raw)))
    grpc_raw = copy.deepcopy(raw)
    grpc_raw["engine"].update(kind="ray", actors=2, transport="grpc")
    out = execute(compile_plan(validate(grpc_raw)))
    assert torch.equal(out.result.final_params, local.result.final_params)
    assert _strip(out.result.records) == _strip(local.result.records)
    assert (out.edge_bytes == local.edge_bytes).all()
    swaps = [st.links[1 - st.rank].payloads for st in out.transport]
    assert swaps[0] == swaps[1] > 0  # one state swap each way per cross-worker level


@pytest.mark.slow
def test_grpc_transport_with_faults_and_partial_receipt_equals_local(ray_session) -> None:
    raw = FAULT_CASES["fedavg-star"]  # gather_sum partials and the arrival-time exchange
    local = execute(compile_plan(validate(raw)))
    grpc_raw = copy.deepcopy(raw)
    grpc_raw["engine"] = {"kind": "ray", "actors": 3, "threads": 1, "transport": "grpc"}
    out = execute(compile_plan(validate(grpc_raw)))
    assert torch.equal(out.result.final_params, local.result.final_params)
    assert _strip(out.result.records) == _strip(local.result.records)
    assert out.result.totals.by_kind == local.result.totals.by_kind
    assert (out.edge_bytes == local.edge_bytes).all()


GOSSIP = {
    "name": "g",
    "topology": {"name": "ring", "n": 4},
    "algorithm": {"name": "dsgd", "lr": 0.1},
    "problem": {"name": "quadratic", "dim": 50},
    "stop": {"rounds": 6},
    "engine": {"kind": "ray", "transport": "grpc", "one_node_per_actor": True, "threads": 1},
}


def read_csv(path) -> list[dict]:
    with path.open() as f:
        return [{k: int(v) for k, v in r.items()} for r in csv.DictReader(f)]


@NEEDS_SS
def test_three_meters_side_by_side(ray_session, tmp_path) -> None:
    run = run_experiment(validate(GOSSIP), out_dir=tmp_path / "a", progress=False)
    summary = json.loads((run / "summary.json").read_text())
    tr = summary["transport"]
    assert tr["one_node_per_worker"] and tr["header_bytes"] == 32
    # every logical message crosses workers here: 6 rounds x 8 directed edges
    assert tr["logical_bytes"] == tr["logical_cross_worker_bytes"] == 6 * 8 * (50 * 4 + 32)
    assert tr["grpc_payloads"] == 6 * 8 == tr["grpc_attempts"] == tr["grpc_frames"]
    assert tr["grpc_bytes"] == tr["grpc_bytes_received"]
    assert tr["logical_bytes"] < tr["grpc_bytes"] < tr["wire_bytes"]
    links = read_csv(run / "comm_links.csv")
    used = [r for r in links if r["grpc_payloads"]]
    assert len(links) == 12 and len(used) == 8  # every worker has a channel to every other
    for r in used:
        assert r["logical_messages"] == r["grpc_payloads"] == 6
        assert r["logical_bytes"] < r["grpc_bytes"] < r["wire_bytes"]
    for r in links:  # channels that carried nothing: only the connection's set-up
        if not r["grpc_payloads"]:
            assert r["logical_bytes"] == r["grpc_bytes"] == 0 < r["wire_bytes"] < 2000
    edges = read_csv(run / "comm_edges.csv")
    by_pair = {(r["src_worker"], r["dst_worker"]): r for r in links}
    for e in edges:
        link = by_pair[(e["src_worker"], e["dst_worker"])]
        assert (e["bytes"], e["grpc_bytes"], e["wire_bytes"]) == (
            link["logical_bytes"],
            link["grpc_bytes"],
            link["wire_bytes"],
        )


@pytest.mark.slow
@NEEDS_SS
def test_measured_header_charges_what_the_wire_carries(ray_session, tmp_path) -> None:
    raw = copy.deepcopy(GOSSIP)
    raw["network"] = {"header_bytes": "measured", "latency_s": 0.0, "bandwidth_Bps": 1e6}
    run = run_experiment(validate(raw), out_dir=tmp_path / "m", progress=False)
    summary = json.loads((run / "summary.json").read_text())
    header = summary["header_bytes_measured"]
    tr = summary["transport"]
    assert tr["header_bytes"] == header and tr["logical_bytes"] == 48 * (200 + header)
    for r in read_csv(run / "comm_links.csv"):
        if r["grpc_payloads"]:  # 6 messages: the first's full HTTP/2 headers and the
            # connection set-up are left over; the fixed 32-byte header misses far more
            gap, gap_fixed = r["wire_bytes"] - r["logical_bytes"], 6 * (header - 32)
            assert 0 < gap < 0.25 * r["wire_bytes"] < gap_fixed
    # simulated time charges the measured header: the local engine with it as a number
    pinned = copy.deepcopy(raw)
    pinned["network"]["header_bytes"] = header
    pinned["engine"] = {"threads": 1}
    local = execute(compile_plan(validate(pinned)))
    assert summary["sim_time_s"] == local.result.sim_time_s
    pinned["network"]["header_bytes"] = 32  # 6 rounds of one message per edge on the path
    fixed = execute(compile_plan(validate(pinned)))
    extra = 6 * (header - 32) / 1e6
    assert summary["sim_time_s"] == pytest.approx(fixed.result.sim_time_s + extra, rel=1e-12)


@pytest.mark.slow
def test_bad_transport_settings_are_refused(ray_session, tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        raw = copy.deepcopy(GOSSIP)
        raw["engine"]["grpc"] = {"host": "127.0.0.1", "ports": f"{port}-{port}"}
        with pytest.raises(ConfigError, match=r"engine.grpc.ports: worker \d found every port"):
            run_experiment(validate(raw), out_dir=tmp_path / "p", progress=False)
    assert not (tmp_path / "p").exists()


@pytest.mark.slow
def test_bench_transport_moves_every_payload_on_both_transports(ray_session) -> None:
    from fedopt.bench.transport import bench_payloads

    rows = bench_payloads({"4KB": 20, "40MB": 2}, {"chunk_bytes": 1 << 20})
    assert [(r["transport"], r["payload"], r["count"]) for r in rows] == [
        ("ray", "4KB", 20),
        ("ray", "40MB", 2),
        ("grpc", "4KB", 20),
        ("grpc", "40MB", 2),
    ]
    assert all(r["GB_per_s"] > 0 and r["seconds"] > 0 for r in rows)


@pytest.mark.slow
def test_a_dead_peer_is_restarted_with_fresh_grpc_servers(ray_session, tmp_path) -> None:
    plugin = tmp_path / "dying.py"
    plugin.write_text(PLUGIN.format(marker=str(tmp_path / "died")))
    raw = {
        "plugins": [str(plugin)],
        "topology": {"name": "ring", "n": 6},
        "algorithm": {"name": "dsgd", "lr": 0.1},
        "problem": {"name": "dying_quadratic", "dim": 4, "noise_std": 0.1},
        "stop": {"rounds": 8},
        "output": {"checkpoint_every": 2},
        "engine": {"threads": 1},
    }
    grpc_raw = copy.deepcopy(raw)
    grpc_raw["engine"].update(kind="ray", actors=2, max_restarts=1, transport="grpc")
    grpc_raw["engine"]["grpc"] = {"deadline_s": 5, "retries": 1}
    out = execute(compile_plan(validate(grpc_raw)), on_checkpoint=lambda ck: None)
    assert out.restarts == 1 and (tmp_path / "died").exists()
    ref = execute(compile_plan(validate(raw)))
    assert torch.equal(out.result.final_params, ref.result.final_params)
    assert out.result.sim_time_s == ref.result.sim_time_s

"""Logical payloads apart from the moved tensor; neighbours; operator handles; overflow."""

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from helpers import experiment, run

from fedopt.config import validate
from fedopt.engine.comm import OperatorHandle
from fedopt.engine.compile import compile_plan
from fedopt.engine.payload import Payload
from fedopt.engine.worker import Worker
from fedopt.errors import ConfigError, EngineError
from fedopt.network.meter import INT64_MAX, Meter

HEADER = 32
PROBE = str(Path(__file__).resolve().parents[1] / "plugins" / "payload_probe.py")


def probe(rounds: int = 3, **sections):
    return experiment(
        plugins=[PROBE],
        algorithm={"name": "payload_probe", **sections.pop("algorithm", {})},
        stop={"rounds": rounds},
        **sections,
    )


def worker_for(raw: dict) -> Worker:
    plan = compile_plan(validate(raw))
    return Worker(plan, np.arange(plan.topology.n), torch.device("cpu"))


def test_fields_of_mixed_dtypes_are_exact() -> None:
    p = Payload.fields({"seed": (1, torch.int64), "coeffs": (7, torch.float16)})
    assert p.sizes(torch.tensor([0, 5])) == 8 + 7 * 2 == 22
    counts = torch.tensor([3, 0, 10])
    q = Payload.fields(
        {"seed": (1, torch.int64), "coeffs": (counts, torch.float32)},
        senders=torch.tensor([4, 1, 2]),
    )
    assert q.sizes(torch.tensor([1, 2, 4, 4])).tolist() == [8, 48, 20, 20]


def test_probe_meters_seed_and_fp16_coefficients_and_per_sender_sizes() -> None:
    rounds, n = 3, 8
    plan, result, _ = run(probe(rounds))
    per_round = 2 * n  # ring: each node sends to both neighbours
    assert result.totals.by_kind["nbr"] == [per_round * rounds, per_round * rounds * (22 + HEADER)]
    # mix: sender j sends 3 j + 1 payload bytes to each of its 2 neighbours
    model = rounds * sum(2 * (3 * j + 1 + HEADER) for j in range(n))
    assert result.totals.by_kind["model"] == [per_round * rounds, model]
    assert result.totals.bytes == per_round * rounds * (22 + HEADER) + model
    assert result.totals.messages == plan.topology.edges.shape[0] * 2 * rounds


def test_default_payload_keeps_the_moved_tensor_size() -> None:
    w = worker_for(experiment())
    X = torch.randn(8, 5)
    w.comm.mix(X, 0)
    assert w.meter.totals.by_kind["model"] == [16, 16 * (5 * 4 + HEADER)]


def test_gather_with_per_sender_bytes_meters_each_edge_exactly() -> None:
    w = worker_for(
        experiment(topology={"name": "star", "n": 6}, algorithm={"name": "fedavg", "lr": 0.1})
    )
    senders = torch.tensor([1, 2, 4, 5])
    rows = torch.randn(4, 3)
    p = Payload.per_sender(torch.tensor([10, 0, 7, 1000]), senders, name="ferret uplink")
    got = w.comm.gather(rows, senders, 0, "up", payload=p)
    assert got is not None and torch.equal(got[0], rows)
    eids = w.comm.edge_ids(senders, 0)
    assert w.meter.edge_bytes[eids].tolist() == [42, 32, 39, 1032]
    assert w.meter.totals.by_kind["up"] == [4, 42 + 32 + 39 + 1032]
    # each message's own size sets its delay: the server waits for the 1032-byte one
    delay = w.link.delay(eids, torch.tensor([42, 32, 39, 1032]))
    assert float(w.comm.clock[0]) == float(delay[3]) > float(delay[:3].max())


def test_gather_sum_places_senders_and_meters_fields() -> None:
    w = worker_for(
        experiment(topology={"name": "star", "n": 6}, algorithm={"name": "fedavg", "lr": 0.1})
    )
    everyone = torch.tensor([1, 2, 3, 4, 5])
    rows = torch.arange(15, dtype=torch.float32).reshape(5, 3)
    weights = torch.ones(5)
    p = Payload.fields({"model": (3, torch.float32), "count": (1, torch.int64)})
    out = w.comm.gather_sum(rows, weights, everyone, everyone, 0, "update", p)
    assert out is not None
    assert torch.equal(out[0], rows.sum(0)) and float(out[1]) == 5.0
    assert w.meter.totals.by_kind["update"] == [5, 5 * (12 + 8 + HEADER)]
    with pytest.raises(EngineError, match="not listed in everyone"):
        w.comm.gather_sum(rows[:1], weights[:1], torch.tensor([3]), everyone[:2], 0, "u")


def test_broadcast_payload() -> None:
    w = worker_for(
        experiment(topology={"name": "star", "n": 6}, algorithm={"name": "fedavg", "lr": 0.1})
    )
    coeffs = Payload.fields({"coeffs": (5, torch.float16)})
    w.comm.broadcast(torch.zeros(1, 100), 0, torch.tensor([1, 3]), "down", payload=coeffs)
    assert w.meter.totals.by_kind["down"] == [2, 2 * (10 + HEADER)]


def test_neighbours_on_a_ring_with_a_crash() -> None:
    raw = experiment(faults={"crashes": [{"nodes": [3], "from_round": 0}]})
    w = worker_for(raw)
    comm = w.comm
    comm.begin_round(0)
    X = torch.randn(8, 4, dtype=torch.float32)
    nb = comm.neighbours(X, 0)
    W = comm.topology.mixing_at(0).toarray()
    # node 3 sends nothing and hears nothing: its 4 messages are missing
    pairs = [(0, 1), (0, 7), (1, 0), (1, 2), (2, 1), (4, 5), (5, 4), (5, 6), (6, 5), (6, 7)]
    pairs += [(7, 0), (7, 6)]
    assert list(zip(nb.dst.tolist(), nb.src.tolist(), strict=True)) == pairs
    assert torch.equal(nb.rows, X[nb.src])
    assert nb.weight.tolist() == [W[d, s] for d, s in pairs]
    expect_self = np.diag(W).copy()
    expect_self[2] += W[2, 3]
    expect_self[4] += W[4, 3]
    expect_self[3] += W[3, 2] + W[3, 4]
    assert np.allclose(nb.self_weight.numpy(), expect_self, rtol=0, atol=1e-15)
    # metered like mix: 12 used; 2 messages to the crashed node were sent and lost
    assert comm.meter.totals.by_kind["model"][0] == 12
    assert comm.meter.totals.by_kind["model:dropped"][0] == 2
    # the neighbourhood sum equals mix up to rounding (mix subtracts missing terms)
    Y = comm.mix(X, 0)
    assert torch.allclose(nb.weighted_sum(X), Y, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("topo", [{"name": "ring", "n": 8}, {"name": "star", "n": 40}])
def test_neighbours_sum_equals_mix_bit_for_bit(dtype, topo) -> None:
    w = worker_for(experiment(topology=topo))
    X = torch.randn(topo["n"], 33, dtype=torch.float64).to(dtype)
    nb = w.comm.neighbours(X, 0)
    assert torch.equal(nb.weighted_sum(X), w.comm.mix(X, 0))


def test_probe_runs_neighbours_and_mix_bit_identical() -> None:
    _, result, _ = run(probe(4, topology={"name": "torus", "n": 16}))
    assert result.rounds == 4  # the probe asserts mix == neighbours sum every round


def test_operators_are_registered_handles() -> None:
    w = worker_for(experiment())
    comm = w.comm
    n = comm.topology.n
    lap = sp.csr_matrix(sp.diags(np.full(n, 2.0)) - comm.topology.mixing_at(0) * 0)
    op = comm.register_operator(lap, "twice identity")
    assert op == OperatorHandle(0, "twice identity")
    X = torch.randn(n, 3)
    assert torch.equal(comm.mix(X, 0, op=op), 2.0 * X)
    assert comm.meter.totals.messages == 0  # a diagonal operator sends nothing
    with pytest.raises(ConfigError, match="off the graph's edges"):
        comm.register_operator(sp.csr_matrix(np.ones((n, n))), "dense")
    with pytest.raises(ConfigError, match="n=8 nodes"):
        comm.register_operator(sp.identity(5, format="csr"), "small")
    with pytest.raises(EngineError, match="not an operator registered"):
        comm.mix(X, 0, op=OperatorHandle(7, "stranger"))


def test_overflowing_payloads_are_refused_not_wrapped() -> None:
    with pytest.raises(ConfigError, match=r"payload\{x: float32\}.*exceeds.*int64"):
        Payload.fields({"x": (1 << 62, torch.float32)})
    with pytest.raises(ConfigError, match="exceeds"):
        Payload.fields({"x": (torch.tensor([1 << 61]), torch.float64)}, senders=torch.tensor([0]))
    with pytest.raises(ConfigError, match="negative"):
        Payload.per_sender(torch.tensor([-1]), torch.tensor([0]))
    w = worker_for(experiment())
    huge = Payload.per_sender(torch.full((8,), INT64_MAX - 10), torch.arange(8), name="huge")
    before = w.meter.edge_bytes.clone()
    with pytest.raises(ConfigError, match=r"huge: a message of .* bytes exceeds"):
        w.comm.mix(torch.zeros(8, 2), 0, payload=huge)
    assert torch.equal(w.meter.edge_bytes, before) and w.meter.totals.bytes == 0


@pytest.mark.parametrize("as_tensor", [False, True])
def test_meter_refuses_totals_beyond_int64(as_tensor: bool) -> None:
    m = Meter(4)
    eids = torch.tensor([0, 1])
    big = 1 << 61
    one = torch.tensor([big]) if as_tensor else big
    m.record(eids, torch.tensor([big, big]) if as_tensor else big, "a")
    m.record(torch.tensor([2]), one, "a")
    state = (m.edge_bytes.clone(), m.totals.bytes)
    assert state[1] == 3 * big == INT64_MAX - big + 1
    with pytest.raises(EngineError, match=r"kind 'b'.*beyond int64"):
        m.record(torch.tensor([2]), one, "b")
    assert torch.equal(m.edge_bytes, state[0]) and m.totals.bytes == state[1]
    # attempts multiply sizes: refused before the product wraps
    with pytest.raises(EngineError, match="beyond int64"):
        m.record(torch.tensor([3]), torch.tensor([big]), "c", attempts=torch.tensor([5]))

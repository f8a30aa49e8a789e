"""Metered messages and bytes equal the analytic count, per run, per edge and per node."""

import numpy as np
import pytest
from helpers import experiment, run

HEADER = 32


@pytest.mark.parametrize(
    ("name", "n"),
    [("ring", 8), ("path", 5), ("complete", 6), ("grid", 9), ("torus", 16), ("hypercube", 8)],
)
def test_dsgd_counts_equal_two_messages_per_edge_per_round(name: str, n: int) -> None:
    rounds, dim = 3, 7
    plan, result, worker = run(
        experiment(
            topology={"name": name, "n": n},
            problem={"name": "quadratic", "dim": dim},
            stop={"rounds": rounds},
        )
    )
    undirected_edges = len(plan.topology.edges) // 2
    assert result.totals.messages == 2 * undirected_edges * rounds
    assert result.totals.bytes == result.totals.messages * (dim * 4 + HEADER)
    # every directed edge carried exactly one message per round
    assert np.all(worker.meter.edge_messages.numpy() == rounds)
    sent = worker.meter.node_totals(plan.topology.edges, n)["sent_messages"]
    degrees = np.bincount(plan.topology.edges[:, 0], minlength=n)
    assert np.array_equal(sent, degrees * rounds)


def test_one_peer_exponential_sends_one_message_per_node_per_round() -> None:
    n, rounds, dim = 16, 8, 3
    _, result, _ = run(
        experiment(
            topology={"name": "one_peer_exponential", "n": n},
            problem={"name": "quadratic", "dim": dim},
            stop={"rounds": rounds},
        )
    )
    assert result.totals.messages == n * rounds
    assert result.totals.bytes == n * rounds * (dim * 4 + HEADER)


@pytest.mark.parametrize(("fraction", "sampled"), [(1.0, 10), (0.3, 3)])
def test_fedavg_counts_broadcast_and_update_messages(fraction: float, sampled: int) -> None:
    rounds, dim = 4, 6
    plan, result, worker = run(
        experiment(
            topology={"name": "star", "n": 11},
            algorithm={"name": "fedavg", "lr": 0.1, "local_steps": 2, "client_fraction": fraction},
            problem={"name": "quadratic", "dim": dim},
            stop={"rounds": rounds},
        )
    )
    down = dim * 4 + HEADER  # global model
    up = (dim + 1) * 4 + HEADER  # local model + sample count
    assert result.totals.by_kind["model"] == [sampled * rounds, sampled * rounds * down]
    assert result.totals.by_kind["update"] == [sampled * rounds, sampled * rounds * up]
    assert result.totals.messages == 2 * sampled * rounds
    nodes = worker.meter.node_totals(plan.topology.edges, plan.topology.n)
    assert nodes["recv_messages"][0] == sampled * rounds  # the server hears every update
    assert nodes["sent_bytes"][0] == sampled * rounds * down


def test_lossy_links_retransmit_with_geometric_attempts() -> None:
    rounds, dim, n = 40, 4, 50
    _, result, _ = run(
        experiment(
            topology={"name": "ring", "n": n},
            problem={"name": "quadratic", "dim": dim},
            network={"loss": 0.5},
            stop={"rounds": rounds},
        )
    )
    logical = 2 * n * rounds
    assert result.totals.messages == logical
    sent = logical + result.totals.retransmissions
    assert result.totals.bytes == sent * (dim * 4 + HEADER)
    # attempts ~ Geometric(1/2): mean 2, so about as many retransmissions as messages
    assert abs(sent / logical - 2.0) < 0.1


def test_metering_can_be_disabled_for_overhead_measurement() -> None:
    from fedopt.config import validate
    from fedopt.engine.compile import compile_plan
    from fedopt.engine.worker import Worker

    plan = compile_plan(validate(experiment()))
    w = Worker(plan, np.arange(8), __import__("torch").device("cpu"), meter_enabled=False)
    w.round(0)
    assert w.meter.totals.messages == 0

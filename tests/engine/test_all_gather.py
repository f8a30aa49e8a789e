"""``Comm.all_gather`` meters its own messages: used, late and listened-to, exact counts.

The robust peer-to-peer round (MoNNA, LEARN, ...) sends every honest vector to every
other node through one all-gather; the collective meters what each receiver waits for
(``kind``), what it gets too late (``kind:late``) and what the omniscient Byzantine nodes
read (``kind``, not waited for). Link-loss draws are keyed by the exchange number of the
metering all-gather, so a label-flipping adversary's own (unmetered) gather must come
first: ``test_label_flip_on_lossy_links_draws_with_the_metered_exchange`` pins that.
"""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import experiment

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.engine.payload import Payload
from fedopt.engine.worker import Worker
from fedopt.errors import EngineError
from fedopt.run import execute

HEADER = 32
ROOT = Path(__file__).resolve().parents[2]


def complete_worker(n: int = 5, **network: float) -> Worker:
    raw = experiment(
        topology={"name": "complete", "n": n},
        algorithm={"name": "p2p_mean", "lr": 0.1},
        problem={"name": "quadratic", "dim": 3, "dtype": "float64"},
        network={"latency_s": 0.5, "bandwidth_Bps": float("inf"), **network},
    )
    plan = compile_plan(validate(raw))
    return Worker(plan, np.arange(n), torch.device("cpu"))


def test_without_a_kind_nothing_is_metered_but_the_exchange_counts() -> None:
    w = complete_worker()
    rows = torch.randn(4, 3, dtype=torch.float64)
    everyone = torch.arange(4)
    out, clocks = w.comm.all_gather(rows, everyone, everyone)
    assert torch.equal(out, rows) and clocks.tolist() == [0.0] * 4
    assert w.meter.totals.messages == 0 and w.comm.exchange == 1


def test_used_late_and_listener_messages_are_metered_exactly() -> None:
    w = complete_worker()
    w.comm.clock[:] = torch.tensor([1.0, 2.0, 3.0, 4.0, 0.0], dtype=torch.float64)
    everyone = torch.arange(4)  # node 4 listens (an omniscient adversary)
    uses = torch.zeros(4, 4, dtype=torch.bool)
    uses[0, 3] = uses[1, 0] = uses[1, 2] = True  # node 2 and node 3 wait for nothing
    uses[2, 2] = True  # its own message: ignored (no message to itself)
    rows = torch.randn(4, 3, dtype=torch.float64)
    _, clocks = w.comm.all_gather(
        rows, everyone, everyone, kind="model", uses=uses, listeners=torch.tensor([4])
    )
    assert clocks.tolist() == [1.0, 2.0, 3.0, 4.0]  # the send times, before any arrival
    size = 3 * 8 + HEADER
    by_kind = w.meter.totals.by_kind
    assert by_kind["model:late"] == [12 - 3, 9 * size]  # 4 x 3 messages, 3 used
    assert by_kind["model"] == [3 + 4, 7 * size]  # 3 used + 4 to the listener
    # receivers move to their latest used arrival (latency 0.5 s, no bandwidth delay)
    assert w.comm.clock.tolist() == [4.5, 3.5, 3.0, 4.0, 0.0]
    eid = w.comm.edge_ids(torch.tensor([3, 0, 4]), torch.tensor([4, 4, 0]))  # 4 sends none
    assert w.meter.edge_messages[eid].tolist() == [1, 1, 0]


def test_payload_and_shape_checks() -> None:
    w = complete_worker()
    everyone = torch.arange(5)
    p = Payload.per_sender(torch.tensor([1, 2, 3, 4, 5]), everyone, name="seeds")
    w.comm.all_gather(torch.zeros(5, 3), everyone, everyone, kind="seed", payload=p)
    # sender s sends 4 messages of s + 1 payload bytes
    assert w.meter.totals.by_kind["seed"] == [20, sum(4 * (s + 1 + HEADER) for s in range(5))]
    with pytest.raises(EngineError, match=r"uses has shape \(2, 5\).*\(5, 5\)"):
        w.comm.all_gather(
            torch.zeros(5, 3), everyone, everyone, kind="x", uses=torch.ones(2, 5, dtype=bool)
        )


def test_lossy_links_draw_with_the_all_gathers_exchange_number() -> None:
    w = complete_worker(loss=0.4)
    everyone = torch.arange(5)
    w.comm.all_gather(torch.zeros(5, 3), everyone, everyone)  # exchange 1: unmetered
    w.comm.all_gather(torch.zeros(5, 3), everyone, everyone, kind="model")  # exchange 2
    src, dst = everyone.repeat_interleave(5), everyone.repeat(5)
    eids = w.comm.edge_ids(src[src != dst], dst[src != dst])
    attempts = w.link.attempts(eids, 2)
    assert w.meter.totals.retransmissions == int(attempts.sum()) - 20 > 0
    assert w.meter.totals.retransmissions != int(w.link.attempts(eids, 1).sum()) - 20


def test_label_flip_on_lossy_links_draws_with_the_metered_exchange() -> None:
    """One MoNNA round under label flipping: the adversary's gather is exchange 1, the
    metered exchange 2; every retransmission is drawn with key 2."""
    n, f, dim = 7, 2, 4
    raw = experiment(
        topology={"name": "complete", "n": n},
        algorithm={"name": "monna", "lr": 0.1},
        problem={"name": "logistic", "dim": dim, "samples_per_node": 10, "batch_size": 4},
        byzantine={"count": f, "attack": {"name": "label_flip"}},
        network={"loss": 0.5},
        stop={"rounds": 1},
    )
    plan = compile_plan(validate(raw))
    out = execute(plan)
    h = n - f
    src = torch.cat([torch.arange(h).repeat_interleave(n - 1), torch.arange(h, n).repeat(h)])
    dst = torch.cat(
        [torch.tensor([d for s in range(h) for d in range(n) if d != s]), torch.arange(h).repeat(f)]
    )  # honest -> everyone else, Byzantine -> honest
    w = Worker(plan, np.arange(n), torch.device("cpu"))
    attempts = w.link.attempts(w.comm.edge_ids(src, dst), 2)
    assert out.result.totals.messages == len(src) == h * (n - 1) + f * h
    assert out.result.totals.retransmissions == int(attempts.sum()) - len(src) > 0


def test_no_algorithm_meters_its_own_messages() -> None:
    """The collectives meter; no algorithm module calls ``meter_messages``."""
    calls = []
    for path in sorted((ROOT / "fedopt" / "algorithms").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "meter_messages":
                calls.append(f"{path.name}:{node.lineno}")
    assert calls == []

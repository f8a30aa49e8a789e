"""An interrupted event run resumed from its checkpoint ends exactly as an uninterrupted one.

``output.checkpoint_every`` counts event blocks (the ``round`` of an event run's records).
"""

import copy
import json
from pathlib import Path

import pytest
from helpers import experiment

from fedopt.config import validate
from fedopt.engine.compile import compile_plan
from fedopt.engine.events_worker import EventWorker
from fedopt.run import checkpoint_path, execute, run_experiment

LSQ = {"name": "least_squares", "dim": 4, "samples_per_node": 30, "dtype": "float64"}
CASES = {
    # blocks cut at every evaluation tick: the pending rest of a block is checkpointed
    "dadao-ticks": experiment(
        topology={"name": "ring", "n": 8},
        algorithm={"name": "dadao"},
        problem=LSQ,
        stop={"sim_time_s": 40.0},
        eval={"every_time_s": 2.5},
        engine={"threads": 1, "event_block": 64},
        output={"checkpoint_every": 4},
    ),
    # a switching stream: its buffer of drawn segments is checkpointed
    "dadao-time-varying": experiment(
        topology={"name": "random_geometric_sequence", "n": 10, "params": {"count": 4}},
        algorithm={"name": "dadao"},
        problem=LSQ,
        stop={"events": 1500},
        eval={"every": 3},
        engine={"threads": 1, "event_block": 100},
        output={"checkpoint_every": 4},
    ),
    "continuized": experiment(
        topology={"name": "ring", "n": 8},
        algorithm={"name": "continuized"},
        problem=LSQ,
        stop={"sim_time_s": 60.0},  # about 240 edge events
        engine={"threads": 1, "event_block": 16},
        output={"checkpoint_every": 3},
    ),
    "async-gossip": experiment(
        topology={"name": "grid", "n": 9},
        algorithm={"name": "async_gossip_sgd", "lr": 0.05},
        problem={**LSQ, "batch_size": 5},
        stop={"events": 1200},
        engine={"threads": 1, "event_block": 100},
        output={"checkpoint_every": 4},
    ),
}


def records(path: Path) -> list[dict]:
    lines = (path / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "wall_time_s"} for x in lines]


@pytest.mark.parametrize("case", sorted(CASES))
def test_event_run_resumed_after_a_crash_gives_identical_results(
    case: str, tmp_path: Path, monkeypatch
) -> None:
    cfg = validate(CASES[case])
    every = cfg.output.checkpoint_every
    ref = run_experiment(cfg, out_dir=tmp_path / "ref", progress=False)
    blocks = json.loads((ref / "summary.json").read_text())["rounds"]
    crash_at = 2 * every + 2  # after the checkpoint of block 2 * every
    assert blocks > crash_at

    original = EventWorker.step

    def crash(self, until_time):
        if self.blocks + 1 == crash_at:
            raise KeyboardInterrupt("driver killed")
        return original(self, until_time)

    monkeypatch.setattr(EventWorker, "step", crash)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, out_dir=out, progress=False)
    assert not out.exists() and checkpoint_path(out).is_file()
    stepped: list[int] = []

    def count(self, until_time):
        stepped.append(self.blocks)
        return original(self, until_time)

    monkeypatch.setattr(EventWorker, "step", count)
    resumed = run_experiment(cfg, out_dir=out, progress=False, resume=True)
    assert stepped == list(range(2 * every, blocks))  # only the blocks after the checkpoint
    assert records(resumed) == records(ref)
    a = json.loads((resumed / "summary.json").read_text())
    b = json.loads((ref / "summary.json").read_text())
    for key in ("params_sha256", "bytes_total", "messages_total", "sim_time_s", "rounds"):
        assert a[key] == b[key]
    for key in ("events_total", "gradients_total", "communications_total", "derived"):
        assert a[key] == b[key]
    assert (resumed / "comm_edges.csv").read_text() == (ref / "comm_edges.csv").read_text()
    assert not checkpoint_path(out).exists()


def test_checkpoints_come_every_k_blocks_and_each_resumes_exactly(monkeypatch) -> None:
    raw = copy.deepcopy(CASES["dadao-ticks"])
    plan = compile_plan(validate(raw))
    saved: list[dict] = []
    ref = execute(plan, on_checkpoint=saved.append)
    assert [c["round"] for c in saved] == list(range(4, ref.result.rounds, 4))
    original = EventWorker.step
    stepped: list[int] = []

    def count(self, until_time):
        stepped.append(self.blocks)
        return original(self, until_time)

    monkeypatch.setattr(EventWorker, "step", count)
    for ckpt in (saved[0], saved[-1]):
        stepped.clear()
        again = execute(plan, resume=copy.deepcopy(ckpt))
        assert stepped == list(range(ckpt["round"], ref.result.rounds))
        assert again.result.final_params.equal(ref.result.final_params)
        assert (again.edge_messages == ref.edge_messages).all()
        strip = [{k: v for k, v in r.items() if k != "wall_time_s"} for r in again.result.records]
        assert strip == [
            {k: v for k, v in r.items() if k != "wall_time_s"} for r in ref.result.records
        ]

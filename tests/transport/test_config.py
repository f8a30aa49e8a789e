"""engine.transport / engine.grpc / network.header_bytes: bad input gets a clear error."""

import shutil

import pytest
from helpers import experiment

from fedopt.config import validate
from fedopt.engine.compile import resolve_header
from fedopt.errors import ConfigError


def test_grpc_with_the_local_engine_is_refused() -> None:
    with pytest.raises(
        ConfigError,
        match=r"engine.transport: 'grpc'.*engine.kind is 'local'.*"
        r"set engine.kind: ray",
    ):
        validate(experiment(engine={"transport": "grpc"}))


@pytest.mark.parametrize(
    ("grpc", "match"),
    [
        ({"chunk_bytes": 4 << 20}, r"chunk_bytes=4194304 plus the frame header allowance"),
        ({"ports": "9000-80"}, r"engine.grpc.ports: '9000-80' is not a range"),
        ({"ports": "a-b"}, r"ports"),
        ({"deadline_s": 0}, r"deadline_s"),
    ],
)
def test_bad_grpc_settings_are_refused(grpc: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        validate(experiment(engine={"kind": "ray", "transport": "grpc", "grpc": grpc}))


@pytest.mark.skipif(shutil.which("ss") is None, reason="'measured' reads `ss -tinp`")
def test_header_bytes_is_a_number_or_measured() -> None:
    with pytest.raises(ConfigError, match=r"header_bytes"):
        validate(experiment(network={"header_bytes": "guess"}))
    with pytest.raises(ConfigError, match=r"header_bytes"):
        validate(experiment(network={"header_bytes": -1}))
    cfg = resolve_header(validate(experiment(network={"header_bytes": "measured"})))
    assert isinstance(cfg.network.header_bytes, int) and cfg.network.header_bytes > 100
    assert cfg.model_copy() == cfg and resolve_header(cfg) is cfg


def test_a_resumed_run_keeps_the_header_its_first_part_measured(tmp_path, monkeypatch) -> None:
    import json

    from helpers import crash_and_resume, run_records

    import fedopt.transport.calibrate as calibrate
    from fedopt.algorithms.dsgd import DSGD

    calls = []

    def fake(cfg) -> int:  # the first two runs measure 400 B, a later one 999 B
        calls.append(cfg)
        return 400 if len(calls) <= 2 else 999

    monkeypatch.setattr(calibrate, "measured_header_bytes", fake)
    cfg = validate(
        experiment(
            network={"header_bytes": "measured", "bandwidth_Bps": 1e5},
            stop={"rounds": 6},
            output={"checkpoint_every": 2},
        )
    )
    ref, resumed = crash_and_resume(cfg, DSGD, 4, tmp_path, monkeypatch)
    assert len(calls) == 3  # the resume measured 999 B but kept the checkpoint's 400 B
    a, b = (json.loads((p / "summary.json").read_text()) for p in (ref, resumed))
    assert a["header_bytes_measured"] == b["header_bytes_measured"] == 400
    assert a["sim_time_s"] == b["sim_time_s"] and a["bytes_total"] == b["bytes_total"]
    assert run_records(ref) == run_records(resumed)

"""engine.transport / engine.grpc / network.header_bytes: bad input gets a clear error."""

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


def test_header_bytes_is_a_number_or_measured() -> None:
    with pytest.raises(ConfigError, match=r"header_bytes"):
        validate(experiment(network={"header_bytes": "guess"}))
    with pytest.raises(ConfigError, match=r"header_bytes"):
        validate(experiment(network={"header_bytes": -1}))
    cfg = resolve_header(validate(experiment(network={"header_bytes": "measured"})))
    assert isinstance(cfg.network.header_bytes, int) and cfg.network.header_bytes > 100
    assert cfg.model_copy() == cfg and resolve_header(cfg) is cfg

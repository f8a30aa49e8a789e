"""Every refusal of the event schedule happens at compile time: ``fedopt validate``
refuses exactly what ``fedopt run`` refuses, with the same message and exit code 2."""

import copy
from pathlib import Path

import pytest
import yaml
from helpers import experiment

from fedopt.cli import main

LSQ = {"name": "least_squares", "dim": 5, "samples_per_node": 50, "dtype": "float64"}
DADAO = experiment(
    topology={"name": "ring", "n": 8},
    algorithm={"name": "dadao"},
    problem=LSQ,
    stop={"sim_time_s": 5.0},
    engine={"threads": 1, "event_block": 256},
)
RATED = """
import networkx as nx


def rated_ring(n, *, seed):
    g = nx.cycle_graph(n)
    nx.set_edge_attributes(g, 1.0, "rate")
    g.edges[0, 1]["rate"] = {rate}
    return g
"""


def _with(**changes: object) -> dict:
    raw = copy.deepcopy(DADAO)
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            raw.setdefault(section, {})[field] = value
        else:
            raw[section] = value
    return raw


# (case, raw config or a builder of it from tmp_path, a fragment the message must hold)
CASES = {
    "dadao-rate-attribute": (
        lambda tmp: _with(topology={"name": f"{_graph(tmp, 2.0)}:rated_ring", "n": 6}),
        "'rate' edge attribute",
    ),
    "continuized-rate-attribute": (
        lambda tmp: _with(
            topology={"name": f"{_graph(tmp, 2.0)}:rated_ring", "n": 6},
            algorithm={"name": "continuized"},
        ),
        "'rate' edge attribute",
    ),
    "async-gossip-bad-rate": (
        lambda tmp: _with(
            topology={"name": f"{_graph(tmp, -1.0)}:rated_ring", "n": 6},
            algorithm={"name": "async_gossip_sgd"},
        ),
        "must be set and > 0",
    ),
    "stop-rounds-only": (lambda tmp: _with(stop={"rounds": 10}), "stop.sim_time_s, stop.events"),
    "dadao-matchings": (
        lambda tmp: _with(topology={"name": "one_peer_exponential", "n": 8}),
        "needs a sequence of connected graphs",
    ),
    "async-gossip-matchings": (
        lambda tmp: _with(
            topology={"name": "random_matching", "n": 8}, algorithm={"name": "async_gossip_sgd"}
        ),
        "needs a sequence of connected graphs",
    ),
    "continuized-time-varying": (
        lambda tmp: _with(
            topology={"name": "random_geometric_sequence", "n": 8, "params": {"count": 3}},
            algorithm={"name": "continuized"},
        ),
        "is time-varying",
    ),
    "continuized-no-conjugate": (
        lambda tmp: _with(
            algorithm={"name": "continuized"},
            problem={"name": "logistic", "dim": 4, "samples_per_node": 20, "l2": 0.1},
        ),
        "needs capability 'conjugate_gradients'",
    ),
    "continuized-singular-conjugate": (
        lambda tmp: _with(
            algorithm={"name": "continuized", "mu": 0.1, "L": 2.0},
            problem={**LSQ, "samples_per_node": 3},
        ),
        "samples_per_node >= dim",
    ),
    "dadao-not-strongly-convex": (
        lambda tmp: _with(problem={"name": "logistic", "dim": 4, "samples_per_node": 20}),
        "needs a strongly convex problem",
    ),
    "dadao-L-below-mu": (
        lambda tmp: _with(algorithm={"name": "dadao", "mu": 2.0, "L": 1.0}),
        "must be >= mu",
    ),
    "dadao-on-cuda": (lambda tmp: _with(engine__device="cuda"), "runs on the CPU"),
    "dadao-faults": (
        lambda tmp: _with(faults={"crashes": [{"nodes": [1], "from_round": 2}]}),
        "does not take a fault schedule",
    ),
    "dadao-ray-gpus": (
        lambda tmp: _with(engine={"kind": "ray", "threads": 1, "gpus_per_actor": 0.5}),
        "engine.gpus_per_actor",
    ),
    "dadao-ray-restarts": (
        lambda tmp: _with(engine={"kind": "ray", "threads": 1, "max_restarts": 2}),
        "engine.max_restarts",
    ),
}


def _graph(tmp: Path, rate: float) -> Path:
    path = tmp / "rated.py"
    path.write_text(RATED.format(rate=rate))
    return path


def _cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_refuses_what_run_refuses(case: str, tmp_path: Path, capsys) -> None:
    build, fragment = CASES[case]
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(build(tmp_path)))
    code_v, err_v = _cli(capsys, "validate", str(path))
    code_r, err_r = _cli(capsys, "run", str(path), "--out", str(tmp_path / "run"), "--quiet")
    assert (code_v, code_r) == (2, 2)
    assert err_v == err_r and err_v.startswith("error: ") and fragment in err_v
    assert len(err_v.splitlines()) == 1
    assert not (tmp_path / "run").exists()

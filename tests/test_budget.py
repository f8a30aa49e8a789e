"""Refuse up front what cannot fit (issue 10, item 2).

Each probe asks for far more memory than any machine has; it must say no with exit code
2, name the field, the estimate, the limit and the fix, within a few seconds and without
allocating what it refuses (peak RSS grows by well under 100 MB).
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import networkx as nx
import pytest
import torch
from helpers import experiment

from fedopt.cli import main
from fedopt.config import validate
from fedopt.engine import budget
from fedopt.engine.compile import compile_plan
from fedopt.errors import ConfigError, EngineError
from fedopt.network.meter import Meter

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "experiments" / "quickstart.yaml")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def refused(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[str, float, float]:
    """Run the CLI in-process: ``(stderr, seconds, peak RSS growth in MB)``; exit 2."""
    before, t0 = _peak_mb(), time.perf_counter()
    code = main(argv)
    seconds, grown = time.perf_counter() - t0, _peak_mb() - before
    err = capsys.readouterr().err
    assert code == 2, err
    return err, seconds, grown


PROBES = {
    "complete_200k": (
        ["--set", "topology.name=complete", "--set", "topology.n=200000"],
        "topology.n",
    ),
    "ring_1e9": (["--set", "topology.n=1000000000"], "topology.n"),
    "dim_1e12": (["--set", "problem.dim=1000000000000"], "problem.dim"),
    "samples_1e9": (
        ["--set", "problem={name: logistic, samples_per_node: 1000000000}"],
        "problem.samples_per_node",
    ),
}


@pytest.mark.parametrize("probe", sorted(PROBES))
def test_validate_refuses_quickly_without_allocating(probe: str, capsys) -> None:
    args, field = PROBES[probe]
    err, seconds, grown = refused(["validate", QUICK, *args], capsys)
    assert err.startswith(f"error: {field}: this run ("), err
    assert "would need about" in err and "more than the memory budget of" in err
    assert "refused before anything is built" in err
    assert "Estimate: graph" in err and "Fix: use " in err
    assert "or set engine.memory_budget_gb" in err
    assert seconds < 3.0, seconds
    assert grown < 100, grown


def test_each_probe_names_its_own_fix(capsys) -> None:
    err, _, _ = refused(["validate", QUICK, *PROBES["complete_200k"][0]], capsys)
    assert "200,000 nodes, 39,999,800,000 directed edges" in err
    assert "a sparser topology than 'complete' (ring, torus" in err
    assert "every worker holds the graph" in err
    err, _, _ = refused(["validate", QUICK, *PROBES["dim_1e12"][0]], capsys)
    assert "16 nodes x 1,000,000,000,000 parameters x 3 tensors (dsgd) x 4 B" in err
    assert "a smaller problem.dim" in err and "engine.kind: ray" in err
    raw = "problem={name: logistic, samples_per_node: 10000000, data: materialize}"
    err, _, _ = refused(["validate", QUICK, "--set", raw], capsys)
    assert err.startswith("error: problem.samples_per_node:")
    assert "problem.data: regenerate" in err  # the problem's own way out
    err, _, _ = refused(["validate", QUICK, *PROBES["samples_1e9"][0]], capsys)
    assert "problem.data: regenerate" not in err  # already regenerating: one node is too big


@pytest.mark.parametrize(("name", "n"), [("complete", 200000), ("ring", 10**9)])
def test_topology_command_refuses_too(name: str, n: int, capsys) -> None:
    err, seconds, grown = refused(["topology", name, "--n", str(n)], capsys)
    assert err.startswith(f"error: topology.n: the topology {name!r} would need about")
    assert "directed edges" in err and "Fix: use fewer nodes (topology.n)" in err
    assert seconds < 3.0 and grown < 100, (seconds, grown)


def test_topology_command_honours_the_experiment_budget(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "x.yaml"
    cfg.write_text(Path(QUICK).read_text() + "engine: {memory_budget_gb: 0.01}\n")
    err, _, _ = refused(["topology", str(cfg)], capsys)
    assert "engine.memory_budget_gb = 0.01" in err


def test_run_refuses_and_leaves_nothing_behind(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    args, _ = PROBES["complete_200k"]
    err, seconds, grown = refused(["run", QUICK, *args, "--out", str(out), "--quiet"], capsys)
    assert "topology.n:" in err and seconds < 3.0 and grown < 100
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_explicit_budget_is_the_limit() -> None:
    raw = experiment(topology={"name": "ring", "n": 200_000}, engine={"memory_budget_gb": 0.1})
    with pytest.raises(ConfigError) as info:
        compile_plan(validate(raw))
    msg = str(info.value)
    assert msg.startswith("topology.n: this run (dsgd, quadratic, 'ring')")
    assert "(engine.memory_budget_gb = 0.1)" in msg
    raw["engine"]["memory_budget_gb"] = 0.001
    with pytest.raises(ConfigError) as info:
        compile_plan(validate(raw | {"topology": {"name": "ring", "n": 8}}))
    assert str(info.value).startswith("engine.memory_budget_gb: this run")
    assert "a run needs at least 64 MiB" in str(info.value)


def test_budget_field_is_validated() -> None:
    for bad in (0, -1, ".nan", ".inf", 2.0**40):
        with pytest.raises(ConfigError) as info:
            from fedopt.config import apply_overrides

            validate(apply_overrides(experiment(), [f"engine.memory_budget_gb={bad}"]))
        assert "engine.memory_budget_gb:" in str(info.value)


def test_default_budget_is_a_share_of_available_memory() -> None:
    avail = budget.available_memory()
    assert avail is not None and avail > 0
    limit = budget.host_limit(None)
    assert limit is not None
    assert abs(limit.bytes - budget.DEFAULT_FRACTION * avail) < 0.2 * avail  # memory moves
    assert "80% of the" in limit.how and "available now" in limit.how
    assert budget.host_limit(2.0).bytes == 2 << 30


def test_plug_in_graphs_are_checked_once_built(tmp_path: Path) -> None:
    plug = tmp_path / "dense.py"
    plug.write_text(
        "import networkx as nx\n\ndef dense(n, *, seed):\n    return nx.complete_graph(n)\n"
    )
    raw = experiment(
        topology={"name": f"{plug}:dense", "n": 400}, engine={"memory_budget_gb": 0.08}
    )
    before = budget.graph_size(validate(raw).topology, tmp_path)
    assert not before.known and before.edges == 0  # unknown until the plug-in has run
    with pytest.raises(ConfigError) as info:
        compile_plan(validate(raw), base_dir=tmp_path)
    assert "159,600 directed edges" in str(info.value) and "as built" in str(info.value)


def test_graph_files_are_bounded_by_their_content(tmp_path: Path) -> None:
    path = tmp_path / "big.edgelist"
    g = nx.path_graph(30_000)
    path.write_text("".join(f"{u} {v}\n" for u, v in g.edges()))
    raw = experiment(topology={"name": str(path)}, engine={"memory_budget_gb": 0.07})
    size = budget.graph_size(validate(raw).topology, tmp_path)
    assert size.n is None and 29_999 <= size.edges // 2 <= 30_001
    assert "at most one edge per line" in size.how
    with pytest.raises(ConfigError) as info:
        compile_plan(validate(raw))
    assert "big.edgelist: at most one edge per line" in str(info.value)


def test_per_generator_bounds_hold() -> None:
    from fedopt.topology import TopologyConfig, build_topology

    cases = [
        ("ring", 50, {}),
        ("complete", 20, {}),
        ("torus", 36, {}),
        ("hypercube", 32, {}),
        ("erdos_renyi", 60, {}),
        ("random_regular", 40, {"degree": 6}),
        ("small_world", 40, {"k": 6}),
        ("barabasi_albert", 40, {"m": 3}),
        ("exponential", 40, {}),
        ("barbell", 20, {}),
        ("one_peer_exponential", 40, {}),
        ("random_matching", 30, {}),
        ("random_matching", 30, {"base": "ring"}),
        ("random_geometric_sequence", 30, {"count": 3}),
    ]
    for name, n, params in cases:
        cfg = TopologyConfig(name=name, n=n, params=params)
        bound = budget.graph_size(cfg, None)
        built = budget.built_size(build_topology(cfg, seed=0))
        assert bound.known and bound.edges >= built.edges, (name, bound, built)
        assert bound.graph_edges >= built.graph_edges, (name, bound, built)


def test_ray_actors_each_hold_their_share() -> None:
    raw = experiment(
        topology={"name": "star", "n": 1001},
        algorithm={"name": "fedavg"},
        problem={"name": "logistic", "dim": 10**4, "data": "materialize"},
        engine={"kind": "ray", "actors": 4},
    )
    est = budget.estimate(validate(raw))
    state = next(p for p in est.parts if p.name == "node state")
    assert state.bytes == 251 * (10**4) * 4 * 4 and "per Ray actor: 251 of 1,001" in est.note
    # the driver averages every reported model: with every node reporting, it dominates
    raw.update(topology={"name": "ring", "n": 1000}, algorithm={"name": "dsgd"})
    raw["problem"] = {"name": "quadratic", "dim": 10**5}
    est = budget.estimate(validate(raw))
    assert est.note == "the Ray driver" and [p.name for p in est.parts] == ["graph", "evaluation"]
    raw["engine"] = {"kind": "ray"}  # automatic actor count: only the graph is known
    est = budget.estimate(validate(raw))
    assert [p.name for p in est.parts] == ["graph"] and "automatic actor count" in est.note


def test_algorithms_declare_their_state() -> None:
    from fedopt.algorithms import ALGORITHMS

    declared = {name: ALGORITHMS.get(name).node_tensors(None, 10) for name in ALGORITHMS}
    assert declared["dsgd"] == 3 and declared["adom_plus"] >= 7 and declared["msda"] >= 3
    assert declared["monna"] >= 2 + 10  # momentum, model, and n received vectors
    assert ALGORITHMS.get("dadao").state_itemsize == 8  # float64 event state
    assert all(v >= 1 for v in declared.values())


def test_meter_counters_never_wrap() -> None:
    m = Meter(2)
    edges = torch.tensor([0, 1])
    m.record(edges, 2**61, "model")
    with pytest.raises(EngineError, match="past 2\\*\\*63 - 1"):
        m.record(edges, 2**61, "model")
    assert m.totals.bytes == 2**62 and int(m.edge_bytes.max()) == 2**61  # unchanged


def test_runs_whose_bytes_cannot_fit_int64_are_refused() -> None:
    raw = experiment(
        problem={"name": "quadratic", "dim": 2**40},
        stop={"rounds": 2**31 - 1},
        network={"header_bytes": 32},
    )
    with pytest.raises(ConfigError) as info:
        budget.check_counters(validate(raw))
    assert str(info.value).startswith("stop.rounds: 2147483647 x messages of")


@pytest.mark.slow
def test_the_estimate_bounds_a_real_run(tmp_path: Path) -> None:
    """A run's peak RSS growth stays below its estimate (in a fresh process)."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import resource, sys\n"
        "from helpers import experiment\n"
        "from fedopt.config import validate\n"
        "from fedopt.engine import budget\n"
        "from fedopt.run import run_experiment\n"
        "raw = experiment(topology={'name': 'ring', 'n': 20000},"
        " problem={'name': 'quadratic', 'dim': 200}, stop={'rounds': 3})\n"
        "cfg = validate(raw)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
        "run_experiment(cfg, out_dir=__import__('pathlib').Path(sys.argv[1]), progress=False)\n"
        "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before\n"
        "print(grown, budget.estimate(cfg).total)\n"
    )
    env = {"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    grown, estimate = map(int, out.stdout.split()[-2:])
    assert 0 < grown <= estimate, (grown, estimate)

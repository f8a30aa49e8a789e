"""User plug-ins and graph files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from fedopt.errors import ConfigError
from fedopt.topology import TopologyConfig, build_topology

REPO = Path(__file__).resolve().parents[2]


def build(name, n=None, base_dir=None, seed=0, **params):
    return build_topology(
        TopologyConfig(name=name, n=n, params=params), seed=seed, base_dir=base_dir
    )


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


# ---------------------------------------------------------------------------- plug-ins


def test_plugin_by_path_and_by_registered_name(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    by_path = build("topologies/ring_of_cliques.py:ring_of_cliques", n=12, clique_size=4)
    by_name = build("ring_of_cliques", n=12, clique_size=4)
    assert np.array_equal(by_path.edges, by_name.edges)
    assert nx.is_connected(by_name.graph)
    # from another folder, the repository's topologies/ is searched too
    monkeypatch.chdir(tmp_path)
    again = build("ring_of_cliques.py:ring_of_cliques", n=12, clique_size=4)
    assert np.array_equal(again.edges, by_name.edges)


def test_two_datacenters_link_attributes():
    plan = build("two_datacenters", n=12, links=2, latency_s=0.05)
    lat = plan.edge_attrs["latency_s"]
    bw = plan.edge_attrs["bandwidth_Bps"]
    cross = (plan.edges[:, 0] < 6) != (plan.edges[:, 1] < 6)
    assert cross.sum() == 4  # two links, both directions
    assert np.all(lat[cross] == 0.05) and np.all(np.isnan(lat[~cross]))
    assert np.all(bw[cross] == 1.25e8)
    idx = plan.edge_index(plan.edges[cross, 1], plan.edges[cross, 0])
    assert np.all(lat[idx] == 0.05)


def test_plugin_relative_to_base_dir(tmp_path):
    write(
        tmp_path,
        "gen.py",
        """
        import networkx as nx
        def wheel(n, *, seed, spokes=True):
            return nx.wheel_graph(n)
        def helper():
            pass
    """,
    )
    plan = build("gen.py:wheel", n=7, base_dir=tmp_path)
    assert plan.graph.number_of_edges() == 12
    with pytest.raises(ConfigError, match=r"topology\.name") as err:
        build("gen.py:whee", n=7, base_dir=tmp_path)
    msg = str(err.value)
    assert "no function 'whee'" in msg and "helper" in msg and "wheel" in msg
    with pytest.raises(ConfigError, match=r"topology\.params\.hub") as err:
        build("gen.py:wheel", n=7, base_dir=tmp_path, hub=1)
    assert "spokes" in str(err.value)


def test_plugin_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"topology\.name") as err:
        build("missing.py:f", n=4, base_dir=tmp_path)
    assert "not found" in str(err.value) and str(tmp_path) in str(err.value)
    write(tmp_path, "broken.py", "import numpy\nraise RuntimeError('kaboom here')\n")
    with pytest.raises(ConfigError, match=r"topology\.name") as err:
        build("broken.py:f", n=4, base_dir=tmp_path)
    assert "kaboom here" in str(err.value) and "RuntimeError" in str(err.value)
    write(
        tmp_path,
        "bad.py",
        """
        import networkx as nx
        def not_graph(n, *, seed):
            return [(0, 1)]
        def strings(n, *, seed):
            return nx.relabel_nodes(nx.path_graph(n), {i: f"v{i}" for i in range(n)})
        def loops(n, *, seed):
            g = nx.cycle_graph(n)
            g.add_edge(2, 2)
            return g
        def roles(n, *, seed):
            g = nx.cycle_graph(n)
            g.nodes[1]["role"] = "boss"
            return g
        def latency(n, *, seed):
            g = nx.cycle_graph(n)
            g.edges[0, 1]["latency_s"] = -1.0
            return g
        def bandwidth(n, *, seed):
            g = nx.cycle_graph(n)
            g.edges[0, 1]["bandwidth_Bps"] = 0
            return g
        def loss(n, *, seed):
            g = nx.cycle_graph(n)
            g.edges[0, 1]["loss"] = 1.0
            return g
        def wrong_n(n, *, seed):
            return nx.cycle_graph(n + 1)
        def crash(n, *, seed):
            raise KeyError("oops")
    """,
    )
    cases = {
        "not_graph": ("topology.name", "networkx graph"),
        "strings": ("topology.name", "convert_node_labels_to_integers"),
        "loops": ("topology.name", "self loops at nodes 2"),
        "roles": ("topology.name", "unknown role 'boss'"),
        "latency": ("topology.name", "latency_s >= 0"),
        "bandwidth": ("topology.name", "bandwidth_Bps > 0"),
        "loss": ("topology.name", "0 <= loss < 1"),
        "wrong_n": ("topology.n", "has 7 nodes but topology.n is 6"),
        "crash": ("topology.name", "KeyError"),
    }
    for func, (field, phrase) in cases.items():
        with pytest.raises(ConfigError) as err:
            build(f"bad.py:{func}", n=6, base_dir=tmp_path)
        msg = str(err.value)
        assert msg.startswith(field), (func, msg)
        assert phrase in msg, (func, msg)
        assert "bad.py" in msg, (func, msg)
    strings_msg = ""
    try:
        build("bad.py:strings", n=6, base_dir=tmp_path)
    except ConfigError as exc:
        strings_msg = str(exc)
    assert "'v0'" in strings_msg


# -------------------------------------------------------------------------- graph files


def test_campus_edgelist(monkeypatch):
    monkeypatch.chdir(REPO)
    plan = build("topologies/campus.edgelist")
    assert plan.n == 12 and nx.is_connected(plan.graph)
    i = plan.edge_index(np.array([0, 4]), np.array([4, 0]))
    assert np.all(plan.edge_attrs["latency_s"][i] == 0.002)
    j = plan.edge_index(np.array([11]), np.array([8]))
    assert plan.edge_attrs["loss"][j] == pytest.approx(0.02)
    assert np.isnan(plan.edge_attrs["latency_s"][plan.edge_index(np.array([0]), np.array([1]))])


def test_edgelist_with_roles_and_dict_literals(tmp_path):
    write(
        tmp_path,
        "s.edgelist",
        """
        # hub and three clients
        node 0 role=server
        node 1 role=client
        node 2 role=client
        node 3 role=client
        0 1 latency_s=0.01
        0 2 {'bandwidth_Bps': 1000.0}
        0 3
    """,
    )
    plan = build("s.edgelist", base_dir=tmp_path)
    assert plan.roles == ("server", "client", "client", "client")
    assert plan.edge_attrs["latency_s"][plan.edge_index([1], [0])][0] == 0.01
    assert plan.edge_attrs["bandwidth_Bps"][plan.edge_index([0], [2])][0] == 1000.0


def test_csv_with_header_and_txt(tmp_path):
    write(
        tmp_path,
        "g.csv",
        """
        u,v,latency_s,bandwidth_Bps,loss
        0,1,0.1,1e6,
        1,2,0.2,,0.5
        2,0,,,
    """,
    )
    plan = build("g.csv", base_dir=tmp_path)
    lat = plan.edge_attrs["latency_s"]
    assert lat[plan.edge_index([0], [1])][0] == 0.1
    assert np.isnan(lat[plan.edge_index([0], [2])][0])
    assert plan.edge_attrs["loss"][plan.edge_index([2], [1])][0] == 0.5
    write(tmp_path, "g.txt", "0 1\n1 2\n2 3\n3 0\n")
    assert build("g.txt", base_dir=tmp_path).graph.number_of_edges() == 4


def test_adjlist_graphml_gml_npy(tmp_path):
    g = nx.cycle_graph(5)
    g.nodes[0]["role"] = "server"
    for i in range(1, 5):
        g.nodes[i]["role"] = "client"
    g.edges[0, 1]["latency_s"] = 0.25
    g.edges[1, 2]["bandwidth_Bps"] = 5e6
    nx.write_graphml(g, tmp_path / "g.graphml")
    nx.write_gml(g, tmp_path / "g.gml")
    nx.write_adjlist(g, tmp_path / "g.adjlist")
    for file in ("g.graphml", "g.gml"):
        plan = build(file, base_dir=tmp_path)
        assert plan.roles == ("server",) + ("client",) * 4, file
        assert plan.edge_attrs["latency_s"][plan.edge_index([1], [0])][0] == 0.25
        assert plan.edge_attrs["bandwidth_Bps"][plan.edge_index([2], [1])][0] == 5e6
    plan = build("g.adjlist", base_dir=tmp_path)
    assert np.array_equal(plan.edges, build("ring", n=5).edges)
    a = nx.to_numpy_array(nx.path_graph(4))
    np.save(tmp_path / "a.npy", a)
    assert build("a.npy", base_dir=tmp_path).graph.number_of_edges() == 3
    a[0, 1] = a[1, 0] = 2.5
    np.save(tmp_path / "w.npy", a)
    assert build("w.npy", base_dir=tmp_path).graph.edges[0, 1]["weight"] == 2.5


def test_graph_file_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"topology\.name") as err:
        build("nowhere.edgelist", base_dir=tmp_path)
    assert "looked in" in str(err.value)
    write(tmp_path, "typo.edgelist", "0 1 latency=0.1\n")
    with pytest.raises(ConfigError, match=r"topology\.name") as err:
        build("typo.edgelist", base_dir=tmp_path)
    assert "Did you mean 'latency_s'" in str(err.value)
    write(tmp_path, "gap.edgelist", "0 1\n1 3\n")
    with pytest.raises(ConfigError, match=r"topology\.name") as err:
        build("gap.edgelist", base_dir=tmp_path)
    assert "unexpected labels: 3" in str(err.value) and "missing: 2" in str(err.value)
    write(tmp_path, "ok.edgelist", "0 1\n1 2\n")
    with pytest.raises(ConfigError, match=r"topology\.n"):
        build("ok.edgelist", n=4, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"topology\.params"):
        build("ok.edgelist", base_dir=tmp_path, p=1)
    np.save(tmp_path / "asym.npy", np.array([[0, 1], [0, 0]]))
    with pytest.raises(ConfigError, match="not symmetric"):
        build("asym.npy", base_dir=tmp_path)
    np.save(tmp_path / "loop.npy", np.array([[1, 1], [1, 0]]))
    with pytest.raises(ConfigError, match="self loops"):
        build("loop.npy", base_dir=tmp_path)
    write(tmp_path, "lossy.edgelist", "0 1 loss=1.5\n")
    with pytest.raises(ConfigError, match=r"topology\.name") as err:
        build("lossy.edgelist", base_dir=tmp_path)
    assert "lossy.edgelist" in str(err.value) and "0 <= loss < 1" in str(err.value)


def test_string_labels_in_edge_list_are_reported(tmp_path):
    write(tmp_path, "names.txt", "a b\nb c\n")
    with pytest.raises(ConfigError, match=r"topology\.name") as err:
        build("names.txt", base_dir=tmp_path)
    assert "'a'" in str(err.value) and "convert_node_labels_to_integers" in str(err.value)


def test_edge_list_refuses_duplicate_edges_and_self_loops(tmp_path):
    write(
        tmp_path,
        "dup.edgelist",
        "0 1 latency_s=0.1\n1 2\n2 0\n# again, reversed\n1 0 latency_s=0.5\n",
    )
    with pytest.raises(ConfigError) as err:
        build("dup.edgelist", base_dir=tmp_path)
    msg = str(err.value)
    assert "dup.edgelist line 5: edge (1, 0) is already given on line 1" in msg
    assert "keep one line per edge" in msg
    write(tmp_path, "dup.csv", "u,v,loss\n0,1,0.1\n1,2,\n0,1,0.2\n")
    with pytest.raises(
        ConfigError, match=r"dup\.csv line 4: edge \(0, 1\) is already given on line 2"
    ):
        build("dup.csv", base_dir=tmp_path)
    write(tmp_path, "loop.edgelist", "0 1\n1 2\n2 2\n")
    with pytest.raises(ConfigError, match=r"loop\.edgelist line 3: edge \(2, 2\) is a self loop"):
        build("loop.edgelist", base_dir=tmp_path)


def test_graph_file_that_is_empty_binary_or_a_folder(tmp_path):
    write(tmp_path, "empty.edgelist", "# nothing here\n\n")
    with pytest.raises(ConfigError, match=r"empty\.edgelist .* has no edges or nodes"):
        build("empty.edgelist", base_dir=tmp_path)
    (tmp_path / "bin.edgelist").write_bytes(b"0 1\n\xff\xfe\n")
    with pytest.raises(ConfigError, match=r"bin\.edgelist' is not UTF-8 text \(byte 0xff"):
        build("bin.edgelist", base_dir=tmp_path)
    (tmp_path / "folder.edgelist").mkdir()
    with pytest.raises(ConfigError, match=r"folder\.edgelist' is a folder .*, not a file"):
        build("folder.edgelist", base_dir=tmp_path)
    (tmp_path / "plug.py").mkdir()
    with pytest.raises(ConfigError, match=r"plug-in file 'plug\.py' is a folder"):
        build("plug.py:f", n=4, base_dir=tmp_path)

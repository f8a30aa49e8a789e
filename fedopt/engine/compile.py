"""Compile a validated experiment into a :class:`Plan`: every check happens here."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedopt.algorithms.base import ALGORITHMS, Algorithm, split_requirements
from fedopt.config.schema import ExperimentConfig
from fedopt.engine.budget import check_run_memory
from fedopt.engine.plan import Plan
from fedopt.errors import ConfigError
from fedopt.network.faults import check_faults
from fedopt.plugins import load_plugins
from fedopt.problems import PROBLEMS
from fedopt.problems.base import Oracle
from fedopt.problems.capabilities import require
from fedopt.robust.byzantine import check_byzantine
from fedopt.topology import build_topology, check_topology


def resolve_header(config: ExperimentConfig) -> ExperimentConfig:
    """``network.header_bytes: measured`` -> the gRPC overhead measured on loopback."""
    if config.network.header_bytes != "measured":
        return config
    from fedopt.transport.calibrate import measured_header_bytes

    header = measured_header_bytes(config.engine.grpc)
    network = config.network.model_copy(update={"header_bytes": header})
    return config.model_copy(update={"network": network})


def compile_plan(config: ExperimentConfig, base_dir: Path | None = None) -> Plan:
    """Build the topology, check the algorithm's requirements and fix node roles.

    The memory a run needs is estimated before anything is built and again once the
    graph exists (:mod:`fedopt.engine.budget`), so a run that cannot fit is refused
    before any data or node state is allocated.

    Raises
    ------
    ConfigError
        When the run would exceed ``engine.memory_budget_gb``, the problem lacks an
        oracle capability or the topology a property the algorithm ``requires``, the
        roles do not match, a per-node setting has the wrong length, the algorithm's
        :meth:`~fedopt.algorithms.base.Algorithm.check_plan` refuses the experiment,
        the event schedule refuses it (:func:`check_event_schedule`), or the facts only
        the data tell refuse it (:meth:`~fedopt.algorithms.base.Algorithm.plan_facts`).
    """
    config = resolve_header(config)
    algo_name = config.algorithm.name
    algo = ALGORITHMS.get(algo_name)
    req, capabilities = split_requirements(algo_name, algo.requires)
    problem_cls = PROBLEMS.get(config.problem.name)
    require(
        capabilities, f"algorithm {algo_name!r}", config.problem.name, problem_cls, config.problem
    )
    check_gradients(config, algo)
    buf_dim = check_buffers(config, algo, problem_cls)
    check_run_memory(config, base_dir)  # before anything is built: the config's bound
    budget_gb = config.engine.memory_budget_gb
    topo = build_topology(
        config.topology, seed=config.seed, base_dir=base_dir, memory_budget_gb=budget_gb
    )
    check_run_memory(config, base_dir, topo)  # exact graph, before any data or state
    topo = check_topology(
        topo,
        connected="connected" in req,
        doubly_stochastic="doubly_stochastic" in req,
        symmetric="symmetric" in req,
        star="star" in req,
        algorithm=algo_name,
    )
    if config.topology.name == "star" and "server" not in algo.roles:
        # the built-in star names its hub "server" for FedAvg; peer-to-peer algorithms
        # run on the same graph with every node an ordinary peer
        peer = "client" if "client" in algo.roles else algo.roles[0]
        topo = dataclasses.replace(topo, roles=(peer,) * topo.n)
    bad = sorted({r for r in topo.roles if r not in algo.roles})
    if bad:
        first = next(i for i, r in enumerate(topo.roles) if r in bad)
        raise ConfigError(
            f"topology: algorithm {algo_name!r} runs on nodes with roles {list(algo.roles)}, "
            f"but node {first} has role {topo.roles[first]!r}; remove the role attribute "
            "from the graph or pick an algorithm for that role"
        )
    speeds = config.compute.speeds
    if speeds is not None and len(speeds) != topo.n:
        raise ConfigError(
            f"compute.speeds: has {len(speeds)} entries but the topology has n={topo.n} nodes; "
            "give one speed per node"
        )
    roles = np.array(topo.roles)
    holds_data = roles != "server"
    if config.byzantine is not None:  # Byzantine nodes hold no data
        byz = check_byzantine(
            config.byzantine, topo.roles, algo, algo_name, problem_cls, config.problem.name
        )
        holds_data[byz] = False
    data_nodes = np.flatnonzero(holds_data).astype(np.int64)
    servers = np.flatnonzero(roles == "server")
    if algo.schedule == "events":
        check_event_schedule(config)
    if config.faults.any:
        check_faults(
            config.faults,
            topo.n,
            topo.edges,
            topo.edge_attrs.get("drop"),
            config.stop,
            int(servers[0]) if len(servers) else None,
        )
    if len(data_nodes) == 0:
        raise ConfigError("topology: no node holds data (every node is a server)")
    eng = config.engine
    if eng.kind == "ray" and eng.actors is not None and eng.actors > topo.n:
        # found here, before Ray starts, rather than when the actors are placed
        raise ConfigError(
            f"engine.actors: {eng.actors} actors for n={topo.n} nodes; every actor hosts at "
            f"least one node, so use at most {topo.n} (--actors {topo.n}), or "
            "engine.one_node_per_actor: true for one actor per node"
        )
    plan = Plan(
        plugin_sources=load_plugins(config.plugins, base_dir),
        config=config,
        topology=topo,
        data_nodes=data_nodes,
        server_id=int(servers[0]) if len(servers) else None,
        base_dir=base_dir,
        buf_dim=buf_dim,
    )
    algo.check_plan(config.algorithm, plan)
    return compile_facts(plan, algo)


def zeroth_order_algorithms() -> list[str]:
    """Sorted names of the registered algorithms that only query (no gradients)."""
    return sorted(n for n, a in ALGORITHMS.items() if a.zeroth_order)


def check_gradients(config: ExperimentConfig, algo: type[Algorithm]) -> None:
    """Refuse gradients asked of a black-box problem (one without gradients).

    A black box (:meth:`~fedopt.problems.base.Problem.has_gradients` False) accepts only
    :attr:`~fedopt.algorithms.base.Algorithm.zeroth_order` algorithms, and no
    ``eval.grad_norm`` (the norm of a gradient nobody can compute). The reverse pairing,
    a zeroth-order algorithm on a problem without ``noisy_queries``, is the capability
    check's (the algorithm ``requires`` it).
    """
    name, problem = config.algorithm.name, config.problem.name
    if PROBLEMS.get(problem).has_gradients(config.problem):
        return
    if not algo.zeroth_order:
        offer = ", ".join(zeroth_order_algorithms()) or "none registered"
        raise ConfigError(
            f"algorithm.name: algorithm {name!r} uses gradients, but problem {problem!r} is a "
            f"black box (capability 'noisy_queries' only, no gradients); zeroth-order "
            f"algorithms: {offer}. Fix: set algorithm.name to one of them, or pick a problem "
            "with gradients"
        )
    if config.eval.grad_norm:
        raise ConfigError(
            f"eval.grad_norm: true needs gradients, but problem {problem!r} is a black box "
            "(no gradients); set eval.grad_norm: false"
        )


def check_buffers(config: ExperimentConfig, algo: type[Algorithm], problem_cls: Any) -> int:
    """The problem's per-node buffer width, refused for an algorithm that cannot move it.

    Running BatchNorm statistics are per-node state that must travel, average and
    checkpoint with the parameters; an algorithm without ``moves_buffers`` would leave
    them behind silently, so it is refused here (a :class:`ConfigError` naming the
    algorithm, the problem and the fix).
    """
    buf_dim = int(problem_cls.buffer_dim(config.problem))
    if buf_dim and not algo.moves_buffers:
        movers = sorted(n for n in ALGORITHMS if ALGORITHMS.get(n).moves_buffers)
        raise ConfigError(
            f"algorithm.name: algorithm {config.algorithm.name!r} does not move model buffers, "
            f"but problem {config.problem.name!r} keeps BatchNorm running statistics per node "
            f"(problem.batchnorm: running, {buf_dim} floats per node) that must travel, "
            "average and checkpoint with the parameters. Fix: set problem.batchnorm: "
            "batch_stats (every batch normalised with its own statistics), or use an "
            f"algorithm that moves them: {', '.join(movers) or 'none registered'}"
        )
    return buf_dim


def check_event_schedule(config: ExperimentConfig) -> None:
    """What the event schedule refuses (before anything is built).

    The event engines run on the CPU, take no fault schedule and do not restart Ray
    actors; the run needs a stop rule counting time or events.
    """
    name = config.algorithm.name
    stop = config.stop
    if not any(
        v is not None for v in (stop.sim_time_s, stop.events, stop.gradients, stop.communications)
    ):
        raise ConfigError(
            f"stop: the event schedule of {name!r} needs stop.sim_time_s, "
            "stop.events, stop.gradients or stop.communications (stop.rounds counts rounds)"
        )
    if config.faults.any:
        raise ConfigError(
            f"faults: the event schedule of {name!r} does not take a fault schedule "
            "yet; remove the faults section or use a round algorithm"
        )
    eng = config.engine
    if eng.device == "cuda":
        raise ConfigError(
            f"engine.device: the event schedule of {name!r} runs on the CPU (its events "
            "touch a few nodes at a time, level by level, which a GPU does not speed up); "
            "use engine.device: cpu (or auto, which picks the CPU for event runs)"
        )
    if eng.kind == "ray" and eng.gpus_per_actor > 0:
        raise ConfigError(
            f"engine.gpus_per_actor: the event schedule of {name!r} runs on the CPU, "
            f"got {eng.gpus_per_actor:g}; set engine.gpus_per_actor: 0"
        )
    if eng.kind == "ray" and eng.max_restarts > 0:
        raise ConfigError(
            f"engine.max_restarts: the event schedule of {name!r} does not restart dead Ray "
            f"actors, got {eng.max_restarts}; set engine.max_restarts: 0 and resume a "
            "failed run from its checkpoint (output.checkpoint_every, fedopt run --resume)"
        )


def compile_facts(plan: Plan, algo: type[Algorithm]) -> Plan:
    """``plan`` with the algorithm's compile-time facts (:meth:`Algorithm.plan_facts`).

    The oracle of every data node is built at most once, on the CPU, and only when the
    algorithm asks for it (for the worst-case ``mu`` and ``L`` over all nodes, say);
    workers then read ``plan.facts`` instead of building other workers' oracles.
    """
    built: list[Oracle] = []

    def oracle() -> Oracle:
        if not built:
            cfg = plan.config
            count = len(plan.data_nodes)
            built.append(
                PROBLEMS.get(cfg.problem.name).build(
                    cfg.problem,
                    seed=cfg.seed,
                    data_ranks=torch.arange(count),
                    num_data_nodes=count,
                    device=torch.device("cpu"),
                )
            )
        return built[0]

    facts = algo.plan_facts(plan.config.algorithm, plan, oracle)
    return dataclasses.replace(plan, facts=dict(facts)) if facts else plan

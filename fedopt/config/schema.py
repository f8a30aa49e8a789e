"""The experiment file: pydantic models, frozen, unknown keys rejected.

An experiment YAML has these sections (see the README for a tour)::

    name: quickstart
    seed: 0
    topology:  {name: ring, n: 16, weights: metropolis}
    algorithm: {name: dsgd, lr: 0.1, local_steps: 1}       # validated by the algorithm
    problem:   {name: quadratic, dim: 10}                   # validated by the problem
    network:   {latency_s: 0.001, bandwidth_Bps: 1.25e8, loss: 0.0}
    compute:   {step_time_s: 0.01}
    stop:      {rounds: 200}
    eval:      {every: 10}
    output:    {dir: runs/quickstart}
    engine:    {kind: local}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SerializeAsAny, field_validator, model_validator

from fedopt.algorithms.base import ALGORITHMS, AlgorithmConfig
from fedopt.fields import COUNT_MAX, EVENTS_MAX, MEMORY_BUDGET_MAX_GB, Section
from fedopt.network.compute_time import ComputeConfig
from fedopt.network.faults import FaultsConfig
from fedopt.network.link import NetworkConfig
from fedopt.problems import PROBLEMS
from fedopt.problems.base import ProblemConfig
from fedopt.rng import SEED_MAX, check_seed
from fedopt.robust.byzantine import ByzantineConfig
from fedopt.topology.base import TopologyConfig
from fedopt.transport.config import GrpcConfig


class StopConfig(Section):
    """When a run ends: the first rule that holds (``rounds`` or ``sim_time_s`` is required)."""

    rounds: int | None = Field(100, ge=1, le=COUNT_MAX, description="maximum number of rounds")
    sim_time_s: float | None = Field(None, gt=0, description="stop once simulated time reaches")
    target_loss: float | None = Field(None, description="stop once the evaluated loss is below")
    events: int | None = Field(
        None, ge=1, le=EVENTS_MAX, description="event schedule: stop after this many"
    )
    gradients: int | None = Field(
        None, ge=1, le=EVENTS_MAX, description="event schedule: gradient events"
    )
    communications: int | None = Field(
        None, ge=1, le=EVENTS_MAX, description="event schedule: gossip events"
    )
    target_distance: float | None = Field(
        None, gt=0, description="stop once mean_i ||x_i - x*||^2 / its start value is below"
    )

    @model_validator(mode="after")
    def _bounded(self) -> StopConfig:
        if self.rounds is None and self.sim_time_s is None:
            raise ValueError(
                "a run needs an upper bound: set stop.rounds or stop.sim_time_s "
                "(target_loss alone could run forever)"
            )
        return self


class EvalConfig(Section):
    """Evaluation cadence (rounds 0 and the last round are always evaluated)."""

    every: int = Field(
        1,
        ge=1,
        le=COUNT_MAX,
        description="evaluate every this many rounds (event schedule: event blocks)",
    )
    every_time_s: float | None = Field(
        None, gt=0, description="event schedule: also evaluate at every multiple of this time"
    )
    grad_norm: bool = Field(
        False,
        description="also record grad_norm_sq = ||sum_i p_i grad f_i(x_bar)||^2 (full gradients)",
    )


class OutputConfig(Section):
    """Where the run directory goes."""

    dir: str | None = Field(None, description="run directory (default runs/<name>)")
    overwrite: bool = Field(False, description="replace an existing run directory")
    save_params_max: int = Field(
        10_000_000, ge=0, description="save all final node params when n*dim is at most this"
    )
    checkpoint_every: int | None = Field(
        None,
        ge=1,
        le=COUNT_MAX,
        description="write a resumable checkpoint every this many rounds (event blocks)",
    )


class EngineConfig(Section):
    """Execution engine and its resources.

    ``local`` runs every node in this process. ``ray`` runs workers as Ray actors, each
    hosting a shard of nodes as node-batched tensors; results are identical.

    ``reduce_block`` is part of the experiment's arithmetic: every canonical sum
    (:mod:`fedopt.engine.reduce`: a server's weighted aggregate, the average model
    ``x_bar`` of the metrics) adds its rows in blocks of that many positions, so changing
    it may change the last bits of the results (never the placement: local and Ray agree
    for any value). ``chunk_size`` only sets how many nodes hot loops process together;
    results do not depend on it. Until both existed, ``chunk_size`` also set the reduction
    block; the default of both (1024) keeps earlier results.
    """

    kind: Literal["local", "ray"] = Field("local", description="execution engine")
    threads: int | None = Field(
        None, ge=1, le=65536, description="torch threads (default: usable cores)"
    )
    chunk_size: int = Field(
        1024,
        ge=1,
        le=COUNT_MAX,
        description="nodes per cache-sized chunk in hot loops (performance only, same results)",
    )
    reduce_block: int = Field(
        1024,
        ge=1,
        le=COUNT_MAX,
        description="rows per block of every canonical sum (defines the bits of the results)",
    )
    device: Literal["cpu", "cuda", "auto"] = Field("cpu", description="where node tensors live")
    event_block: int = Field(
        1024, ge=1, le=1 << 24, description="event schedule: events drawn and applied per block"
    )
    actors: int | None = Field(
        None, ge=1, le=COUNT_MAX, description="ray: number of actors (default: auto)"
    )
    nodes_per_actor: int | None = Field(
        None, ge=1, le=COUNT_MAX, description="ray: nodes per actor"
    )
    one_node_per_actor: bool = Field(False, description="ray: one actor per node (slow, realism)")
    cpus_per_actor: float | None = Field(
        None, gt=0, description="ray: CPUs reserved per actor (default: 1, or a fair share)"
    )
    gpus_per_actor: float = Field(0.0, ge=0, description="ray: GPU share per actor")
    placement: Literal["contiguous", "partition"] = Field(
        "contiguous", description="ray: node ids in order, or a min-edge-cut graph partition"
    )
    pin_server: bool = Field(True, description="ray: the server gets an actor of its own")
    address: str | None = Field(
        None, description="ray: None starts a local Ray, 'auto' or host:port joins a cluster"
    )
    timeout_s: float = Field(600.0, gt=0, description="ray: longest wait for any worker")
    max_restarts: int = Field(
        0,
        ge=0,
        le=COUNT_MAX,
        description="ray: restart dead actors from the last checkpoint this often",
    )
    transport: Literal["ray", "grpc"] = Field(
        "ray",
        description="ray: how payloads cross workers: Ray's object store, or gRPC streams "
        "(fedopt.transport)",
    )
    grpc: GrpcConfig = Field(default_factory=GrpcConfig, description="transport: grpc settings")
    memory_budget_gb: float | None = Field(
        None,
        gt=0,
        le=MEMORY_BUDGET_MAX_GB,
        description="memory a run may use (GiB), checked before anything is built: the "
        "local process, or each Ray actor; default: 80% of the memory available now",
    )

    @model_validator(mode="after")
    def _one_sizing(self) -> EngineConfig:
        chosen = [k for k in ("actors", "nodes_per_actor") if getattr(self, k) is not None]
        if self.one_node_per_actor:
            chosen.append("one_node_per_actor")
        if len(chosen) > 1:
            raise ValueError(
                f"engine: {' and '.join(chosen)} both size the actors; set only one of them"
            )
        if self.transport == "grpc" and self.kind != "ray":
            raise ValueError(
                f"engine.transport: 'grpc' moves payloads between Ray workers, but "
                f"engine.kind is {self.kind!r} (one process: nothing crosses workers); set "
                "engine.kind: ray, or drop engine.transport"
            )
        return self


class ExperimentConfig(Section):
    """One experiment: every section validated before anything runs."""

    name: str = Field("experiment", min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    seed: int = Field(
        0,
        ge=0,
        description=f"root seed in [0, 2**63 - 1 = {SEED_MAX}]; every random "
        "number derives from it",
    )
    plugins: list[str] = Field(
        default_factory=list, description="Python files registering extra algorithms/problems"
    )
    topology: TopologyConfig = Field(default_factory=TopologyConfig)
    algorithm: SerializeAsAny[AlgorithmConfig]
    problem: SerializeAsAny[ProblemConfig]
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    stop: StopConfig = Field(default_factory=StopConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    faults: FaultsConfig = Field(default_factory=FaultsConfig)
    byzantine: ByzantineConfig | None = None

    @field_validator("seed", mode="before")
    @classmethod
    def _seed(cls, v: Any) -> Any:
        # before the int64 check of every integer, for the seed's own message
        return check_seed(v, "") if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("algorithm", mode="before")
    @classmethod
    def _algorithm(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return ALGORITHMS.get(v.get("name", "")).Config.model_validate(v)
        return v

    @field_validator("problem", mode="before")
    @classmethod
    def _problem(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return PROBLEMS.get(v.get("name", "")).Config.model_validate(v)
        return v

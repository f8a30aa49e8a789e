"""The algorithm seam: hyperparameters, requirements and node-batched round steps.

An algorithm is one module holding

* a pydantic ``Config`` (subclass of :class:`AlgorithmConfig`) with typed, bounded
  hyperparameters and the paper's defaults;
* ``requires``: what the compiler must check: on the topology (``connected``,
  ``doubly_stochastic``, ``symmetric``, ``star``) and on the problem, the oracle
  capabilities the algorithm calls (:class:`~fedopt.problems.capabilities.Capability`:
  ``conjugate_gradients``, ``labels``, ``noisy_queries``, ``per_sample_gradients``,
  ``model``);
* ``init_state`` and ``round``, written against a :class:`WorkerContext`: the
  oracle of the hosted data nodes and the :class:`~fedopt.engine.comm.Comm` through
  which every message goes (and is metered). Algorithms never see YAML, the engine,
  Ray or the wall clock.

State is a dict of tensors whose leading dimension is the worker's hosted nodes (or
a single row for the server's model), so an algorithm works the same whether its
worker hosts all nodes (local engine) or a shard (Ray engine).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch

from fedopt.fields import Section
from fedopt.problems.capabilities import Capability
from fedopt.registry import Registry

if TYPE_CHECKING:
    from fedopt.engine.comm import Comm
    from fedopt.engine.ledger import Ledger
    from fedopt.events.node_oracle import NodeOracle
    from fedopt.network.compute_time import ComputeTimeModel
    from fedopt.network.counters import Counters
    from fedopt.problems.base import Oracle

ALGORITHMS: Registry[type[Algorithm]] = Registry("algorithm", field="algorithm.name")

State = dict[str, torch.Tensor]
Constant = float | int | str
"""A derived constant as written to ``summary.json`` (see :meth:`Algorithm.derived_constants`)."""

TOPOLOGY_REQUIREMENTS = frozenset({"connected", "doubly_stochastic", "symmetric", "star"})
"""The topology requirements an algorithm may name in ``requires``."""


def split_requirements(
    name: str, requires: frozenset[str]
) -> tuple[frozenset[str], frozenset[Capability]]:
    """``requires`` split into topology requirements and oracle capabilities.

    A capability may be given as a :class:`Capability` or its name; anything else is a
    programming error of the algorithm (``TypeError`` naming it and the valid entries).
    """
    topology, capabilities = set(), set()
    for entry in requires:
        if isinstance(entry, Capability) or entry in Capability.__members__.values():
            capabilities.add(Capability(entry))
        elif entry in TOPOLOGY_REQUIREMENTS:
            topology.add(entry)
        else:
            valid = sorted(TOPOLOGY_REQUIREMENTS) + [c.value for c in Capability]
            raise TypeError(
                f"algorithm {name!r}: requires names {entry!r}, which is neither a topology "
                f"requirement nor a capability; use one of {', '.join(valid)}"
            )
    return frozenset(topology), frozenset(capabilities)


def plain_constants(values: Mapping[str, Any]) -> dict[str, Constant]:
    """``values`` as JSON-ready constants: numpy and torch scalars become Python numbers.

    ``None`` values (a constant that does not apply) are left out; booleans are kept as
    such; infinite or NaN floats and anything else that is not a number are written as
    their ``str`` (``"inf"``), so the file stays valid JSON.
    """
    out: dict[str, Constant] = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, (torch.Tensor, np.generic)):
            value = value.item()
        if not isinstance(value, (bool, int, float, str)) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            value = str(value)
        out[str(key)] = value
    return out


class AlgorithmConfig(Section):
    """Base of every algorithm's hyperparameter model (frozen, closed, finite: see
    :class:`~fedopt.fields.Section`)."""

    name: str


@dataclass
class WorkerContext:
    """What an algorithm may use on a worker.

    Attributes
    ----------
    hosted
        ``[k]`` int64 global ids of the hosted nodes, sorted.
    roles
        Role of each hosted node.
    data_rows
        ``[k]`` int64 row of each hosted node in ``oracle`` (-1 for nodes without data,
        such as the server).
    oracle
        Node-batched oracle of the hosted data nodes.
    comm
        Metered messaging between nodes (the only way data crosses nodes).
    compute
        Compute-time model (simulated seconds per local step).
    seed
        Experiment seed.
    chunk_size
        Nodes processed together in cache-sized chunks by hot loops (``engine.chunk_size``:
        performance only, results must not depend on it).
    num_nodes
        Total number of nodes in the experiment.
    device, dtype
        Where and in what precision the node tensors live.
    server_id
        Global id of the server node (None when the topology has none).
    clients
        ``[c]`` int64 global ids of every client node (all workers), sorted.
    initial_params
        ``rank -> [dim]`` initial parameters of a data rank, whether hosted here or not.
    data_nodes
        ``[h]`` int64 sorted global ids of every node holding data (all workers): the
        honest nodes when there are Byzantine ones.
    byzantine
        The experiment's ``byzantine`` section, or None.
    facts
        The plan's compile-time facts (:meth:`Algorithm.plan_facts`), the same on every
        worker.
    ledgers
        ``name -> ledger`` this worker keeps for the algorithm (:mod:`fedopt.engine.ledger`):
        the algorithm creates and updates them; the driver merges every worker's into the
        records and ``summary.json``; they are checkpointed with the worker.

    Work is charged with ``comm.compute(local_rows, steps, t, kind)``: it is counted by
    kind (``<kind>_total`` in the records) and costs ``compute.cost_s[kind]`` seconds.
    """

    hosted: torch.Tensor
    roles: tuple[str, ...]
    data_rows: torch.Tensor
    oracle: Oracle
    comm: Comm
    compute: ComputeTimeModel
    seed: int
    chunk_size: int
    num_nodes: int
    device: torch.device
    dtype: torch.dtype
    server_id: int | None = None
    clients: torch.Tensor | None = None
    initial_params: Callable[[int], torch.Tensor] | None = None
    data_nodes: torch.Tensor | None = None
    byzantine: Any = None  # the experiment's ByzantineConfig (None without adversaries)
    facts: Mapping[str, Any] = field(default_factory=dict)
    """The plan's compile-time facts (:meth:`Algorithm.plan_facts`)."""
    ledgers: dict[str, Ledger] = field(default_factory=dict)

    def hosted_with_role(self, role: str) -> torch.Tensor:
        """Local indices (into ``hosted``) of the hosted nodes with ``role``."""
        idx = [i for i, r in enumerate(self.roles) if r == role]
        return torch.tensor(idx, dtype=torch.int64)


@dataclass
class EventContext:
    """What an event-schedule algorithm may use on a worker (:meth:`Algorithm.build_events`).

    Node state is kept for every node id (``S [n, slots, dim]``, rows of nodes hosted
    elsewhere being copies the worker receives before it reads them), but data live only
    where they are needed: ``oracle`` holds the hosted nodes (and, with
    :attr:`EventAlgorithm.edge_oracles`, their graph neighbours) and is called with
    global node ids.

    Attributes
    ----------
    hosted
        ``[k]`` int64 sorted global ids of the nodes this worker hosts.
    oracle
        :class:`~fedopt.events.node_oracle.NodeOracle`: the oracle of the nodes this
        worker needs, addressed by global node id.
    num_nodes
        Total number of nodes.
    seed
        Experiment seed.
    facts
        The plan's compile-time facts (:meth:`Algorithm.plan_facts`), the same on every
        worker: worst-case ``mu`` and ``L`` over all nodes, graph constants, ...
    counters
        Work counted by kind on this worker (``<kind>_total`` in the records); charge it
        with :meth:`count` (a restored checkpoint replaces this object, so do not keep
        a reference to it). Gradient events, and ``EventSetup.grads_per_edge_event`` per
        edge event, are counted as ``gradients`` by the worker itself.
    ledgers
        ``name -> ledger`` this worker keeps for the algorithm
        (:mod:`fedopt.engine.ledger`): the algorithm creates and updates them; the driver
        merges every worker's into the records and ``summary.json``; they are part of
        the event checkpoints.
    """

    hosted: torch.Tensor
    oracle: NodeOracle
    num_nodes: int
    seed: int
    facts: Mapping[str, Any]
    counters: Counters
    ledgers: dict[str, Ledger] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._mask = torch.zeros(self.num_nodes, dtype=torch.bool)
        self._mask[self.hosted] = True

    def count(self, kind: str, nodes: torch.Tensor, units: int = 1) -> None:
        """Charge ``units`` of ``kind`` to each of ``nodes`` (global ids) hosted here.

        A node hosted by another worker is charged there: an edge event whose endpoints
        live on two workers runs on both, and each charges its own endpoint, so the
        totals do not depend on the placement.
        """
        k = len(nodes) if len(self.hosted) == self.num_nodes else int(self._mask[nodes].sum())
        self.counters.add(kind, units * k)

    def initial_params(self) -> torch.Tensor:
        """``[n, dim]``: the initial parameters of every node :attr:`oracle` holds, at its
        global id (zero rows for the others, which this worker never reads before their
        host sends them)."""
        return self.oracle.initial_rows()


@dataclass
class EventSetup:
    """What an event-schedule algorithm gives the event driver.

    ``nodes`` has ``apply(grad_nodes, grad_times, edge_i, edge_j, edge_times, grad)``,
    ``x`` and ``S`` (and optionally ``x_rows(ids)``, the iterates of some nodes, which a
    worker hosting a shard reads instead of ``x``); gradient clocks tick at
    ``node_rate`` per node (0: no gradient clock) and gossip clocks at
    ``edge_rate_total`` in total (split evenly over edges); ``grad(nodes, x,
    event_ids)`` gives the local gradients. Methods that compute gradients at edge
    events (dual methods: one per endpoint) declare how many with
    ``grads_per_edge_event`` (and set :attr:`EventAlgorithm.edge_oracles`); the worker
    adds them to the gradient count. ``facts`` are the constants the algorithm derived
    (mu, L, chi_1, rates, step sizes, ...): an event algorithm's
    :meth:`Algorithm.derived_constants`, written to ``summary.json``. ``metrics(ids)``
    (optional) gives ``name -> [len(ids)]`` values of the hosted nodes ``ids`` at every
    evaluation, reduced like :meth:`Algorithm.metrics`.
    """

    nodes: Any
    node_rate: float
    edge_rate_total: float
    grad: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    facts: dict[str, Any] = field(default_factory=dict)
    edge_sets: list[Any] | None = None  # time-varying: undirected edges of each graph
    switch_every: float | None = None  # time-varying: time units between graph switches
    grads_per_edge_event: int = 0  # gradients computed at each edge event (dual methods)
    message: str = "y+z"  # what an edge event sends each way (the meter's message kind)
    edge_weights: Any = None  # static graphs: relative gossip rate of each undirected edge
    metrics: Callable[[torch.Tensor], Mapping[str, torch.Tensor]] | None = None


class Algorithm(ABC):
    """Base class of every algorithm: one instance per worker.

    Subclasses set ``Config``, ``requires`` and ``roles`` (the node roles they
    run on) and implement :meth:`init_state`, :meth:`round` and :meth:`output`.
    ``requires`` mixes topology requirements (strings) and the oracle capabilities the
    algorithm uses (:class:`~fedopt.problems.capabilities.Capability`, a ``str``
    enum), e.g. ``frozenset({"connected", Capability.CONJUGATE_GRADIENTS})``.
    """

    Config: ClassVar[type[AlgorithmConfig]]
    requires: ClassVar[frozenset[str]] = frozenset()
    roles: ClassVar[tuple[str, ...]] = ("gossip",)
    schedule: ClassVar[str] = "rounds"  # or "events" (Poisson clocks; see fedopt.events)
    supports_byzantine: ClassVar[bool] = False  # accepts the experiment's byzantine section
    zeroth_order: ClassVar[bool] = False
    """The algorithm calls no gradient of the oracle, only the counted queries of
    capability ``noisy_queries`` (which it then also ``requires``). Only such algorithms
    accept a black-box problem (:attr:`~fedopt.problems.base.Oracle.has_gradients`
    False); the compiler refuses every other pairing with one."""
    state_tensors: ClassVar[int] = 4
    """Upper bound on the ``[k, dim]`` tensors a worker holds at once for its ``k`` nodes:
    the state plus one round's temporaries (the default covers a model, its mixed copy,
    a gradient and one spare). The memory budget multiplies it by ``n x dim x itemsize``
    (:mod:`fedopt.engine.budget`); algorithms that keep more set it higher."""
    state_itemsize: ClassVar[int | None] = None
    """Bytes per state element; None: the problem's dtype (event schedules use float64)."""
    evaluation: ClassVar[Literal["average_model", "node_models"]] = "average_model"
    """What ``loss``/``accuracy`` measure: the average output model, or the mean over the
    reported models of each one's figures on the global objective (DIMAT); see
    :func:`fedopt.engine.driver.evaluate`."""
    metric_reductions: ClassVar[Mapping[str, str]] = {}
    """How each of :meth:`metrics` is reduced over nodes: mean (default), sum, max, min."""
    moves_buffers: ClassVar[bool] = False
    """Whether the algorithm moves the problem's per-node buffer rows (running BatchNorm
    statistics, ``Problem.buffer_dim > 0``) with its models (:mod:`fedopt.algorithms.buffers`):
    keeps them in its state, loads them into the oracle before local training, sends and
    averages or mixes them with the models, and reports them (:meth:`output_buffers`).
    The compiler refuses a problem with buffers for an algorithm that does not."""

    def __init__(self, config: AlgorithmConfig, ctx: WorkerContext) -> None:
        self.config = config
        self.ctx = ctx

    @abstractmethod
    def init_state(self) -> State:
        """Initial state of the hosted nodes."""

    @abstractmethod
    def round(self, state: State, t: int) -> None:
        """Advance the hosted nodes by synchronous round ``t`` (in place)."""

    @abstractmethod
    def output(self, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        """The models this worker reports: ``(node_ids [m], params [m, dim])``.

        Evaluation uses their average ``x_bar``; consensus distance is the mean squared
        distance of these rows to ``x_bar``.
        """

    def output_buffers(self, state: State) -> torch.Tensor | None:
        """Buffer rows ``[m, buf_dim]`` of the models :meth:`output` reports, in the same
        order (algorithms with :attr:`moves_buffers`; default None: no buffers).

        The worker reports each model as its packed row ``[x_i, b_i]``, so evaluation
        runs every model on its own running statistics and the average model on the
        average statistics.
        """
        return None

    def metrics(self, state: State) -> Mapping[str, torch.Tensor]:
        """Extra record figures: ``name -> [k]`` float values, one per hosted node.

        Called at every evaluation; each is reduced over all nodes of all workers in node
        order (:attr:`metric_reductions`, NaN rows left out) and written to the record
        under its name (and to ``summary.json`` as ``final_<name>``). Default: none.
        """
        return {}

    def derived_constants(self) -> dict[str, Constant]:
        """Constants this algorithm derived at set-up, for ``summary.json``'s ``derived``.

        Whatever the algorithm computed rather than read from its config: mu and L taken
        from the problem, graph constants (chi, spectral bounds), step sizes and momenta
        that follow from them, the robust rule's f and parameters, the learning-rate
        schedule. Computed in ``__init__`` (every worker derives the same values), so the
        driver asks a worker for them and never rebuilds the algorithm. Default: none.
        Event-schedule algorithms return them as :attr:`EventSetup.facts` instead.
        """
        return {}

    @classmethod
    def build_events(cls, config: AlgorithmConfig, plan: object, ctx: EventContext) -> EventSetup:
        """Event-schedule algorithms: node state, clock rates and gradient function.

        Called once on every worker with that worker's :class:`EventContext`.
        """
        raise TypeError(f"{config.name} runs in rounds, not on the event schedule")

    @classmethod
    def check_plan(cls, config: AlgorithmConfig, plan: object) -> None:
        """Compile-time checks beyond ``requires`` (default: none).

        Called at the end of :func:`~fedopt.engine.compile.compile_plan`, before any
        data is built; raise :class:`~fedopt.errors.ConfigError` naming the field, the
        value and the fix.
        """
        return None

    @classmethod
    def node_tensors(cls, config: AlgorithmConfig, n: int) -> int:
        """``[k, dim]`` tensors held at once on a run of ``n`` nodes (memory budget).

        Default :attr:`state_tensors`; algorithms whose temporaries grow with ``n`` (every
        node aggregating ``n - f`` received vectors) override it.
        """
        return cls.state_tensors

    @classmethod
    def output_rows(cls, config: AlgorithmConfig, n: int) -> int:
        """Models :meth:`output` reports on a run of ``n`` nodes (default ``n``); the
        driver averages them at every evaluation (memory budget)."""
        return n

    @classmethod
    def plan_facts(
        cls, config: AlgorithmConfig, plan: object, oracle: Callable[[], Oracle]
    ) -> dict[str, Any]:
        """Facts about the whole experiment, computed once at compile time (default: none).

        Called by the compiler after :meth:`check_plan`; the result becomes
        ``plan.facts`` (and ``WorkerContext.facts``), so a worker hosting a shard reads
        them instead of building the other workers' oracles. ``oracle()`` builds (once,
        on the CPU, only when called) the oracle of every data node, by data rank. Raise
        :class:`~fedopt.errors.ConfigError` for what only the data can tell (a problem
        that is not strongly convex, a singular conjugate), so that ``fedopt validate``
        refuses it. Values must be plain and picklable.
        """
        return {}

    @classmethod
    def analytic_traffic(cls, config: AlgorithmConfig, plan: object, rounds: int) -> int | None:
        """Exact number of messages ``rounds`` rounds send (None if not closed-form).

        Used by the conformance suite to check the meter against a hand count.
        """
        return None


class EventAlgorithm(Algorithm):
    """Base of event-schedule algorithms: they implement :meth:`build_events` only.

    The round methods exist only to satisfy :class:`Algorithm` and refuse to run.
    """

    schedule: ClassVar[str] = "events"
    state_itemsize: ClassVar[int | None] = 8  # event state is float64
    edge_oracles: ClassVar[bool] = False
    """Edge events call the oracle at both endpoints (dual methods, with
    ``EventSetup.grads_per_edge_event``): a worker hosting a shard then also builds the
    oracles of its nodes' neighbours, since it computes every edge event that touches
    one of its nodes. Otherwise it builds its own nodes' oracles only."""

    def init_state(self) -> State:
        raise TypeError(f"{self.config.name} runs on the event schedule, not in rounds")

    def round(self, state: State, t: int) -> None:
        raise TypeError(f"{self.config.name} runs on the event schedule, not in rounds")

    def output(self, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        raise TypeError(f"{self.config.name} runs on the event schedule, not in rounds")

"""A worker hosts a shard of nodes as node-batched tensors and runs their rounds.

The local engine runs one worker hosting every node; a distributed engine runs one per
actor. A worker builds everything it needs (oracle and data, link and compute models,
meter, algorithm state) from the plan and seeds, inside itself.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedopt.algorithms.base import ALGORITHMS, Constant, WorkerContext, plain_constants
from fedopt.engine.comm import Comm, LocalComm
from fedopt.engine.plan import Plan
from fedopt.engine.records import Accounts
from fedopt.network.compute_time import ComputeTimeModel
from fedopt.network.counters import Counters
from fedopt.network.faults import FaultModel
from fedopt.network.link import LinkModel
from fedopt.network.meter import Meter
from fedopt.problems import PROBLEMS
from fedopt.problems.capabilities import Capability


@dataclass
class EvalPartial:
    """What a worker contributes to one evaluation (merged by the driver).

    ``values``/``weights`` are per hosted data node in rank order (``ranks``), so the
    driver can sum them in one canonical order.
    """

    ranks: torch.Tensor
    values: torch.Tensor
    weights: torch.Tensor
    correct: float
    count: float
    test: dict[str, float]
    grads: torch.Tensor | None = None
    """``[k, dim]`` float64 ``p_i grad f_i(x_bar)`` per hosted data node (``eval.grad_norm``)."""


class Worker:
    """Hosts ``hosted`` nodes of ``plan`` and advances them round by round.

    Parameters
    ----------
    plan
        The compiled experiment.
    hosted
        Sorted global ids of the nodes this worker hosts.
    device
        Device of the node tensors.
    comm_factory
        Builds the messaging implementation from ``(topology, link, compute, meter,
        dtype, device, block)``; default :class:`LocalComm` (the worker hosts every node).
    meter_enabled
        False only to measure metering overhead.
    """

    def __init__(
        self,
        plan: Plan,
        hosted: np.ndarray,
        device: torch.device,
        comm_factory: Callable[..., Comm] = LocalComm,
        meter_enabled: bool = True,
    ) -> None:
        cfg = plan.config
        topo = plan.topology
        self.plan = plan
        self.hosted = torch.from_numpy(np.asarray(hosted, dtype=np.int64))
        ranks_all = np.full(topo.n, -1, dtype=np.int64)
        ranks_all[plan.data_nodes] = np.arange(len(plan.data_nodes))
        hosted_ranks = ranks_all[hosted]
        has_data = hosted_ranks >= 0
        data_rows = np.full(len(hosted), -1, dtype=np.int64)
        data_rows[has_data] = np.arange(int(has_data.sum()))
        problem_cls = PROBLEMS.get(cfg.problem.name)
        self.oracle = problem_cls.build(
            cfg.problem,
            seed=cfg.seed,
            data_ranks=torch.from_numpy(hosted_ranks[has_data]),
            num_data_nodes=len(plan.data_nodes),
            device=device,
        )
        self.meter = Meter(len(topo.edges), cfg.network.header_bytes, enabled=meter_enabled)
        self.link = LinkModel(cfg.network, topo.edge_attrs, len(topo.edges), cfg.seed)
        self.compute = ComputeTimeModel(cfg.compute, topo.n, cfg.seed)
        self.comm = comm_factory(
            topo,
            self.link,
            self.compute,
            self.meter,
            self.oracle_dtype(),
            device,
            cfg.engine.reduce_block,
        )
        self.counters = self.comm.counters = Counters()
        self.ctx = WorkerContext(
            hosted=self.hosted,
            roles=tuple(topo.roles[i] for i in hosted),
            data_rows=torch.from_numpy(data_rows),
            oracle=self.oracle,
            comm=self.comm,
            compute=self.compute,
            seed=cfg.seed,
            chunk_size=cfg.engine.chunk_size,
            num_nodes=topo.n,
            device=device,
            dtype=self.oracle_dtype(),
            server_id=plan.server_id,
            clients=torch.from_numpy(plan.clients),
            initial_params=self.initial_params,
            data_nodes=torch.from_numpy(np.asarray(plan.data_nodes, dtype=np.int64)),
            byzantine=cfg.byzantine,
            facts=plan.facts,
        )
        if cfg.faults.any:
            self.comm.faults = FaultModel(
                cfg.faults, topo.n, topo.edges, topo.edge_attrs.get("drop"), cfg.seed
            )
        algo_cls = ALGORITHMS.get(cfg.algorithm.name)
        self.algorithm = algo_cls(cfg.algorithm, self.ctx)
        self.state = self.algorithm.init_state()

    def initial_params(self, rank: int) -> torch.Tensor:
        """Initial parameters ``[dim]`` of data rank ``rank``, hosted here or not.

        A node that is not hosted here gets a one-node oracle built for the purpose (the
        draw is keyed by the rank, so it equals the hosting worker's).
        """
        o = self.oracle
        hit = torch.nonzero(o.data_ranks == rank).flatten()
        if len(hit):
            return o.init_params(hit[:1])[0]
        cfg = self.plan.config
        one = PROBLEMS.get(cfg.problem.name).build(
            cfg.problem,
            seed=cfg.seed,
            data_ranks=torch.tensor([rank]),
            num_data_nodes=len(self.plan.data_nodes),
            device=self.ctx.device,
        )
        return one.init_params(torch.tensor([0]))[0]

    def oracle_dtype(self) -> torch.dtype:
        """Parameter dtype: the problem's declared ``Oracle.dtype``."""
        return self.oracle.dtype

    def round(self, t: int) -> float:
        """Run round ``t``; return the latest clock of the hosted nodes.

        Under the fault schedule, hosted nodes that are down this round keep every row
        of their state (per-node tensors) as it was: they neither compute nor receive.
        """
        self.comm.begin_round(t)
        faults = self.comm.faults
        frozen: dict[str, torch.Tensor] = {}
        rows = None
        if faults is not None and bool(faults.down[self.hosted].any()):
            rows = torch.nonzero(faults.down[self.hosted]).squeeze(1).to(self.ctx.device)
            k = len(self.hosted)
            frozen = {
                name: v[rows].clone()
                for name, v in self.state.items()
                if v.ndim and v.shape[0] == k
            }
        self.algorithm.round(self.state, t)
        for name, v in frozen.items():
            self.state[name][rows] = v
        return float(self.comm.clock.max()) if len(self.comm.clock) else 0.0

    def barrier(self, time: float) -> None:
        """End of a round at ``time``: synchronise every hosted clock to it.

        Under ``faults.partial_receipt`` there is no barrier: each node starts its next
        round when its own work is done and its first ``k`` messages are in, so a
        straggler delays only the nodes that wait for it (clocks stay per node).
        """
        self.comm.round_start = time
        if self.plan.config.faults.partial_receipt is None:
            self.comm.barrier(time)

    def outputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(node ids, params)`` of the models this worker reports.

        With per-node buffers (``plan.buf_dim > 0``) every model is its packed row
        ``[params, buffers]`` (:meth:`Algorithm.output_buffers`), so averages and
        checkpoints of the reported models carry the running statistics.
        """
        ids, params = self.algorithm.output(self.state)
        bd = self.plan.buf_dim
        if not bd:
            return ids, params
        bufs = self.algorithm.output_buffers(self.state)
        if bufs is None or bufs.shape != (len(ids), bd):
            got = None if bufs is None else tuple(bufs.shape)
            raise ValueError(
                f"{self.plan.config.algorithm.name}.output_buffers: expected ({len(ids)}, "
                f"{bd}) buffer rows for the reported models, got {got}"
            )
        if not len(ids):
            return ids, params.new_zeros(0, 0)
        return ids, torch.cat([params, bufs.to(params.dtype)], dim=1)

    def evaluate(self, xbar: torch.Tensor, with_test: bool) -> EvalPartial:
        """Per-node objective values at ``xbar`` and accuracy counts for hosted data nodes.

        With per-node buffers ``xbar`` is a packed row ``[params, buffers]``: the model is
        evaluated on those running statistics (eval mode).
        """
        o = self.oracle
        k = len(o.data_ranks)
        rows = torch.arange(k)
        x = xbar.to(self.oracle_dtype())
        bd = self.plan.buf_dim
        with_b: dict[str, torch.Tensor] = {}
        if bd:
            x, with_b["buffers"] = x[:-bd], x[-bd:]
        values = o.value(x.unsqueeze(0).expand(k, -1), rows, **with_b) if k else torch.zeros(0)
        correct = count = 0.0
        if o.provides(Capability.LABELS) and k:
            sums = o.evaluate(x, **with_b)
            correct, count = sums.get("correct", 0.0), sums.get("count", 0.0)
        test = o.evaluate_test(x, **with_b) if with_test else {}
        grads = None
        if self.plan.config.eval.grad_norm:
            full = o.full_grad(x.unsqueeze(0).expand(k, -1), rows) if k else torch.zeros(0)
            grads = full.to(torch.float64).reshape(k, -1) * o.weights.unsqueeze(1)
        return EvalPartial(
            o.data_ranks, values.to(torch.float64), o.weights, correct, count, dict(test), grads
        )

    def snapshot(self) -> dict[str, Any]:
        """Everything that evolves during a run: state, clocks, exchange counter, meter.

        Oracles draw every random number from counters keyed by (seed, node, step), so
        restoring this snapshot and replaying from the same round reproduces the run
        bit for bit.
        """
        m = self.meter
        return {
            "hosted": self.hosted.clone(),
            "state": {k: v.detach().cpu().clone() for k, v in self.state.items()},
            "clock": self.comm.clock.clone(),
            "exchange": self.comm.exchange,
            "round_start": self.comm.round_start,
            "edge_messages": m.edge_messages.clone(),
            "edge_bytes": m.edge_bytes.clone(),
            "totals": copy.deepcopy(m.totals),
            "counters": self.counters.as_dict(),
            "ledgers": copy.deepcopy(self.ctx.ledgers),
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Load a :meth:`snapshot` taken by a worker hosting the same nodes."""
        if not torch.equal(snap["hosted"], self.hosted):
            raise ValueError("restore: the snapshot was taken by a worker hosting other nodes")
        self.state = {k: v.to(self.ctx.device) for k, v in snap["state"].items()}
        self.comm.clock.copy_(snap["clock"])
        self.comm.exchange = snap["exchange"]
        self.comm.round_start = snap.get("round_start", 0.0)
        self.meter.edge_messages.copy_(snap["edge_messages"])
        self.meter.edge_bytes.copy_(snap["edge_bytes"])
        self.meter.totals = copy.deepcopy(snap["totals"])
        counts = snap.get("counters", {"gradients": getattr(snap["totals"], "gradients", 0)})
        self.counters = self.comm.counters = Counters(counts)
        self.ctx.ledgers.clear()
        self.ctx.ledgers.update(copy.deepcopy(snap.get("ledgers", {})))

    def derived_constants(self) -> dict[str, Constant]:
        """The constants the algorithm derived (``summary.json``'s ``derived``)."""
        return plain_constants(self.algorithm.derived_constants())

    def meter_totals(self):
        """Message totals metered by this worker."""
        return self.meter.totals

    def accounts(self) -> Accounts:
        """Counters, ledgers (copies) and per-node algorithm metrics of this worker."""
        metrics = self.algorithm.metrics(self.state)
        k = len(self.hosted)
        rows: dict[str, torch.Tensor] = {}
        for name, values in metrics.items():
            v = torch.as_tensor(values).detach().to("cpu", torch.float64)
            if v.shape != (k,):
                raise ValueError(
                    f"{self.plan.config.algorithm.name}.metrics: {name!r} has shape "
                    f"{tuple(v.shape)}; give one value per hosted node, shape ({k},)"
                )
            rows[name] = v
        return Accounts(
            first_node=int(self.hosted[0]) if k else -1,
            counters=Counters(self.counters.as_dict()),
            ledgers=copy.deepcopy(self.ctx.ledgers),
            node_ids=self.hosted.clone(),
            metrics=rows,
        )

    def optimum_stats(self):
        """Partial closed-form optimum statistics of the hosted nodes."""
        return self.oracle.optimum_stats()

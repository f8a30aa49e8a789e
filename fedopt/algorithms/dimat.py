"""DIMAT: decentralized iterative merging-and-training (Saadati et al., CVPR 2024).

Every round ``t`` each agent ``i`` (state: its model ``theta_i``, BatchNorm running
statistics included) does, on a graph with doubly stochastic mixing weights ``pi``:

1. TRAIN: ``E`` epochs (``pretrain_epochs`` in round 0: the locally pre-trained initial
   models) of Adam (lr ``1e-3``, a fresh optimiser every round) on minibatches of its own
   data; nothing is sent.
2. COMM: it sends its full state (parameters and buffers) to every neighbour ``j`` with
   ``pi_ji > 0``: ``deg(i)`` messages of ``dim + buf_dim`` elements.
3. MERGE, against the pre-merge models, for ``merge``:

   * ``activation`` (DIMAT): the BN reset of every model ``theta_j``, ``j in N(i) u {i}``,
     on the calibration data ``C_i``; one forward pass of each on ``C_i`` collecting the
     post-ReLU features ``F_j^l`` at every merge point ``l`` of the model's layout; for
     each neighbour and merge point the permutation
     ``sigma_j^l = argmax_sigma sum_u corr(F_i^l, F_j^l)[u, sigma(u)]`` (one linear
     assignment); ``P_j`` permutes ``theta_j``'s output channels of the layers producing
     ``l`` (weights, biases, BN scale, shift, running mean and variance) and the input
     channels of the layers consuming it;
   * ``weight_matching`` (git re-basin): ``P_j`` from the weights alone
     (:func:`fedopt.merge.weight_matching_perms`);
   * ``weight_average`` (WA): ``P_j = I`` and no BN reset;

   then ``theta_i <- sum_j pi_ij P_j(theta_j)`` over every state entry (running
   statistics included; the canonical gossip sum of :class:`~fedopt.engine.comm.
   Neighbourhood`), and a BN reset of the merged model on ``C_i`` (``bn_reset``; default
   on for ``activation`` and ``weight_matching``).

Evaluation (``evaluation = "node_models"``) happens after the round, i.e. right after
merging: the test accuracy of every agent's own merged model on the full test set,
averaged over agents (the paper's curve), with its minimum and maximum and each agent's
accuracy on its own classes (:meth:`DIMAT.metrics`).

Calibration data ``C_i`` (:mod:`fedopt.merge.calibration`): ``local`` (default) is agent
``i``'s own training data (strictly decentralised); ``global`` is the whole training set,
as the reference code does (spec pitfall 1), which gives every agent all the data and
needs the local engine.

Deviations from the reference, on purpose: minibatches are drawn with replacement by the
problem (an epoch is ``ceil(max_i m_i / batch_size)`` steps, the same for every agent);
the merge is computed for every agent even on the complete graph (no "FC shortcut",
pitfall 3); BN resets never act in place on models other agents still merge.

The activation merge runs over chunks of ``engine.chunk_size`` receivers, which bounds the
memory of the feature pass; the results do not depend on the chunk size.

Work is counted (and timed by ``compute.cost_s``) as ``gradients`` (local Adam steps),
``bn_reset_passes`` (forward passes of BN resets), ``feature_passes`` (one per model run
on ``C_i``), ``assignments`` (linear assignments) and ``merges`` (one per agent and round).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator

from fedopt.algorithms.base import (
    ALGORITHMS,
    Algorithm,
    AlgorithmConfig,
    Constant,
    State,
    WorkerContext,
)
from fedopt.algorithms.buffers import buffer_dim, initial_buffers, model_payload, pack
from fedopt.errors import ConfigError
from fedopt.fields import COUNT_MAX
from fedopt.merge import activation_perms, permute_groups, weight_matching_perms
from fedopt.merge.calibration import GlobalCalibration, LocalCalibration
from fedopt.network.counters import register_kind
from fedopt.optim import Adam
from fedopt.problems.capabilities import Capability

for _kind in ("bn_reset_passes", "feature_passes", "assignments"):
    register_kind(_kind)

MERGES = ("activation", "weight_average", "weight_matching")


class DIMATConfig(AlgorithmConfig):
    """Hyperparameters of DIMAT and its merge variants (spec section 3.3)."""

    name: Literal["dimat"] = "dimat"
    merge: Literal["activation", "weight_average", "weight_matching"] = Field(
        "activation",
        description="activation (DIMAT), weight_average (WA) or weight_matching (git re-basin)",
    )
    epochs: int = Field(2, le=COUNT_MAX, description="local epochs E between merges")
    pretrain_epochs: int | None = Field(
        None, ge=0, le=COUNT_MAX, description="local epochs before the first merge (default E)"
    )
    lr: float = Field(1e-3, gt=0, description="Adam learning rate (fresh optimiser every round)")
    calibration: Literal["local", "global"] = Field(
        "local",
        description="data of BN resets and features: local (the agent's own, decentralised) "
        "or global (the whole training set, the reference's choice; local engine only)",
    )
    merge_points: list[str] | None = Field(
        None, description="unit groups to align (default every group of the model's layout)"
    )
    feature_samples: int | None = Field(
        None,
        ge=1,
        le=COUNT_MAX,
        description="calibration samples per feature pass (default: the smallest node's "
        "samples for local, the whole training set for global)",
    )
    bn_reset: bool | None = Field(
        None,
        description="BN reset of the merged model on the calibration data (default: on for "
        "activation and weight_matching, off for weight_average)",
    )
    max_sweeps: int = Field(
        100, ge=1, le=COUNT_MAX, description="weight_matching: most coordinate-descent sweeps"
    )

    @field_validator("epochs")
    @classmethod
    def _epochs(cls, value: int) -> int:
        if value <= 0:
            raise ConfigError(
                f"algorithm.epochs: E = {value} local epochs between merges; DIMAT trains "
                "at least one epoch per round, give epochs >= 1 (use pretrain_epochs: 0 to "
                "skip the training before the first merge)"
            )
        return value

    @property
    def resets(self) -> bool:
        """Whether the merged model's BatchNorm statistics are recomputed."""
        return self.bn_reset if self.bn_reset is not None else self.merge != "weight_average"


@ALGORITHMS.register("dimat")
class DIMAT(Algorithm):
    """DIMAT on node-batched models (state ``x [k, dim]``, ``buf [k, buf_dim]``)."""

    Config = DIMATConfig
    requires = frozenset({"doubly_stochastic", Capability.MODEL})
    roles = ("gossip",)
    moves_buffers = True
    evaluation = "node_models"
    metric_reductions: ClassVar[dict[str, str]] = {
        "test_accuracy_min": "min",
        "test_accuracy_max": "max",
        "own_classes_test_accuracy": "mean",
    }
    state_tensors = 8  # x, Adam m and v, a gradient, the received, permuted and merged rows

    def __init__(self, config: DIMATConfig, ctx: WorkerContext) -> None:
        super().__init__(config, ctx)
        self.buf_dim = buffer_dim(ctx.oracle)
        self.layout = ctx.oracle.layout  # type: ignore[attr-defined]
        facts = ctx.facts
        self.steps_per_epoch = int(facts["steps_per_epoch"])
        self.points = list(facts["merge_points"])
        self.resets = config.resets and self.buf_dim > 0
        if config.calibration == "global":
            self.calib: Any = GlobalCalibration(ctx.oracle, config.feature_samples)
        else:
            self.calib = LocalCalibration(ctx.oracle, int(facts["feature_samples"]))
        self.opt = Adam(reset="round")
        self.payload = model_payload(self.layout.dim, self.buf_dim, ctx.dtype)

    # ---------------------------------------------------------------- compile time

    @classmethod
    def check_plan(cls, config: AlgorithmConfig, plan: Any) -> None:
        if config.calibration == "global" and plan.config.engine.kind != "local":
            raise ConfigError(
                "algorithm.calibration: 'global' computes every agent's BN resets and "
                "activation features on the whole training set, which implies that every "
                "agent holds all agents' data (the reference code's shortcut, not a "
                f"decentralised run); engine.kind {plan.config.engine.kind!r} spreads the "
                "data over workers that cannot share it. Use calibration: local (each "
                "agent's own data) or engine.kind: local"
            )

    @classmethod
    def plan_facts(cls, config: AlgorithmConfig, plan: Any, oracle: Any) -> dict[str, Any]:
        cfg: DIMATConfig = config  # type: ignore[assignment]
        o = oracle()
        layout = o.layout
        info = getattr(o, "info", {})
        batch = int(getattr(plan.config.problem, "batch_size", 0))
        largest = int(info.get("max_node_samples", 0))
        smallest = int(info.get("min_node_samples", 0))
        with_point = [g for g, grp in layout.groups.items() if grp.point is not None]
        if cfg.merge == "weight_average":
            if cfg.merge_points is not None:
                raise ConfigError(
                    f"algorithm.merge_points: {cfg.merge_points!r} given with merge: "
                    "weight_average, which aligns nothing; leave merge_points out, or use "
                    "merge: activation or weight_matching"
                )
            points: list[str] = []
        else:
            known = with_point if cfg.merge == "activation" else list(layout.groups)
            points = known if cfg.merge_points is None else list(cfg.merge_points)
            unknown = [p for p in points if p not in known]
            if unknown or not points:
                what = "merge points (unit groups with a capture point)"
                if cfg.merge == "weight_matching":
                    what = "unit groups"
                raise ConfigError(
                    f"algorithm.merge_points: {unknown or points!r} do not match model "
                    f"{getattr(getattr(o, 'model', None), 'name', '?')!r}, whose layout "
                    f"declares the {what}: {', '.join(known) or '(none)'}; list some of "
                    "those, leave merge_points out for all, or use merge: weight_average"
                )
        samples = cfg.feature_samples if cfg.feature_samples is not None else smallest
        if cfg.merge == "activation" and cfg.calibration == "local":
            if smallest < 1:
                raise ConfigError(
                    "algorithm.calibration: 'local' computes features on each agent's own "
                    "data, but some data node has no samples; change problem.partition"
                )
            if samples > smallest:
                raise ConfigError(
                    f"algorithm.feature_samples: {samples} exceeds the smallest node's "
                    f"{smallest} training samples; give at most {smallest}"
                )
        return {
            "steps_per_epoch": max(1, math.ceil(largest / batch)) if batch else 1,
            "feature_samples": int(samples),
            "merge_points": points,
        }

    @classmethod
    def node_tensors(cls, config: AlgorithmConfig, n: int) -> int:
        return cls.state_tensors + 3 * n  # every receiver may get n - 1 models (pairs)

    # ---------------------------------------------------------------- state

    def init_state(self) -> State:
        ctx = self.ctx
        x = ctx.oracle.init_params(ctx.data_rows)
        state = {"x": x.to(device=ctx.device, dtype=ctx.dtype).contiguous()}
        if self.buf_dim:
            state["buf"] = initial_buffers(ctx.oracle, len(x), ctx.dtype, ctx.device)
        return state

    def _epochs(self, t: int) -> int:
        cfg = self.config
        return cfg.epochs if t > 0 or cfg.pretrain_epochs is None else cfg.pretrain_epochs

    def _first_step(self, t: int) -> int:
        if t == 0:
            return 0
        return (self._epochs(0) + (t - 1) * self.config.epochs) * self.steps_per_epoch

    # ---------------------------------------------------------------- round

    def round(self, state: State, t: int) -> None:
        self._train(state, t)
        self._merge(state, t)

    def _train(self, state: State, t: int) -> None:
        """``E`` epochs of a fresh Adam on each agent's own minibatches."""
        ctx, oracle, rows = self.ctx, self.ctx.oracle, self.ctx.data_rows
        steps = self._epochs(t) * self.steps_per_epoch
        if steps == 0:
            return
        x = state["x"]
        if self.buf_dim:
            oracle.set_buffers(rows, state["buf"])  # type: ignore[attr-defined]
        opt_state = self.opt.init(len(x), x.shape[1], x.dtype, x.device)
        first = self._first_step(t)
        for s in range(steps):
            g = oracle.grad(x, rows, first + s)
            x.sub_(self.opt.update(opt_state, g.to(x.dtype), self.config.lr))
        ctx.comm.compute(torch.arange(len(rows)), steps, t)
        if self.buf_dim:
            state["buf"] = oracle.get_buffers(rows).to(ctx.dtype)  # type: ignore[attr-defined]

    def _charge(self, kind: str, units: torch.Tensor, t: int, first: int = 0) -> None:
        """Charge ``units[j]`` of ``kind`` to hosted row ``first + j`` (grouped by value)."""
        units = units.to(torch.int64).cpu()
        local = torch.arange(first, first + len(units))
        for u in torch.unique(units).tolist():
            if u > 0:
                self.ctx.comm.compute(local[units == u], int(u), t, kind)

    def _merge(self, state: State, t: int) -> None:
        cfg, ctx = self.config, self.ctx
        rows, k, d = ctx.data_rows, len(ctx.data_rows), self.layout.dim
        x, buf = state["x"], state.get("buf")
        own = pack(x, buf) if self.buf_dim else x
        nb = ctx.comm.neighbours(own, t, kind="model", payload=self.payload)
        recv = torch.searchsorted(ctx.hosted, nb.dst)
        deg = torch.bincount(recv, minlength=k)
        Xm = nb.rows[:, :d]
        Bm = nb.rows[:, d:] if self.buf_dim else None
        if cfg.merge == "activation":
            own, Xm, Bm = self._align_chunks(x, buf, Xm, Bm, recv, deg, t)
        elif cfg.merge == "weight_matching":
            perms, solved = weight_matching_perms(
                self.layout, x[recv], Xm, self.points, cfg.max_sweeps
            )
            Xm, Bm = permute_groups(self.layout, Xm, Bm, perms)
            self._charge("assignments", deg * solved, t)
        sent = pack(Xm, Bm) if self.buf_dim else Xm
        merged = dataclasses.replace(nb, rows=sent).weighted_sum(own)
        self._charge("merges", torch.ones(k, dtype=torch.int64), t)
        x_new = merged[:, :d].contiguous()
        if self.buf_dim:
            b_new = merged[:, d:].contiguous()
            if self.resets:
                b_new, passes = self.calib.reset(x_new, rows)
                self._charge("bn_reset_passes", passes, t)
            state["buf"] = b_new.to(ctx.dtype)
        state["x"] = x_new

    def _align_chunks(
        self,
        x: torch.Tensor,
        buf: torch.Tensor | None,
        Xm: torch.Tensor,
        Bm: torch.Tensor | None,
        recv: torch.Tensor,
        deg: torch.Tensor,
        t: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:meth:`_align_activations` over chunks of ``engine.chunk_size`` receivers (the
        messages are receiver-sorted), which bounds the memory of the feature pass."""
        k, step = len(x), max(1, self.ctx.chunk_size)
        if k <= step:
            return self._align_activations(x, buf, Xm, Bm, recv, deg, t, 0)
        parts = []
        for a in range(0, k, step):
            e = min(a + step, k)
            m = (recv >= a) & (recv < e)
            parts.append(
                self._align_activations(
                    x[a:e],
                    buf[a:e] if buf is not None else None,
                    Xm[m],
                    Bm[m] if Bm is not None else None,
                    recv[m] - a,
                    deg[a:e],
                    t,
                    a,
                )
            )
        own = torch.cat([p[0] for p in parts])
        B_out = torch.cat([p[2] for p in parts]) if self.buf_dim else None  # type: ignore[misc]
        return own, torch.cat([p[1] for p in parts]), B_out

    def _align_activations(
        self,
        x: torch.Tensor,
        buf: torch.Tensor | None,
        Xm: torch.Tensor,
        Bm: torch.Tensor | None,
        recv: torch.Tensor,
        deg: torch.Tensor,
        t: int,
        first: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """BN-reset and run the own and received models on the receivers' calibration
        data; permute each received model to its receiver's. Receivers are hosted rows
        ``first ..``; ``recv`` indexes them from 0. Returns the own packed rows (BN-reset)
        and the permuted received rows."""
        k = len(x)
        rows = self.ctx.data_rows[first : first + k]
        Xp = torch.cat([x, Xm])
        rows_p = torch.cat([rows, rows[recv]])
        Bp = None
        if self.buf_dim:
            Bp, passes = self.calib.reset(Xp, rows_p)
            Bp = Bp.to(x.dtype)
            per = passes[:k].clone().index_add_(0, recv, passes[k:])
            self._charge("bn_reset_passes", per, t, first)
        feats = self.calib.features(Xp, rows_p, Bp, self.points)
        self._charge("feature_passes", deg + 1, t, first)
        mine = {g: f[:k][recv] for g, f in feats.items()}
        theirs = {g: f[k:] for g, f in feats.items()}
        perms = activation_perms(mine, theirs)
        self._charge("assignments", deg * len(self.points), t, first)
        Bm_new = Bp[k:] if Bp is not None else None
        Xm, Bm_new = permute_groups(self.layout, Xm, Bm_new, perms)
        own = pack(x, Bp[:k]) if Bp is not None else x
        return own, Xm, Bm_new

    # ---------------------------------------------------------------- output

    def output(self, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ctx.hosted, state["x"]

    def output_buffers(self, state: State) -> torch.Tensor | None:
        return state.get("buf")

    def metrics(self, state: State) -> dict[str, torch.Tensor]:
        """Spread of the after-merge test accuracy over agents and each agent's accuracy
        on the test samples of its own classes."""
        ev = self.ctx.oracle.evaluate_nodes(  # type: ignore[attr-defined]
            state["x"], self.ctx.data_rows, state.get("buf")
        )
        out: dict[str, torch.Tensor] = {}
        if "test_accuracy" in ev:
            out["test_accuracy_min"] = ev["test_accuracy"]
            out["test_accuracy_max"] = ev["test_accuracy"]
        if "own_classes_test_accuracy" in ev:
            out["own_classes_test_accuracy"] = ev["own_classes_test_accuracy"]
        return out

    def derived_constants(self) -> dict[str, Constant]:
        cfg = self.config
        return {
            "steps_per_epoch": self.steps_per_epoch,
            "local_steps_per_round": cfg.epochs * self.steps_per_epoch,
            "merge_points": ",".join(self.points) or "(none)",
            "bn_reset_after_merge": self.resets,
        }

    @classmethod
    def analytic_traffic(cls, config: AlgorithmConfig, plan: Any, rounds: int) -> int:
        topo = plan.topology
        total = 0
        for t in range(rounds):
            W = topo.mixing_at(t).tocoo()
            total += int(((W.row != W.col) & (W.data != 0)).sum())
        return total


__all__ = ["DIMAT", "MERGES", "DIMATConfig"]

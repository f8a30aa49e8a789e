"""Ordinary ``torch.nn.Module`` architectures evaluated for many nodes at once.

:class:`BatchedModel` holds one module (the architecture; its own tensors are only a
template) and a :class:`~fedopt.models.layout.ParamLayout`. Every node's parameters are a
row of ``X [k, dim]`` and its floating-point buffers a row of ``B [k, buf_dim]``; inputs are
``[k, b, *input_shape]`` and targets ``[k, b]``. The forward pass is
``torch.func.functional_call`` on views of the rows, vectorised over nodes with
``torch.func.vmap``:

* ``forward``/``loss``/``capture``: one vmapped forward pass;
* ``grad``: the vmapped forward, then one reverse pass of ``sum_i f_i`` (node ``i``'s
  parameters enter only ``f_i``, so the gradient's row ``i`` is ``grad f_i``). Measured on
  the digits MLP at N = 100 this is faster than ``vmap(grad(f_i))``
  (``fedopt.bench.models_digits``), whose per-operation transform overhead dominates at
  this size; ``grad(..., method="func")`` runs the latter, and the two agree. Where an
  architecture has a hand-written kernel that is faster still (the digits MLP:
  :mod:`fedopt.models.kernels`), ``method="auto"`` uses it;
* ``per_sample_grad``: ``vmap`` over nodes of ``vmap`` over samples of ``torch.func.grad``.

BatchNorm: the running statistics are per-node buffers, vmapped over nodes like the
parameters, so a train-mode pass updates each node's own statistics (torch's own kernel,
batched) and normalises each node's batch with its own batch statistics.
``torch.func.replace_all_batch_norm_modules_`` is not needed: it exists for running
statistics shared by the whole vmapped batch. In train mode the methods update ``B`` in
place, as a module in train mode updates its buffers.

Fallback: when ``vmap`` cannot run an operation (no batching rule and no generic
fallback, data-dependent shapes, ``.item()``), ``strategy="auto"`` reruns the call as a
loop over nodes and records the reason in :attr:`BatchedModel.fallbacks`; operations that
``vmap`` ran through its slow per-sample fallback (which it warns about) are recorded in
:attr:`BatchedModel.slow_ops`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from fedopt.errors import ConfigError
from fedopt.models.capture import as_units, hooks
from fedopt.models.kernels import DenseReluKernel
from fedopt.models.layout import ParamLayout, PermGroup

Strategy = Literal["auto", "vmap", "loop"]
Method = Literal["auto", "kernel", "autograd", "func"]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_SLOW_OP = re.compile(r"batching rule for (aten::\w+(?:\.\w+)*)")
_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy ``-log softmax(z)_y``: logits ``[..., C]``, targets ``[...]``."""
    logp = torch.log_softmax(logits, dim=-1)
    return -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def _is_vmap_limit(exc: BaseException) -> bool:
    msg = str(exc)
    return isinstance(exc, RuntimeError) and ("vmap" in msg or "atching rule" in msg)


@contextmanager
def _fallback_warnings(record: list[str]) -> Any:
    """Record the ops that vmap runs through its slow per-sample fallback.

    vmap warns once per such op ("There is a performance drop because we have not yet
    implemented the batching rule for aten::..."); other warnings are re-issued.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                m = _SLOW_OP.search(str(w.message))
                if m:
                    record.append(m.group(1))
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


class BatchedModel:
    """A ``torch.nn.Module`` architecture evaluated on every node's parameter row.

    Parameters
    ----------
    module
        The architecture. Its parameters and buffers fix the layout (registration order)
        and serve as a template (``init_params``'s copies, integer buffers); they are never
        trained.
    groups
        Permutable unit axes (see :func:`~fedopt.models.layout.unit_group`).
    name
        Name for messages (the registry name of built-ins).
    loss_fn
        Per-sample loss ``(logits [..., C], targets [...]) -> [...]``; cross-entropy by
        default.
    strategy
        ``"auto"`` (vmap, loop over nodes where vmap cannot run), ``"vmap"`` or ``"loop"``.
    kernel
        Use a hand-written kernel where the architecture has one
        (:class:`~fedopt.models.kernels.DenseReluKernel` for Dense/ReLU chains with
        cross-entropy), for ``method="auto"``.

    Attributes
    ----------
    layout
        The :class:`ParamLayout` (``dim``, ``buf_dim``, entries, groups).
    bn_layers
        Names of the BatchNorm layers that track running statistics.
    fallbacks
        ``{call: reason}`` for calls that ran as a loop over nodes.
    slow_ops
        ``{call: [ops]}`` that vmap ran through its per-sample fallback.
    kernel
        The hand-written kernel, or None.
    """

    def __init__(
        self,
        module: nn.Module,
        groups: Iterable[PermGroup] = (),
        *,
        name: str | None = None,
        loss_fn: LossFn = cross_entropy,
        strategy: Strategy = "auto",
        kernel: bool = True,
    ) -> None:
        if strategy not in ("auto", "vmap", "loop"):
            raise ConfigError(
                f"model.strategy: unknown strategy {strategy!r}; use 'auto', 'vmap' or 'loop'."
            )
        self.module = module.eval()
        self.name = name or type(module).__name__
        self.layout = ParamLayout.from_module(module, groups)
        self.loss_fn = loss_fn
        self.strategy: Strategy = strategy
        self.bn_layers = [
            n
            for n, m in module.named_modules()
            if isinstance(m, _BN_TYPES) and m.track_running_stats
        ]
        for n in self.bn_layers:
            if module.get_submodule(n).momentum is None:
                raise ConfigError(
                    f"model {self.name!r}: BatchNorm layer {n!r} has momentum=None (a "
                    "cumulative average over every call); per-node running statistics in "
                    "train-mode steps need a fixed momentum. Set momentum (e.g. 0.1) and "
                    "recompute cumulative averages with fedopt.models.reset_bn."
                )
        self._int_buffers = [n for n, b in module.named_buffers() if not b.is_floating_point()]
        for name_, group in self.layout.groups.items():
            if group.point is not None:
                try:
                    module.get_submodule(group.point)
                except AttributeError:
                    raise ConfigError(
                        f"model {self.name!r}: group {name_!r} captures at {group.point!r}, "
                        "which is not a submodule; name a layer whose output holds the units."
                    ) from None
        self.fallbacks: dict[str, str] = {}
        self.slow_ops: dict[str, list[str]] = {}
        self._probed: set[str] = set()
        self._vmapped: dict[tuple, Callable] = {}
        self.kernel = (
            DenseReluKernel.match(module, self.layout)
            if kernel and loss_fn is cross_entropy
            else None
        )

    # ---------------------------------------------------------------- sizes

    @property
    def dim(self) -> int:
        return self.layout.dim

    @property
    def buf_dim(self) -> int:
        return self.layout.buf_dim

    @property
    def has_bn(self) -> bool:
        return bool(self.bn_layers)

    def init_params(
        self, seed: int, ranks: torch.Tensor | Sequence[int], dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Initial parameter rows (see :meth:`ParamLayout.init_params`)."""
        return self.layout.init_params(seed, torch.as_tensor(ranks), dtype)

    def init_buffers(
        self, k: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """Initial buffer rows ``[k, buf_dim]`` (BatchNorm: running mean 0, variance 1)."""
        return self.layout.init_buffers(k, dtype, device)

    # ---------------------------------------------------------------- one node

    def _set_mode(self, train: bool) -> None:
        """Put the template module in train or eval mode (left there: it is only a template)."""
        if self.module.training != train:
            self.module.train(train)

    def _one(
        self,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        x: torch.Tensor,
        train: bool,
        points: dict[str, str],
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """One node's forward: output, its (updated) buffers and captured activations.

        Train mode works on copies of the buffers (BatchNorm updates them in place), and
        integer buffers are fresh zeros per call, so nothing outside is mutated.
        """
        bufs = {n: t.clone() for n, t in buffers.items()} if train and buffers else buffers
        tensors = params
        if bufs or self._int_buffers:
            counts = {
                n: torch.zeros((), dtype=torch.int64, device=x.device) for n in self._int_buffers
            }
            tensors = {**params, **bufs, **counts}
        captured: dict[str, torch.Tensor] = {}
        if not points:
            return functional_call(self.module, tensors, (x,)), bufs, captured
        with hooks(self.module, points, captured):
            out = functional_call(self.module, tensors, (x,))
        return out, bufs, captured

    # ---------------------------------------------------------------- all nodes

    def _views(
        self, X: torch.Tensor, B: torch.Tensor | None, train: bool
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise ValueError(
                f"model {self.name!r}: expected parameter rows [k, {self.dim}], got {list(X.shape)}"
            )
        if not self.layout.buffers:
            return self.layout.unflatten(X), {}
        if B is None:
            raise ValueError(
                f"model {self.name!r} has BatchNorm running statistics "
                f"({', '.join(self.bn_layers)}); "
                f"pass their rows B [k, {self.buf_dim}] (model.init_buffers(k) or reset_bn)"
            )
        if B.shape != (X.shape[0], self.buf_dim):
            raise ValueError(
                f"model {self.name!r}: expected buffer rows [{X.shape[0]}, {self.buf_dim}], "
                f"got {list(B.shape)}"
            )
        return self.layout.unflatten(X), self.layout.unflatten_buffers(B.to(X.dtype))

    def _run_all(
        self,
        P: dict[str, torch.Tensor],
        Bd: dict[str, torch.Tensor],
        inputs: torch.Tensor,
        train: bool,
        points: dict[str, str],
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Forward of every node: ``vmap`` over nodes, or a loop where vmap cannot run."""
        key = f"forward(train={train})"
        cache_key = (train, tuple(points.items()))
        vmapped = self._vmapped.get(cache_key)
        if vmapped is None:

            def fn(p: dict, b: dict, x: torch.Tensor) -> tuple:
                return self._one(p, b, x, train, points)

            vmapped = self._vmapped[cache_key] = vmap(fn, randomness="error")

        def looped() -> tuple:
            k = inputs.shape[0]
            outs = [
                self._one(
                    {n: t[i] for n, t in P.items()},
                    {n: t[i] for n, t in Bd.items()},
                    inputs[i],
                    train,
                    points,
                )
                for i in range(k)
            ]
            stack = lambda ds: {n: torch.stack([d[n] for d in ds]) for n in ds[0]}  # noqa: E731
            return (
                torch.stack([o[0] for o in outs]),
                stack([o[1] for o in outs]) if Bd else {},
                stack([o[2] for o in outs]) if points else {},
            )

        self._set_mode(train)
        return self._dispatch(key, lambda: vmapped(P, Bd, inputs), looped)

    def _dispatch(self, key: str, vmapped: Callable[[], Any], looped: Callable[[], Any]) -> Any:
        if self.strategy == "loop" or key in self.fallbacks:
            return looped()
        if self.strategy == "vmap" or key in self._probed:
            return vmapped()
        slow: list[str] = []
        try:
            with _fallback_warnings(slow):
                result = vmapped()
        except Exception as exc:
            if self.strategy != "auto" or not _is_vmap_limit(exc):
                raise
            result = looped()
            self.fallbacks[key] = str(exc).splitlines()[0]
        if slow:
            self.slow_ops[key] = sorted(set(slow))
        self._probed.add(key)
        return result

    def _prepare(
        self, X: torch.Tensor, inputs: torch.Tensor, B: torch.Tensor | None, train: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        if inputs.shape[0] != X.shape[0]:
            raise ValueError(
                f"model {self.name!r}: inputs hold {inputs.shape[0]} nodes, X holds {X.shape[0]}"
            )
        if inputs.is_floating_point() and inputs.dtype != X.dtype:
            inputs = inputs.to(X.dtype)
        P, Bd = self._views(X, B, train)
        return inputs, P, Bd

    def _write_back(
        self, B: torch.Tensor | None, new: dict[str, torch.Tensor], train: bool
    ) -> None:
        if train and B is not None and new:
            B.copy_(self.layout.flatten_buffers(new).to(B.dtype))

    def _reduce(
        self, out: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None
    ) -> torch.Tensor:
        per = self.loss_fn(out, targets)
        if weights is None:
            return per.mean(dim=1)
        return (per * weights.to(per.dtype)).sum(dim=1)

    # ---------------------------------------------------------------- public API

    def forward(
        self,
        X: torch.Tensor,
        inputs: torch.Tensor,
        B: torch.Tensor | None = None,
        *,
        train: bool = False,
        method: Method = "auto",
        differentiable: bool = False,
    ) -> torch.Tensor:
        """Outputs ``[k, b, ...]`` of every node on its own inputs ``[k, b, ...]``.

        In train mode BatchNorm normalises with each node's batch statistics and the running
        statistics in ``B`` are updated in place. ``method="auto"`` uses the architecture's
        hand-written kernel where it has one; any other value runs the vmapped forward.
        The pass runs without autograd unless ``differentiable`` (then the outputs carry
        the graph back to ``X``, e.g. for an objective's value that callers differentiate).
        """
        inputs, P, Bd = self._prepare(X, inputs, B, train)
        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            if self.kernel is not None and method == "auto":
                return self.kernel.forward(X, inputs)[0]
            out, new, _ = self._run_all(P, Bd, inputs, train, {})
        self._write_back(B, new, train)
        return out

    def loss(
        self,
        X: torch.Tensor,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        B: torch.Tensor | None = None,
        *,
        weights: torch.Tensor | None = None,
        train: bool = False,
        method: Method = "auto",
    ) -> torch.Tensor:
        """Per-node loss ``[k]``: the mean per-sample loss, or ``sum_s weights[i, s] * l_s``."""
        out = self.forward(X, inputs, B, train=train, method=method)
        return self._reduce(out, targets, weights)

    def value_and_grad(
        self,
        X: torch.Tensor,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        B: torch.Tensor | None = None,
        *,
        weights: torch.Tensor | None = None,
        train: bool = False,
        method: Method = "auto",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-node loss ``[k]`` and gradient ``[k, dim]`` (rows of ``X``'s dtype).

        Methods (all give node ``i``'s own gradient in row ``i``):

        * ``"autograd"``: the vmapped forward, then one reverse pass of ``sum_i f_i``;
        * ``"func"``: ``vmap(grad(f_i))`` over nodes;
        * ``"kernel"``: the architecture's hand-written kernel (:attr:`kernel`);
        * ``"auto"`` (default): the kernel where there is one, else ``"autograd"``.
        """
        loss, G = self._grad(X, inputs, targets, B, weights, train, method, True)
        return loss, G  # type: ignore[return-value]

    def _grad(
        self,
        X: torch.Tensor,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        B: torch.Tensor | None,
        weights: torch.Tensor | None,
        train: bool,
        method: str,
        with_loss: bool,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        if method not in ("auto", "kernel", "autograd", "func"):
            raise ConfigError(
                f"model.grad: unknown method {method!r}; use 'auto', 'kernel', 'autograd' "
                "or 'func'."
            )
        if method == "kernel" and self.kernel is None:
            raise ConfigError(
                f"model.grad: model {self.name!r} has no hand-written kernel; use 'auto', "
                "'autograd' or 'func'."
            )
        if method == "func":
            return self._value_and_grad_func(X, inputs, targets, B, weights, train)
        inputs, P, Bd = self._prepare(X, inputs, B, train)
        if self.kernel is not None and method in ("auto", "kernel"):
            if weights is None:
                b = targets.shape[1]
                w = torch.full(targets.shape, 1.0 / b, dtype=X.dtype, device=X.device)
            else:
                w = weights.to(device=X.device, dtype=X.dtype)
            return self.kernel.grad(X, inputs, targets, w, with_loss)
        leaves = {n: t.detach().requires_grad_(True) for n, t in P.items()}
        with torch.enable_grad():
            out, new, _ = self._run_all(leaves, Bd, inputs, train, {})
            f = self._reduce(out, targets, weights)
            grads = torch.autograd.grad(f.sum(), list(leaves.values()), allow_unused=True)
        k = X.shape[0]
        G = torch.cat(
            [
                (g if g is not None else torch.zeros_like(t)).reshape(k, -1)
                for g, t in zip(grads, leaves.values(), strict=True)
            ],
            dim=1,
        )
        self._write_back(B, new, train)
        return f.detach(), G

    def _value_and_grad_func(
        self,
        X: torch.Tensor,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        B: torch.Tensor | None,
        weights: torch.Tensor | None,
        train: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, P, Bd = self._prepare(X, inputs, B, train)
        k = X.shape[0]
        if weights is None:
            w = torch.full(targets.shape, 1.0 / targets.shape[1], dtype=X.dtype, device=X.device)
        else:
            w = weights.to(device=X.device, dtype=X.dtype)

        def f(p: dict, b: dict, x: torch.Tensor, y: torch.Tensor, wi: torch.Tensor) -> tuple:
            out, nb, _ = self._one(p, b, x, train, {})
            val = (self.loss_fn(out, y) * wi).sum()
            return val, (val.detach(), nb)

        def looped() -> tuple:
            res = [
                grad(f, has_aux=True)(
                    {n: t[i] for n, t in P.items()},
                    {n: t[i] for n, t in Bd.items()},
                    inputs[i],
                    targets[i],
                    w[i],
                )
                for i in range(k)
            ]
            g = {n: torch.stack([r[0][n] for r in res]) for n in P}
            nb = {n: torch.stack([r[1][1][n] for r in res]) for n in Bd}
            return g, (torch.stack([r[1][0] for r in res]), nb)

        self._set_mode(train)
        g, (vals, new) = self._dispatch(
            f"grad(train={train})",
            lambda: vmap(grad(f, has_aux=True), randomness="error")(P, Bd, inputs, targets, w),
            looped,
        )
        self._write_back(B, new, train)
        return vals, self.layout.flatten(g)

    def grad(
        self,
        X: torch.Tensor,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        B: torch.Tensor | None = None,
        *,
        weights: torch.Tensor | None = None,
        train: bool = False,
        method: Method = "auto",
    ) -> torch.Tensor:
        """Gradient ``[k, dim]`` of every node's loss (see :meth:`value_and_grad`)."""
        return self._grad(X, inputs, targets, B, weights, train, method, False)[1]

    def per_sample_grad(
        self,
        X: torch.Tensor,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        B: torch.Tensor | None = None,
        *,
        train: bool = False,
    ) -> torch.Tensor:
        """Gradient of every sample's loss ``[k, b, dim]``: vmap(nodes) of vmap(samples) of grad.

        BatchNorm couples the samples of a batch in train mode, so models with BatchNorm
        take per-sample gradients in eval mode (running statistics) only.
        """
        if train and self.has_bn:
            raise ConfigError(
                f"model {self.name!r}: per-sample gradients in train mode are undefined with "
                f"BatchNorm ({', '.join(self.bn_layers)}): the batch statistics couple the "
                "samples. Use train=False (running statistics; reset_bn first)."
            )
        inputs, P, Bd = self._prepare(X, inputs, B, False)
        k, b = inputs.shape[:2]

        def one(p: dict, bufs: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            out, _, _ = self._one(p, bufs, x.unsqueeze(0), False, {})
            return self.loss_fn(out, y.unsqueeze(0)).sum()

        per_node = vmap(grad(one), in_dims=(None, None, 0, 0), randomness="error")

        def node(i: int) -> dict:
            p = {n: t[i] for n, t in P.items()}
            bufs = {n: t[i] for n, t in Bd.items()}
            if "per_sample_grad(samples)" not in self.fallbacks:
                try:
                    return per_node(p, bufs, inputs[i], targets[i])
                except Exception as exc:
                    if self.strategy != "auto" or not _is_vmap_limit(exc):
                        raise
                    self.fallbacks["per_sample_grad(samples)"] = str(exc).splitlines()[0]
            res = [grad(one)(p, bufs, inputs[i, j], targets[i, j]) for j in range(b)]
            return {n: torch.stack([r[n] for r in res]) for n in P}

        def looped() -> dict:
            res = [node(i) for i in range(k)]
            return {n: torch.stack([r[n] for r in res]) for n in P}

        self._set_mode(train)
        g = self._dispatch(
            "per_sample_grad",
            lambda: vmap(per_node, randomness="error")(P, Bd, inputs, targets),
            looped,
        )
        return torch.cat([g[e.name].reshape(k, b, -1) for e in self.layout.params], dim=2)

    def capture(
        self,
        X: torch.Tensor,
        inputs: torch.Tensor,
        B: torch.Tensor | None = None,
        points: Sequence[str] | None = None,
        *,
        train: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Activations ``{group: [k, samples, units]}`` at the groups' capture points.

        ``points`` are group names (default: every group with a point). Samples run over the
        batch and every spatial position. Train mode uses (and updates) BatchNorm batch
        statistics as :meth:`forward` does.
        """
        groups = self.layout.groups
        names = [g for g in groups if groups[g].point] if points is None else list(points)
        for n in names:
            if n not in groups or groups[n].point is None:
                have = [g for g in groups if groups[g].point]
                raise ConfigError(
                    f"model {self.name!r}: no capture point {n!r}; points: {', '.join(have)}."
                )
        inputs, P, Bd = self._prepare(X, inputs, B, train)
        where = {n: str(groups[n].point) for n in names}
        with torch.no_grad():
            _, new, acts = self._run_all(P, Bd, inputs, train, where)
        self._write_back(B, new, train)
        return {n: as_units(acts[n], groups[n].point_axis) for n in names}

    def permute(
        self,
        X: torch.Tensor,
        group: str,
        perm: torch.Tensor,
        B: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Permute ``group``'s units per node (see :meth:`ParamLayout.permute`)."""
        return self.layout.permute(X, group, perm, B)

    def __repr__(self) -> str:
        return (
            f"BatchedModel({self.name!r}, dim={self.dim}, buf_dim={self.buf_dim}, "
            f"groups={list(self.layout.groups)})"
        )

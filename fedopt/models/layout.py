"""Flat per-node parameter rows with a named layout and permutable unit axes.

Every node's parameters are one row of ``X [k, dim]`` and its floating-point buffers
(BatchNorm running means and variances) one row of ``B [k, buf_dim]``. A
:class:`ParamLayout` says where each named tensor lives in a row: name, shape, offset and
number of elements, in the module's registration order (``named_parameters`` and
``named_buffers``), so ``X[:, offset : offset + numel].view(k, *shape)`` is node-batched
tensor ``name`` as a view, without a copy.

A :class:`PermGroup` is one axis of hidden *units* (the 64 neurons of a hidden layer, the
16 channels of a convolution) and every ``(tensor, axis)`` that a permutation of those
units acts on: the output axis of the layers that produce the units (weight rows, bias,
BatchNorm scale, shift, running mean and variance) and the input axis of the layers that
consume them. Permuting all of them with the same permutation leaves the network's
function unchanged (the symmetry that weight and activation matching, e.g. git re-basin,
ZipIt and DIMAT, align models by). A consumer that sees the units through a flatten, such
as a linear layer after ``[C, H, W] -> C*H*W``, lists the axis with ``block = H*W``: unit
``c`` owns the contiguous block ``c*block .. (c+1)*block - 1`` of that axis.

Convention: applying ``perm`` (``[k, units]``, one permutation of ``0..units-1`` per node)
makes new unit ``j`` of node ``i`` the old unit ``perm[i, j]``, along every axis of the group.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from fedopt import rng
from fedopt.errors import ConfigError
from fedopt.models.layers import Dense

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class Entry:
    """One named tensor of a flat row.

    Attributes
    ----------
    name
        Dotted name as in ``module.named_parameters()`` / ``named_buffers()``.
    shape
        Shape of one node's tensor.
    offset
        First position in the row.
    init
        How :meth:`ParamLayout.init_params` draws it: ``("uniform", bound)`` for
        ``U(-bound, bound)``, ``("const", value)``, or ``("module", 0.0)`` for a copy of the
        module's own tensor (the same on every node).
    """

    name: str
    shape: tuple[int, ...]
    offset: int
    init: tuple[str, float] = ("module", 0.0)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def end(self) -> int:
        return self.offset + self.numel


@dataclass(frozen=True)
class UnitAxis:
    """Axis ``axis`` of tensor ``tensor`` (one node's shape) carries the group's units.

    With ``block > 1`` the axis has ``units * block`` positions and unit ``u`` owns the
    contiguous positions ``u*block .. (u+1)*block - 1`` (a flattened ``[units, block]``).
    """

    tensor: str
    axis: int
    block: int = 1


@dataclass(frozen=True)
class PermGroup:
    """A permutable axis of hidden units and every tensor axis it acts on.

    Attributes
    ----------
    name
        Name of the unit axis (also the name of its activation capture point).
    units
        Number of units.
    axes
        Every ``(tensor, axis, block)`` a permutation of the units must be applied to.
    producers, consumers
        Names of the layers that write the units and of those that read them (for
        messages and for readers of the layout).
    point
        Name of the submodule whose output holds the units' activations (the input of
        the consuming layers), or None when the group has no capture point.
    point_axis
        Axis of the units in that submodule's per-sample output (batch axis excluded,
        so ``0`` for ``[b, units]`` and ``[b, C, H, W]`` alike).
    """

    name: str
    units: int
    axes: tuple[UnitAxis, ...]
    producers: tuple[str, ...] = ()
    consumers: tuple[str, ...] = ()
    point: str | None = None
    point_axis: int = 0


def _module_axes(module: nn.Module, name: str, side: str, block: int) -> list[UnitAxis]:
    """The unit axes of submodule ``name`` on its output (``side="out"``) or input side."""
    try:
        sub = module.get_submodule(name)
    except AttributeError:
        known = [n for n, _ in module.named_modules() if n]
        raise ConfigError(
            f"model layout: no layer {name!r} in {type(module).__name__}; "
            f"name one of: {', '.join(known)}."
        ) from None

    def has(attr: str) -> bool:
        return getattr(sub, attr, None) is not None

    if isinstance(sub, (nn.Linear, Dense, *_CONV)):
        if isinstance(sub, _CONV) and sub.groups != 1:
            raise ConfigError(
                f"model layout: layer {name!r} is a grouped convolution (groups={sub.groups}); "
                "its channels cannot be permuted independently. Use groups=1."
            )
        w_out = 1 if isinstance(sub, Dense) else 0
        if side == "in":
            return [UnitAxis(f"{name}.weight", 1 - w_out, block)]
        axes = [UnitAxis(f"{name}.weight", w_out)]
        return [*axes, UnitAxis(f"{name}.bias", 0)] if has("bias") else axes
    if isinstance(sub, _BN) and side == "out":
        names = [n for n in ("weight", "bias", "running_mean", "running_var") if has(n)]
        return [UnitAxis(f"{name}.{n}", 0) for n in names]
    if isinstance(sub, nn.LayerNorm) and side == "out" and len(sub.normalized_shape) == 1:
        return [UnitAxis(f"{name}.{n}", 0) for n in ("weight", "bias") if has(n)]
    role = "produce" if side == "out" else "consume"
    raise ConfigError(
        f"model layout: layer {name!r} ({type(sub).__name__}) cannot {role} permutable units; "
        "supported: Linear, Dense, Conv (groups=1) on either side, BatchNorm and 1-D "
        "LayerNorm as producers. List the tensor axes yourself with PermGroup(axes=...)."
    )


def unit_group(
    module: nn.Module,
    name: str,
    *,
    produce: Sequence[str],
    consume: Sequence[str | tuple[str, int]],
    point: str | None = None,
    point_axis: int = 0,
) -> PermGroup:
    """Build the :class:`PermGroup` of the units written by ``produce`` and read by ``consume``.

    Parameters
    ----------
    module
        The model.
    name
        Name of the unit axis (and of its capture point).
    produce
        Layers that write the units, in order (e.g. ``["conv1", "bn1"]``).
    consume
        Layers that read them; ``(layer, block)`` when the layer sees each unit as a block of
        ``block`` inputs (a linear layer after a flatten of ``[C, H, W]``: ``block = H*W``).
    point, point_axis
        Submodule whose output holds the units' activations, and the units' axis there.
    """
    axes: list[UnitAxis] = []
    for layer in produce:
        axes += _module_axes(module, layer, "out", 1)
    for item in consume:
        layer, block = (item, 1) if isinstance(item, str) else item
        axes += _module_axes(module, layer, "in", int(block))
    if not axes:
        raise ConfigError(f"model layout: group {name!r} lists no layers; name its producers.")
    first = axes[0]
    shape = dict(module.named_parameters()) | dict(module.named_buffers())
    units = shape[first.tensor].shape[first.axis] // first.block
    return PermGroup(
        name,
        units,
        tuple(axes),
        tuple(produce),
        tuple(i if isinstance(i, str) else i[0] for i in consume),
        point,
        point_axis,
    )


def _init_of(module: nn.Module, name: str) -> tuple[str, float]:
    """Default initialisation of parameter ``name``: fan-in uniform for linear and conv
    layers (torch's and the digits problems' bound ``1/sqrt(fan_in)``), ones and zeros
    for normalisation layers, uniform with standard deviation 0.02 for embeddings, else
    a copy of the module's tensor."""
    owner, _, leaf = name.rpartition(".")
    sub = module.get_submodule(owner) if owner else module
    if isinstance(sub, Dense):
        return ("uniform", sub.in_features**-0.5)
    if isinstance(sub, nn.Linear):
        return ("uniform", sub.in_features**-0.5)
    if isinstance(sub, _CONV):
        fan_in = sub.in_channels // sub.groups * math.prod(sub.kernel_size)
        return ("uniform", fan_in**-0.5)
    if isinstance(sub, (*_BN, nn.LayerNorm, nn.GroupNorm)):
        return ("const", 1.0 if leaf == "weight" else 0.0)
    if isinstance(sub, nn.Embedding):  # standard deviation 0.02, as GPT-2's
        return ("uniform", 0.02 * math.sqrt(3.0))
    return ("module", 0.0)


@dataclass
class ParamLayout:
    """Named layout of the flat parameter row (and buffer row) of one model.

    Build it with :meth:`from_module`. Integer buffers (BatchNorm's
    ``num_batches_tracked``) are not part of the buffer row: they count calls, not state
    that travels or merges.

    Attributes
    ----------
    params, buffers
        Entries of the parameter row ``[dim]`` and of the buffer row ``[buf_dim]``.
    groups
        Permutable unit axes by name, validated against the shapes.
    """

    params: tuple[Entry, ...]
    buffers: tuple[Entry, ...] = ()
    groups: dict[str, PermGroup] = field(default_factory=dict)
    template: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {e.name: ("param", e) for e in self.params}
        self._by_name |= {e.name: ("buffer", e) for e in self.buffers}
        for group in self.groups.values():
            self._check_group(group)

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_module(cls, module: nn.Module, groups: Iterable[PermGroup] = ()) -> ParamLayout:
        """Layout of ``module``'s parameters and floating-point buffers, in registration
        order, with the given permutable unit groups (checked against the shapes)."""
        params, off = [], 0
        for name, p in module.named_parameters():
            params.append(Entry(name, tuple(p.shape), off, _init_of(module, name)))
            off += p.numel()
        buffers, off = [], 0
        for name, b in module.named_buffers():
            if b.is_floating_point():
                buffers.append(Entry(name, tuple(b.shape), off))
                off += b.numel()
        template = {n: t.detach().cpu().clone() for n, t in module.named_parameters()}
        template |= {n: t.detach().cpu().clone() for n, t in module.named_buffers()}
        by_name: dict[str, PermGroup] = {}
        for g in groups:
            if g.name in by_name:
                raise ConfigError(f"model layout: two permutable groups are named {g.name!r}.")
            by_name[g.name] = g
        return cls(tuple(params), tuple(buffers), by_name, template)

    def _check_group(self, group: PermGroup) -> None:
        seen: dict[tuple[str, int], None] = {}
        first: tuple[UnitAxis, int] | None = None
        for ax in group.axes:
            if ax.tensor not in self._by_name:
                raise ConfigError(
                    f"model layout: group {group.name!r} names tensor {ax.tensor!r}, which "
                    f"the model does not have; known tensors: {', '.join(self._by_name)}."
                )
            shape = self._by_name[ax.tensor][1].shape
            if not 0 <= ax.axis < len(shape):
                raise ConfigError(
                    f"model layout: group {group.name!r}: tensor {ax.tensor!r} of shape "
                    f"{list(shape)} has no axis {ax.axis}; use 0..{len(shape) - 1}."
                )
            if (ax.tensor, ax.axis) in seen:
                raise ConfigError(
                    f"model layout: group {group.name!r} lists axis {ax.axis} of "
                    f"{ax.tensor!r} twice; list each tensor axis once."
                )
            seen[(ax.tensor, ax.axis)] = None
            size = shape[ax.axis]
            if ax.block < 1 or size != group.units * ax.block:
                where = f"{ax.tensor!r} axis {ax.axis}"
                what = f"{size} positions" + (f" (block {ax.block})" if ax.block != 1 else "")
                ref = (
                    f"{first[0].tensor!r} axis {first[0].axis} has {first[1]} units"
                    if first
                    else f"the group has {group.units} units"
                )
                raise ConfigError(
                    f"model layout: permutable units of group {group.name!r} do not match "
                    f"between the layers they connect: {ref} but {where} has {what}, "
                    f"expected {group.units * max(ax.block, 1)}. Make the producing layer's "
                    "output size equal the consuming layer's input size (times the block "
                    "of a flattened input), or fix the group's axes."
                )
            if first is None:
                first = (ax, group.units)

    # ---------------------------------------------------------------- sizes and names

    @property
    def dim(self) -> int:
        """Length of a parameter row."""
        return self.params[-1].end if self.params else 0

    @property
    def buf_dim(self) -> int:
        """Length of a buffer row (0 for models without floating-point buffers)."""
        return self.buffers[-1].end if self.buffers else 0

    def entry(self, name: str) -> Entry:
        """The entry of parameter or buffer ``name``."""
        try:
            return self._by_name[name][1]
        except KeyError:
            raise ConfigError(
                f"model layout: no tensor {name!r}; known tensors: {', '.join(self._by_name)}."
            ) from None

    def group(self, name: str) -> PermGroup:
        """The permutable group ``name``."""
        try:
            return self.groups[name]
        except KeyError:
            raise ConfigError(
                f"model layout: no permutable group {name!r}; known groups: "
                f"{', '.join(self.groups) or '(none)'}."
            ) from None

    # ---------------------------------------------------------------- views

    @staticmethod
    def _views(entries: Sequence[Entry], R: torch.Tensor, width: int) -> dict[str, torch.Tensor]:
        if R.ndim != 2 or R.shape[1] != width:
            raise ValueError(f"expected a [k, {width}] row matrix, got shape {list(R.shape)}")
        k = R.shape[0]
        return {e.name: R[:, e.offset : e.end].view(k, *e.shape) for e in entries}

    def unflatten(self, X: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views ``{name: [k, *shape]}`` into the parameter rows ``X [k, dim]`` (no copy)."""
        return self._views(self.params, X, self.dim)

    def unflatten_buffers(self, B: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views ``{name: [k, *shape]}`` into the buffer rows ``B [k, buf_dim]``."""
        return self._views(self.buffers, B, self.buf_dim)

    @staticmethod
    def _flatten(entries: Sequence[Entry], tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        missing = [e.name for e in entries if e.name not in tensors]
        if missing:
            raise ValueError(f"flatten: missing tensors {missing}")
        k = tensors[entries[0].name].shape[0]
        return torch.cat([tensors[e.name].reshape(k, e.numel) for e in entries], dim=1)

    def flatten(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Rows ``[k, dim]`` from node-batched tensors ``{name: [k, *shape]}``."""
        return self._flatten(self.params, tensors)

    def flatten_buffers(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Buffer rows ``[k, buf_dim]`` from ``{name: [k, *shape]}``."""
        if not self.buffers:
            k = next(iter(tensors.values())).shape[0] if tensors else 0
            return torch.zeros(k, 0)
        return self._flatten(self.buffers, tensors)

    # ---------------------------------------------------------------- state rows

    def pack(self, X: torch.Tensor, B: torch.Tensor | None) -> torch.Tensor:
        """One state row per node, ``[k, dim + buf_dim]``: parameters, then buffers.

        This is what travels in a message, goes into a checkpoint, or is averaged by a
        merge (DIMAT averages every state entry, running statistics included).
        """
        if not self.buffers:
            return X
        if B is None:
            raise ValueError("pack: the model has buffers; pass B [k, buf_dim]")
        return torch.cat([X, B.to(X.dtype)], dim=1)

    def unpack(self, S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(X [k, dim], B [k, buf_dim])`` views into state rows from :meth:`pack`."""
        if S.ndim != 2 or S.shape[1] != self.dim + self.buf_dim:
            raise ValueError(
                f"unpack: expected [k, {self.dim + self.buf_dim}] state rows, got {list(S.shape)}"
            )
        return S[:, : self.dim], S[:, self.dim :]

    def state_dict(
        self, X: torch.Tensor, B: torch.Tensor | None, node: int
    ) -> dict[str, torch.Tensor]:
        """Node ``node``'s tensors as a ``torch.nn.Module`` state dict (copies).

        Integer buffers are the module's own (``num_batches_tracked``), so the result loads
        with ``module.load_state_dict``.
        """
        out = {n: t[node].clone() for n, t in self.unflatten(X).items()}
        if self.buffers and B is not None:
            out |= {n: t[node].clone() for n, t in self.unflatten_buffers(B).items()}
        for n, t in self.template.items():
            if n not in out:
                out[n] = t.clone()
        return out

    # ---------------------------------------------------------------- initialisation

    def init_params(
        self, seed: int, ranks: torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Initial rows ``[len(ranks), dim]``, keyed by ``(seed, "init", rank)``.

        Every entry takes its slice of one stream of ``dim`` uniforms per node, as the digits
        problems draw theirs: ``(2u - 1) * bound`` for fan-in uniform entries, a constant or
        a copy of the module's tensor for the others. A digits MLP therefore starts from the
        same row as ``DigitsOracle.init_params`` for the same seed and rank.
        """
        ranks = torch.as_tensor(ranks, dtype=torch.int64).reshape(-1)
        u = rng.uniform(rng.node_keys(seed, "init", ranks, 0), self.dim, torch.float64)
        out = torch.empty(len(ranks), self.dim, dtype=torch.float64, device=u.device)
        for e in self.params:
            kind, value = e.init
            sl = out[:, e.offset : e.end]
            if kind == "uniform":
                sl.copy_(u[:, e.offset : e.end]).mul_(2.0).sub_(1.0).mul_(value)
            elif kind == "const":
                sl.fill_(value)
            else:
                sl.copy_(self.template[e.name].reshape(1, -1).to(sl))
        return out.to(dtype)

    def init_buffers(
        self, k: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """Buffer rows ``[k, buf_dim]`` from the module's own buffers (BatchNorm: mean 0,
        variance 1) on every node."""
        row = torch.cat(
            [self.template[e.name].reshape(-1).to(dtype) for e in self.buffers]
            or [torch.zeros(0, dtype=dtype)]
        )
        return row.to(device).unsqueeze(0).repeat(k, 1)

    # ---------------------------------------------------------------- permutations

    def permute(
        self,
        X: torch.Tensor,
        group: str | PermGroup,
        perm: torch.Tensor,
        B: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Apply one permutation per node to the units of ``group``; returns new ``(X, B)``.

        Parameters
        ----------
        X, B
            Parameter rows ``[k, dim]`` and buffer rows ``[k, buf_dim]`` (``B`` is needed
            when the group acts on buffers, i.e. BatchNorm running statistics).
        group
            The group or its name.
        perm
            ``[k, units]`` (or ``[units]`` for every node) int64: new unit ``j`` of node
            ``i`` is old unit ``perm[i, j]``.
        """
        g = self.group(group) if isinstance(group, str) else group
        k = X.shape[0]
        perm = torch.as_tensor(perm, dtype=torch.int64, device=X.device)
        if perm.ndim == 1:
            perm = perm.unsqueeze(0).expand(k, -1)
        if perm.shape != (k, g.units):
            raise ValueError(
                f"permute: group {g.name!r} needs perm of shape [{k}, {g.units}], "
                f"got {list(perm.shape)}"
            )
        if not bool((perm.sort(dim=1).values == torch.arange(g.units, device=X.device)).all()):
            raise ValueError(
                f"permute: every row of perm must be a permutation of 0..{g.units - 1}"
            )
        Xn = X.clone()
        Bn = B.clone() if B is not None else None
        new_p, old_p = self.unflatten(Xn), self.unflatten(X)
        new_b = self.unflatten_buffers(Bn) if Bn is not None and self.buffers else {}
        old_b = self.unflatten_buffers(B) if B is not None and self.buffers else {}
        for ax in g.axes:
            kind = self._by_name[ax.tensor][0]
            if kind == "buffer" and B is None:
                raise ValueError(
                    f"permute: group {g.name!r} acts on buffer {ax.tensor!r}; pass B [k, buf_dim]"
                )
            src = (old_p if kind == "param" else old_b)[ax.tensor]
            dst = (new_p if kind == "param" else new_b)[ax.tensor]
            idx = perm
            if ax.block > 1:
                off = torch.arange(ax.block, device=X.device)
                idx = (perm.unsqueeze(2) * ax.block + off).reshape(k, -1)
            shape = [k] + [1] * (src.ndim - 1)
            shape[ax.axis + 1] = idx.shape[1]
            full = idx.view(shape).expand_as(src)
            dst.copy_(torch.gather(src, ax.axis + 1, full))
        return Xn, Bn

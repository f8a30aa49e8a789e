"""Activation capture at named points, batched over nodes.

A capture point is the submodule whose output holds the units of a permutable group
(:class:`~fedopt.models.layout.PermGroup`): the input of the layers that consume the
units, post-activation (DIMAT and ZipIt match on these features). Capturing records that
output with a forward hook during the node-batched forward pass and returns it as
``[k, samples, units]``, where ``samples`` runs over the batch and, for convolutions,
every spatial position (``samples = b * H * W``), so a correlation between two nodes'
features at a point is one matrix product.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def hooks(
    module: nn.Module, points: Mapping[str, str], into: dict[str, torch.Tensor]
) -> Iterator[None]:
    """Record the output of submodule ``points[name]`` as ``into[name]`` while active."""
    handles = []
    try:
        for name, sub in points.items():

            def record(_mod: nn.Module, _inp: object, out: torch.Tensor, name: str = name) -> None:
                into[name] = out

            handles.append(module.get_submodule(sub).register_forward_hook(record))
        yield
    finally:
        for h in handles:
            h.remove()


def as_units(act: torch.Tensor, axis: int) -> torch.Tensor:
    """``[k, b, *per_sample]`` activations to ``[k, samples, units]``.

    ``axis`` is the units' axis in the per-sample shape (0 for ``[units]`` and for
    ``[C, H, W]``); every other per-sample axis joins the samples.
    """
    k, units = act.shape[0], act.shape[2 + axis]
    return act.movedim(2 + axis, -1).reshape(k, -1, units)

"""ResNet-20 (He et al., CVPR 2016, the CIFAR variant) with BatchNorm and conv shortcuts.

``stem conv3x3(16w) -> BN -> ReLU``, then three stages of three :class:`BasicBlock`
(widths ``16w, 32w, 64w``; the first block of stages 2 and 3 has stride 2), global average
pooling and a linear classifier. A block whose input and output differ in width or
resolution has a **3x3 conv + BatchNorm shortcut**, as in the DIMAT reference's
ResNet-20 (spec section 3.6) and git re-basin's; the other blocks add their input.

Permutable unit groups (DIMAT's / ZipIt's merge points, spec section 3.3):

* ``stageS`` (S = 1, 2, 3): the residual stream of stage S. Every layer that writes into
  it (the stem or the stage's conv shortcut, and every block's ``conv2``/``bn2``) shares
  one permutation, and every layer that reads it (each block's ``conv1``, the next
  stage's first ``conv1`` and shortcut conv, or the classifier) takes it on its input.
  Captured at the output of the stage's last block (the next stage's input; for stage 3
  the average pool's input).
* ``stageS.blockB``: the hidden channels between ``conv1`` and ``conv2`` of each block,
  captured after ``act1``.

That is 3 + 9 = 12 permutations, as in the reference.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from fedopt.models.layout import PermGroup, unit_group


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; shortcut: identity, or a
    3x3 conv (stride ``stride``) and BatchNorm when the width or resolution changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, momentum: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out, momentum=momentum)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out, momentum=momentum)
        self.act2 = nn.ReLU()
        self.shortcut: nn.Module
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(c_out, momentum=momentum),
            )
        else:
            self.shortcut = nn.Identity()

    @property
    def has_conv_shortcut(self) -> bool:
        return isinstance(self.shortcut, nn.Sequential)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(h)) + self.shortcut(x))


def resnet20_module(
    in_channels: int, image_size: int, width: int, classes: int, momentum: float
) -> tuple[nn.Module, list[PermGroup]]:
    """The ResNet-20 module for flat inputs ``[b, in_channels * image_size**2]`` and its
    12 unit groups."""
    widths = [16 * width, 32 * width, 64 * width]
    mods: OrderedDict[str, nn.Module] = OrderedDict()
    mods["image"] = nn.Unflatten(1, (in_channels, image_size, image_size))
    mods["conv1"] = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
    mods["bn1"] = nn.BatchNorm2d(widths[0], momentum=momentum)
    mods["act1"] = nn.ReLU()
    c_in = widths[0]
    for s, c in enumerate(widths, start=1):
        blocks = [
            BasicBlock(c_in if b == 0 else c, c, 2 if (b == 0 and s > 1) else 1, momentum)
            for b in range(3)
        ]
        mods[f"layer{s}"] = nn.Sequential(*blocks)
        c_in = c
    mods["pool"] = nn.AdaptiveAvgPool2d(1)
    mods["flatten"] = nn.Flatten()
    mods["fc"] = nn.Linear(widths[-1], classes)
    module = nn.Sequential(mods)

    groups: list[PermGroup] = []
    for s in (1, 2, 3):
        stage = module.get_submodule(f"layer{s}")
        first = stage[0]
        produce = ["conv1", "bn1"] if s == 1 else []
        if s > 1 and first.has_conv_shortcut:
            produce += [f"layer{s}.0.shortcut.0", f"layer{s}.0.shortcut.1"]
        consume: list[str | tuple[str, int]] = []
        for b in range(3):
            produce += [f"layer{s}.{b}.conv2", f"layer{s}.{b}.bn2"]
            if s == 1 or b > 0:
                consume.append(f"layer{s}.{b}.conv1")
        if s < 3:
            consume.append(f"layer{s + 1}.0.conv1")
            if module.get_submodule(f"layer{s + 1}")[0].has_conv_shortcut:
                consume.append(f"layer{s + 1}.0.shortcut.0")
        else:
            consume.append("fc")
        groups.append(
            unit_group(module, f"stage{s}", produce=produce, consume=consume, point=f"layer{s}.2")
        )
    for s in (1, 2, 3):
        for b in range(3):
            p = f"layer{s}.{b}"
            groups.append(
                unit_group(
                    module,
                    f"stage{s}.block{b}",
                    produce=[f"{p}.conv1", f"{p}.bn1"],
                    consume=[f"{p}.conv2"],
                    point=f"{p}.act1",
                )
            )
    return module, groups

"""CIFAR ResNets (He et al. 2016, "Deep Residual Learning for Image Recognition", Sec. 4.2).

Three stages of 16/32/64 channels at 32x32/16x16/8x8, ``n`` basic blocks each (depth = 6n + 2), a
1x1 conv + BN projection shortcut where the shape changes (option B), global average pooling and a
linear classifier. Input ``(N, 3, 32, 32)``, output logits ``(N, num_classes)``.

Module names (the channel spec keys): ``conv1`` (stem), ``layer{s}.{b}.conv1``, ``layer{s}.{b}.conv2``,
``layer{s}.0.shortcut.0`` (projection, stages 2 and 3). The stem, every ``conv2`` and the projection of a
stage are coupled by the residual adds and must share one width.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn as nn

from ._spec import ChannelSpecError, WidthReader, build_stages, init_weights_
from .registry import register_model

STAGE_WIDTHS = (16, 32, 64)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU, conv3x3-BN, + shortcut, ReLU."""

    def __init__(self, in_planes: int, mid: int, out: int, stride: int, projection: bool, name: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(mid, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.shortcut: Optional[nn.Module] = None
        if projection:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out, 1, stride, bias=False), nn.BatchNorm2d(out))
        elif in_planes != out:
            raise ChannelSpecError(
                f"channel spec: {name}.conv2 has {out} channels but its identity shortcut carries {in_planes}; "
                "the widths coupled by a residual add must be equal"
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu2(out + identity)


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int, channels: Dict[str, int]):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        width = WidthReader(channels)
        c = width("conv1", STAGE_WIDTHS[0])
        self.conv1 = nn.Conv2d(3, c, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        in_planes = build_stages(self, width, BasicBlock, c, STAGE_WIDTHS[0], STAGE_WIDTHS, n, "shortcut.0")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        width.check_consumed(f"resnet{depth}")
        init_weights_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def _factory(depth: int):
    def make(num_classes: int = 10, channels: Optional[Dict[str, int]] = None) -> nn.Module:
        return CifarResNet(depth, num_classes, channels or {})

    return make


for _depth in (20, 32, 44, 56, 110):
    register_model(f"resnet{_depth}")(_factory(_depth))

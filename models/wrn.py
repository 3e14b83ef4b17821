"""Wide Residual Networks (Zagoruyko & Komodakis 2016, "Wide Residual Networks").

WRN-d-k: a 3x3 stem of 16 channels, three stages of 16k/32k/64k channels with (d-4)/6 pre-activation
basic blocks each (BN-ReLU-conv3x3, BN-ReLU-conv3x3; a 1x1 conv shortcut where the width or stride
changes, applied to the pre-activated input), then BN-ReLU, global average pooling and a linear
classifier. No dropout. Input ``(N, 3, 32, 32)``, output logits ``(N, num_classes)``.

Module names (the channel spec keys): ``conv1``, ``layer{s}.{b}.conv1``, ``layer{s}.{b}.conv2``,
``layer{s}.0.shortcut``. Each stage's ``conv2`` layers and its shortcut share one width.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn as nn

from ._spec import ChannelSpecError, WidthReader, build_stages, init_weights_
from .registry import register_model


class PreActBlock(nn.Module):
    def __init__(self, in_planes: int, mid: int, out: int, stride: int, projection: bool, name: str):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, mid, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(mid, out, 3, 1, 1, bias=False)
        self.shortcut: Optional[nn.Module] = None
        if projection:
            self.shortcut = nn.Conv2d(in_planes, out, 1, stride, bias=False)
        elif in_planes != out:
            raise ChannelSpecError(
                f"channel spec: {name}.conv2 has {out} channels but its identity shortcut carries {in_planes}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu1(self.bn1(x))
        out = self.conv1(a)
        out = self.conv2(self.relu2(self.bn2(out)))
        identity = x if self.shortcut is None else self.shortcut(a)
        return out + identity


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen: int, num_classes: int, channels: Dict[str, int]):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        width = WidthReader(channels)
        c = width("conv1", 16)
        self.conv1 = nn.Conv2d(3, c, 3, 1, 1, bias=False)
        in_planes = build_stages(self, width, PreActBlock, c, 16, (16 * widen, 32 * widen, 64 * widen), n, "shortcut")
        self.bn = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        width.check_consumed(f"wrn{depth}_{widen}")
        init_weights_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.relu(self.bn(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def _factory(depth: int, widen: int):
    def make(num_classes: int = 10, channels: Optional[Dict[str, int]] = None) -> nn.Module:
        return WideResNet(depth, widen, num_classes, channels or {})

    return make


for _d, _k in ((16, 2), (40, 2), (28, 10)):
    register_model(f"wrn{_d}_{_k}")(_factory(_d, _k))

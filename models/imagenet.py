"""ResNet-18/34/50/101/152 at ImageNet layout (He et al. 2016, "Deep Residual Learning for Image Recognition",
Table 1), and with a 3x3 stem for 32x32 inputs (the Neural Network Shrinking work's ``input_feature_maps``).

``resnet{18,34,50,101,152}``: 7x7/2 stem conv, 3x3/2 max-pool, four stages of basic (18, 34) or bottleneck
(50, 101, 152, expansion 4) blocks at 64/128/256/512 base widths, stride 2 at the first block of stages 2-4
(in the 3x3 conv of a bottleneck, as torchvision's "ResNet v1.5"), a 1x1 conv + BN projection (``downsample``)
where the shape changes, global average pooling, linear. Input ``(N, 3, H, W)``, ``H, W >= 32``.

``resnet{18,...,152}_cifar``: a 3x3/1 stem without max-pool and 64 channels in the first stage;
``resnet{18,...,152}_cifar16``: the same with 16 (the work's ``input_feature_maps`` 64 and 16).

Module names follow torchvision (``conv1``, ``layer2.0.conv1``, ``layer2.0.downsample.0``, ``fc``), so the
parameter counts can be checked against the paper's (tests/models). Pruned variants are rebuilt from a channel
spec by :func:`edgeshrink.models.generic.apply_channel_spec_`.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn as nn

from ._spec import init_weights_
from .generic import apply_channel_spec_
from .registry import register_model

DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
          101: ("bottleneck", (3, 4, 23, 3)), 152: ("bottleneck", (3, 8, 36, 3))}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _projection(cin, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=False)
        self.downsample = _projection(cin, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        identity = x if self.downsample is None else self.downsample(x)
        return torch.relu(y + identity)


def _projection(cin: int, cout: int, stride: int) -> Optional[nn.Module]:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    """An ImageNet-layout ResNet; ``stem="imagenet"`` (7x7/2 + max-pool) or ``"cifar"`` (3x3/1)."""

    def __init__(self, depth: int, num_classes: int = 1000, stem: str = "imagenet", base_width: int = 64):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(DEPTHS)}, got {depth}")
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be imagenet or cifar, got {stem!r}")
        kind, blocks = DEPTHS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        c = base_width
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(3, c, 7, 2, 3, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, c, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=False)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if stem == "imagenet" else nn.Identity()
        cin = c
        for s, n in enumerate(blocks):
            planes = base_width * 2 ** s
            layers = []
            for b in range(n):
                layers.append(block(cin, planes, 2 if (s > 0 and b == 0) else 1))
                cin = planes * block.expansion
            setattr(self, f"layer{s + 1}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        init_weights_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _factory(depth: int, stem: str, base_width: int = 64):
    shape = (1, 3, 64, 64) if stem == "imagenet" else (1, 3, 32, 32)

    def make(num_classes: int = 10, channels: Optional[Dict[str, int]] = None) -> nn.Module:
        return apply_channel_spec_(ResNet(depth, num_classes, stem, base_width), channels or {}, shape)

    return make


for _d in DEPTHS:
    register_model(f"resnet{_d}")(_factory(_d, "imagenet"))
    register_model(f"resnet{_d}_cifar")(_factory(_d, "cifar"))
    register_model(f"resnet{_d}_cifar16")(_factory(_d, "cifar", 16))

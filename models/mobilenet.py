"""MobileNetV2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks", Table 2) and
MobileNetV3-Small (Howard et al. 2019, "Searching for MobileNetV3", Table 2), at width multiplier 1.0.

Input ``(N, 3, H, W)`` with ``H, W >= 32`` (five stride-2 stages); output logits ``(N, num_classes)``.
Module names follow torchvision (``features.3.conv.1.0`` is block 3's depthwise conv; ``features.4.block.2.fc1``
a squeeze-and-excitation conv), so the parameter counts can be checked against the papers' (tests/models).
Pruned variants are rebuilt from a channel spec by :func:`edgeshrink.models.generic.apply_channel_spec_`: the
dependency graph couples each depthwise conv with the expansion conv before it, and the convs joined by a
residual add or a squeeze-and-excitation multiply.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn as nn

from .generic import apply_channel_spec_
from .registry import register_model


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round ``v`` to the nearest multiple of ``divisor``, never more than 10% below it (both papers' rule)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class ConvBNAct(nn.Sequential):
    """conv (no bias), BN, activation (None: linear)."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1,
                 act: Optional[type] = nn.ReLU6, bn_eps: float = 1e-5, bn_momentum: float = 0.1):
        layers: List[nn.Module] = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                                   nn.BatchNorm2d(cout, eps=bn_eps, momentum=bn_momentum)]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class InvertedResidualV2(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, t: int):
        super().__init__()
        hidden = cin * t
        self.use_res = stride == 1 and cin == cout
        layers: List[nn.Module] = []
        if t != 1:
            layers.append(ConvBNAct(cin, hidden, 1))
        layers += [ConvBNAct(hidden, hidden, 3, stride, groups=hidden), nn.Conv2d(hidden, cout, 1, bias=False),
                   nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1))  # t (expansion), c (output channels), n (blocks), s (first block's stride)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        cin, last = 32, 1280
        features: List[nn.Module] = [ConvBNAct(3, cin, 3, 2)]
        for t, c, n, s in V2_SETTINGS:
            for i in range(n):
                features.append(InvertedResidualV2(cin, c, s if i == 0 else 1, t))
                cin = c
        features.append(ConvBNAct(cin, last, 1))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class SqueezeExcitation(nn.Module):
    """``x * hardsigmoid(fc2(relu(fc1(avgpool(x)))))`` (Hu et al. 2018, as MobileNetV3 uses it)."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.activation = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return s * x


class InvertedResidualV3(nn.Module):
    def __init__(self, cin: int, k: int, expanded: int, cout: int, se: bool, act: type, stride: int):
        super().__init__()
        self.use_res = stride == 1 and cin == cout
        bn = dict(bn_eps=1e-3, bn_momentum=0.01)
        layers: List[nn.Module] = []
        if expanded != cin:
            layers.append(ConvBNAct(cin, expanded, 1, act=act, **bn))
        layers.append(ConvBNAct(expanded, expanded, k, stride, groups=expanded, act=act, **bn))
        if se:
            layers.append(SqueezeExcitation(expanded, make_divisible(expanded // 4, 8)))
        layers.append(ConvBNAct(expanded, cout, 1, act=None, **bn))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.use_res else self.block(x)


V3_SMALL = ((16, 3, 16, 16, True, "RE", 2), (16, 3, 72, 24, False, "RE", 2), (24, 3, 88, 24, False, "RE", 1),
            (24, 5, 96, 40, True, "HS", 2), (40, 5, 240, 40, True, "HS", 1), (40, 5, 240, 40, True, "HS", 1),
            (40, 5, 120, 48, True, "HS", 1), (48, 5, 144, 48, True, "HS", 1), (48, 5, 288, 96, True, "HS", 2),
            (96, 5, 576, 96, True, "HS", 1), (96, 5, 576, 96, True, "HS", 1))
# input channels, kernel, expanded channels, output channels, squeeze-and-excitation, activation, stride


class MobileNetV3Small(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        bn = dict(bn_eps=1e-3, bn_momentum=0.01)
        features: List[nn.Module] = [ConvBNAct(3, 16, 3, 2, act=nn.Hardswish, **bn)]
        for cin, k, exp, cout, se, act, s in V3_SMALL:
            features.append(InvertedResidualV3(cin, k, exp, cout, se, nn.ReLU if act == "RE" else nn.Hardswish, s))
        features.append(ConvBNAct(96, 576, 1, act=nn.Hardswish, **bn))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(576, 1024), nn.Hardswish(), nn.Dropout(dropout),
                                        nn.Linear(1024, num_classes))
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _init(model: nn.Module) -> None:
    """Both papers' initialisation as torchvision has it: He normal (fan-out) convs, BN identity, N(0, 0.01) linears."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


@register_model("mobilenet_v2")
def mobilenet_v2(num_classes: int = 10, channels: Optional[Dict[str, int]] = None) -> nn.Module:
    return apply_channel_spec_(MobileNetV2(num_classes), channels or {}, (1, 3, 64, 64))


@register_model("mobilenet_v3_small")
def mobilenet_v3_small(num_classes: int = 10, channels: Optional[Dict[str, int]] = None) -> nn.Module:
    return apply_channel_spec_(MobileNetV3Small(num_classes), channels or {}, (1, 3, 64, 64))

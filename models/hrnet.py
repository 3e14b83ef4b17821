"""HRNet (Wang et al. TPAMI 2020, "Deep High-Resolution Representation Learning for Visual Recognition").

A stem of two 3x3/2 convolutions (1/4 resolution), stage 1 of bottleneck blocks at 64 channels, then stages 2-4
with 2, 3 and 4 parallel branches at 1/4, 1/8, 1/16 and 1/32 resolution and widths ``C, 2C, 4C, 8C``. Each
high-resolution module runs basic blocks per branch and then fuses every branch into every other (Sec. 3, "repeated
multi-resolution fusion"): a higher-resolution input reaches a lower one through 3x3/2 convolutions (BN, ReLU
between them, none after the last), a lower-resolution input reaches a higher one through a 1x1 convolution, BN and
nearest upsampling; the terms are summed and passed through a ReLU. A transition adds each new branch from the
lowest one by a 3x3/2 convolution.

Heads:

- ``hrnet_w{18,32,48}_seg`` (HRNetV2, Sec. 3.3): the four branches bilinearly upsampled to 1/4 and concatenated
  (``15C`` channels), a 1x1 convolution + BN + ReLU, a 1x1 convolution to the classes, and a bilinear upsampling to
  the input size. Input ``(N, 3, H, W)`` with ``H, W`` multiples of 32; output logits ``(N, num_classes, H, W)``.
- ``hrnet_w{18,32,48}`` (HRNet-Wn-C, the ImageNet classification backbone, Appendix): each branch widened by a
  bottleneck to 128/256/512/1024 channels, the branches merged from high to low resolution by 3x3/2 convolutions,
  a 1x1 convolution to 2048 channels, global average pooling and a linear classifier. Output ``(N, num_classes)``.
- ``hrnet_w18_small`` / ``hrnet_w18_small_seg``: the official HRNetV2-W18-Small-v1 (one module per stage, two
  blocks per branch, widths 16/32/64/128, one bottleneck of 32 in stage 1), the size that trains on a CPU.

The branches, their fusion and the concatenation are coupled through sums and reads: Torch-Pruning's dependency
graph finds the groups (every convolution writing into one branch's stream is one group); pruned variants are
rebuilt from a channel spec by :func:`edgeshrink.models.generic.apply_channel_spec_`. Module names follow the
official code (``conv1``, ``layer1.0.conv2``, ``stage3.2.fuse_layers.1.0.0.0``, ``last_layer.3``).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._spec import init_weights_
from .generic import apply_channel_spec_
from .registry import register_model

# (stage-1 blocks, stage-1 bottleneck width, ((modules, blocks per branch) for stages 2-4), base width C)
CONFIGS: Dict[str, Tuple[int, int, Tuple[Tuple[int, int], ...], int]] = {
    "w18": (4, 64, ((1, 4), (4, 4), (3, 4)), 18),
    "w32": (4, 64, ((1, 4), (4, 4), (3, 4)), 32),
    "w48": (4, 64, ((1, 4), (4, 4), (3, 4)), 48),
    "w18_small": (1, 32, ((1, 2), (1, 2), (1, 2)), 16),
}
CLS_HEAD_WIDTHS = (32, 64, 128, 256)  # HRNet-Wn-C's bottleneck widths per branch (x4 out)
SPEC_SHAPE = (1, 3, 64, 64)  # where a channel spec is traced (any multiple of 32 works)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.downsample = _projection(cin, planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int):
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU()
        self.downsample = _projection(cin, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


def _projection(cin: int, cout: int) -> Optional[nn.Module]:
    return None if cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))


def _conv_bn(cin: int, cout: int, k: int, stride: int, relu: bool) -> nn.Sequential:
    layers: List[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Basic blocks per branch, then every branch fused into every branch (Sec. 3.1, Fig. 3)."""

    def __init__(self, widths: Sequence[int], blocks: int):
        super().__init__()
        n = len(widths)
        self.branches = nn.ModuleList(nn.Sequential(*[BasicBlock(w, w) for _ in range(blocks)]) for w in widths)
        self.fuse_layers = nn.ModuleList()
        for i in range(n if n > 1 else 0):
            row = nn.ModuleList()
            for j in range(n):
                if j > i:  # lower resolution -> higher: 1x1 conv, BN, nearest upsampling
                    row.append(nn.Sequential(nn.Conv2d(widths[j], widths[i], 1, bias=False), nn.BatchNorm2d(widths[i]),
                                             nn.Upsample(scale_factor=2 ** (j - i), mode="nearest")))
                elif j == i:
                    row.append(nn.Identity())
                else:  # higher -> lower: (i - j) 3x3/2 convolutions, ReLU between them
                    row.append(nn.Sequential(*[_conv_bn(widths[j], widths[i] if k == i - j - 1 else widths[j], 3, 2,
                                                        relu=k < i - j - 1) for k in range(i - j)]))
            self.fuse_layers.append(row)
        self.relu = nn.ReLU()

    def forward(self, xs: List[torch.Tensor]) -> List[torch.Tensor]:
        xs = [b(x) for b, x in zip(self.branches, xs)]
        if len(xs) == 1:
            return xs
        out = []
        for row in self.fuse_layers:
            y = row[0](xs[0])
            for j in range(1, len(xs)):
                y = y + row[j](xs[j])
            out.append(self.relu(y))
        return out


class HRNet(nn.Module):
    """HRNet-Wn with a segmentation (``head="seg"``) or classification (``head="cls"``) head; see the module doc."""

    def __init__(self, config: str, num_classes: int, head: str):
        super().__init__()
        s1_blocks, s1_width, stages, c = CONFIGS[config]
        self.head = head
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64)
        self.conv2, self.bn2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        layers, cin = [], 64
        for _ in range(s1_blocks):
            layers.append(Bottleneck(cin, s1_width))
            cin = s1_width * 4
        self.layer1 = nn.Sequential(*layers)
        prev = [cin]
        for s, (modules, blocks) in enumerate(stages, start=2):
            widths = [c * 2 ** b for b in range(s)]
            setattr(self, f"transition{s - 1}", self._transition(prev, widths))
            setattr(self, f"stage{s}", nn.Sequential(*[HighResolutionModule(widths, blocks) for _ in range(modules)]))
            prev = widths
        self.widths = prev
        if head == "seg":
            total = sum(prev)
            self.last_layer = nn.Sequential(nn.Conv2d(total, total, 1), nn.BatchNorm2d(total), nn.ReLU(),
                                            nn.Conv2d(total, num_classes, 1))
        else:
            self.incre_modules = nn.ModuleList(Bottleneck(w, h) for w, h in zip(prev, CLS_HEAD_WIDTHS))
            outs = [h * 4 for h in CLS_HEAD_WIDTHS]
            self.downsamp_modules = nn.ModuleList(
                nn.Sequential(nn.Conv2d(outs[i], outs[i + 1], 3, 2, 1), nn.BatchNorm2d(outs[i + 1]), nn.ReLU())
                for i in range(len(outs) - 1))
            self.final_layer = nn.Sequential(nn.Conv2d(outs[-1], 2048, 1), nn.BatchNorm2d(2048), nn.ReLU())
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(2048, num_classes)
        init_weights_(self)

    @staticmethod
    def _transition(prev: Sequence[int], widths: Sequence[int]) -> nn.ModuleList:
        out = nn.ModuleList()
        for i, w in enumerate(widths):
            if i < len(prev):
                out.append(_conv_bn(prev[i], w, 3, 1, relu=True) if prev[i] != w else nn.Identity())
            else:  # a new branch from the lowest one, one 3x3/2 conv per halving
                steps = i + 1 - len(prev)
                out.append(nn.Sequential(*[_conv_bn(prev[-1], w if k == steps - 1 else prev[-1], 3, 2, relu=True)
                                           for k in range(steps)]))
        return out

    def features(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The four branches' outputs, ``(N, C * 2**b, H / 2**(b+2), W / 2**(b+2))`` for b = 0..3."""
        x = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))
        xs = [self.layer1(x)]
        for s in (2, 3, 4):
            trans = getattr(self, f"transition{s - 1}")
            xs = [trans[i](xs[i] if i < len(xs) else xs[-1]) for i in range(len(trans))]
            xs = getattr(self, f"stage{s}")(xs)
        return xs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = self.features(x)
        if self.head == "seg":
            size = xs[0].shape[-2:]
            y = torch.cat([xs[0]] + [F.interpolate(t, size=size, mode="bilinear", align_corners=False)
                                     for t in xs[1:]], dim=1)
            y = self.last_layer(y)
            return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        y = self.incre_modules[0](xs[0])
        for i, down in enumerate(self.downsamp_modules):
            y = self.incre_modules[i + 1](xs[i + 1]) + down(y)
        y = self.final_layer(y)
        return self.classifier(torch.flatten(self.avgpool(y), 1))


def _factory(config: str, head: str):
    def make(num_classes: int = 19, channels: Optional[Dict[str, int]] = None) -> nn.Module:
        model = HRNet(config, num_classes, head)
        model.task = "segmentation" if head == "seg" else "classification"
        return apply_channel_spec_(model, channels or {}, SPEC_SHAPE)

    return make


for _cfg in CONFIGS:
    register_model(f"hrnet_{_cfg}")(_factory(_cfg, "cls"))
    register_model(f"hrnet_{_cfg}_seg")(_factory(_cfg, "seg"))

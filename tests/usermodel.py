"""A user's own network, written outside the project by the tests and the benches: a MobileNetV2-style CNN in
``net.py`` that imports its blocks from its own ``models`` package (the name edgeshrink's registry package has
inside ``edgeshrink.models``), with a factory ``make(num_classes=10)``."""

from __future__ import annotations

from pathlib import Path

BLOCKS = '''\
import torch
import torch.nn as nn


class ConvBNReLU6(nn.Sequential):
    def __init__(self, cin, cout, k=3, stride=1, groups=1):
        super().__init__(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU6())


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(ConvBNReLU6(cin, hidden, 1), ConvBNReLU6(hidden, hidden, 3, stride, hidden),
                                  nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)
'''

NET = '''\
"""A small MobileNetV2-style network of the user's own (not edgeshrink's)."""
import torch
import torch.nn as nn

from models.blocks import ConvBNReLU6, InvertedResidual  # the user's own models/ package

SETTINGS = ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 2, 2))  # expansion, channels, blocks, stride


class UserNet(nn.Module):
    def __init__(self, num_classes=10, width=32):
        super().__init__()
        layers, cin = [ConvBNReLU6(3, width, 3, 2)], width
        for t, c, n, s in SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(ConvBNReLU6(cin, 128, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(128, num_classes)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def make(num_classes=10):
    return UserNet(num_classes)


def not_a_model(num_classes=10):
    return {"layers": num_classes}


class Rolled(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        x = torch.roll(self.conv(x), 1, dims=2)
        return self.fc(x.mean((2, 3)))


def rolled(num_classes=10):
    return Rolled(num_classes)
'''


def write_user_model(folder) -> str:
    """Write the user's project into ``folder`` (``net.py`` and ``models/blocks.py``); returns the reference
    ``<folder>/net.py:make``."""
    folder = Path(folder)
    (folder / "models").mkdir(parents=True, exist_ok=True)
    (folder / "models" / "__init__.py").write_text("")
    (folder / "models" / "blocks.py").write_text(BLOCKS)
    (folder / "net.py").write_text(NET)
    return f"{folder / 'net.py'}:make"

"""A small CNN without BatchNorm (a user's model by reference, ``tests/nobn_model.py:make``): with no per-batch
statistics, 2-rank DistributedDataParallel training must give the single-process weights up to float rounding."""

import torch.nn as nn


def make(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))

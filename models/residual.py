"""Independent-residual CIFAR ResNets (from the Neural Network Shrinking work): each branch that meets at a residual
add keeps its own channels.

In the coupled network every branch that meets at a residual add keeps the same channels: the stem or projection
and every ``conv2`` of a stage share one width. Here each branch keeps its own channels instead. The add becomes an
index-add: each branch's channels are scattered into a zero tensor of the union width ``|U|`` (transposed to
``(C, N, H, W)`` so the scatter indexes channels), exported to ONNX as ``ScatterND`` with ``reduction="add"``
(opset >= 16).

A stage's stream then carries the union ``U`` of the channels its branches kept (positions in ``U`` order);
every consumer of the stream (the next blocks' ``conv1``, the next stage's ``conv1`` and projection, the
classifier) reads those ``|U|`` channels. :func:`independent_from_dense` builds such a network from a dense
(or coupled-pruned) ``CifarResNet`` and the per-branch kept channel indices, copying weights; with every
channel kept it computes exactly what the dense network does. ``create_model(name, channels=...,
residual={"mode": "independent", "keep": ...})`` rebuilds one from its checkpoint. Which channels each branch
keeps is a pruning decision (:func:`edgeshrink.host.prune.residual.select_independent_keep`).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from ._spec import ChannelSpecError, channel_spec

RESIDUAL_MODES = ("independent",)


class IndexAdd(nn.Module):
    """``relu(scatter(a, idx_a) + scatter(b, idx_b))`` into ``width`` channels.

    Args:
        width: the union width ``|U|``.
        idx_a: positions in ``U`` of ``a``'s channels, shape ``(C_a,)``.
        idx_b: positions in ``U`` of ``b``'s channels, or None when ``b`` already has ``width`` channels in ``U``
            order (an identity shortcut inside a stage).

    Shapes: ``a (N, C_a, H, W)``, ``b (N, C_b, H, W)`` -> ``(N, width, H, W)``.
    """

    def __init__(self, width: int, idx_a: torch.Tensor, idx_b: Optional[torch.Tensor] = None):
        super().__init__()
        self.width = int(width)
        self.register_buffer("idx_a", torch.as_tensor(idx_a, dtype=torch.long))
        self.register_buffer("idx_b", None if idx_b is None else torch.as_tensor(idx_b, dtype=torch.long))
        # A branch that fills the union in order is added, not scattered: besides being cheaper, this avoids an
        # ONNX optimizer rewrite (onnxscript, torch 2.13's exporter) that replaces a ScatterND whose constant
        # indices cover the whole tensor by its updates, dropping reduction="add" (found by this module's tests).
        full = torch.arange(self.width)
        self.a_full = bool(self.idx_a.numel() == self.width and torch.equal(self.idx_a, full))
        self.b_full = self.idx_b is None or bool(self.idx_b.numel() == self.width and torch.equal(self.idx_b, full))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        n, _, h, w = a.shape
        if self.a_full and self.b_full:
            return torch.relu(a + b)
        if self.b_full:
            base = b.transpose(0, 1)
        else:
            base = a.new_zeros(self.width, n, h, w).index_put((self.idx_b,), b.transpose(0, 1), accumulate=True)
        if self.a_full:
            z = base + a.transpose(0, 1)
        else:
            z = base.index_put((self.idx_a,), a.transpose(0, 1), accumulate=True)
        return torch.relu(z.transpose(0, 1))


class IndependentBlock(nn.Module):
    """A basic block whose residual add is an :class:`IndexAdd`."""

    def __init__(self, conv1: nn.Conv2d, bn1: nn.BatchNorm2d, conv2: nn.Conv2d, bn2: nn.BatchNorm2d,
                 shortcut: Optional[nn.Module], add: IndexAdd):
        super().__init__()
        self.conv1, self.bn1, self.relu1 = conv1, bn1, nn.ReLU()
        self.conv2, self.bn2 = conv2, bn2
        self.shortcut = shortcut
        self.add = add

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.add(out, x if self.shortcut is None else self.shortcut(x))


class IndependentResNet(nn.Module):
    """A CIFAR ResNet whose residual branches keep channels independently. Input ``(N, 3, 32, 32)``."""

    def __init__(self, stem: nn.Conv2d, stem_bn: nn.BatchNorm2d, stages: List[nn.Sequential], fc: nn.Linear,
                 union: Dict[str, List[int]]):
        super().__init__()
        self.conv1, self.bn1, self.relu = stem, stem_bn, nn.ReLU()
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = fc
        self.union = union  # stage -> kept original channel indices, in stream order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def _conv(src: nn.Conv2d, rows: Sequence[int], cols: Sequence[int]) -> nn.Conv2d:
    c = nn.Conv2d(len(cols), len(rows), src.kernel_size, src.stride, src.padding, bias=False)
    with torch.no_grad():
        c.weight.copy_(src.weight[list(rows)][:, list(cols)])
    return c


def _bn(src: nn.BatchNorm2d, rows: Sequence[int]) -> nn.BatchNorm2d:
    b = nn.BatchNorm2d(len(rows), eps=src.eps, momentum=src.momentum)
    r = list(rows)
    with torch.no_grad():
        b.weight.copy_(src.weight[r])
        b.bias.copy_(src.bias[r])
        b.running_mean.copy_(src.running_mean[r])
        b.running_var.copy_(src.running_var[r])
        b.num_batches_tracked.copy_(src.num_batches_tracked)
    return b


def branch_names(model: nn.Module) -> Dict[str, List[str]]:
    """Per stage, the branches meeting at its residual adds: the source (``conv1`` for stage 1, else the
    projection ``layer{s}.0.shortcut.0``) then every block's ``conv2``."""
    out = {}
    for s in (1, 2, 3):
        stage = getattr(model, f"layer{s}")
        src = "conv1" if s == 1 else f"layer{s}.0.shortcut.0"
        out[f"layer{s}"] = [src] + [f"layer{s}.{b}.conv2" for b in range(len(stage))]
    return out


def independent_from_dense(model: nn.Module, keep: Dict[str, Sequence[int]]) -> IndependentResNet:
    """Build the independent-residual network from a ``CifarResNet`` and each branch's kept output channels.

    Args:
        model: a ``CifarResNet`` (dense, or with its inner widths pruned).
        keep: branch name (see :func:`branch_names`) -> kept output channel indices of that conv (original
            numbering). Missing branches keep every channel.

    Raises:
        ValueError: an unknown branch name, or indices out of range.
    """
    names = branch_names(model)
    mods = dict(model.named_modules())
    known = {n for v in names.values() for n in v}
    bad = set(keep) - known
    if bad:
        raise ChannelSpecError(f"not residual branches of this model: {', '.join(sorted(bad))}")
    k = {n: sorted(int(i) for i in keep.get(n, range(mods[n].out_channels))) for n in known}
    for n, idx in k.items():
        if not idx or idx[-1] >= mods[n].out_channels or idx[0] < 0 or len(set(idx)) != len(idx):
            raise ChannelSpecError(f"{n}: kept channels must be a non-empty subset of 0..{mods[n].out_channels - 1}")
    stem = _conv(model.conv1, k["conv1"], range(model.conv1.in_channels))
    stem_bn = _bn(model.bn1, k["conv1"])
    stages, union = [], {}
    prev_cols: Sequence[int] = k["conv1"]  # what the stream entering stage 1 carries (stem channels, in order)
    for s in (1, 2, 3):
        sname = f"layer{s}"
        u = sorted(set().union(*(k[n] for n in names[sname])))
        pos = {c: i for i, c in enumerate(u)}
        blocks = []
        for b, blk in enumerate(getattr(model, sname)):
            cols = prev_cols if b == 0 else u
            conv1 = _conv(blk.conv1, range(blk.conv1.out_channels), cols)
            bn1 = _bn(blk.bn1, range(blk.bn1.num_features))
            kb = k[f"{sname}.{b}.conv2"]
            conv2 = _conv(blk.conv2, kb, range(blk.conv2.in_channels))
            bn2 = _bn(blk.bn2, kb)
            idx_a = torch.tensor([pos[c] for c in kb])
            shortcut = None
            if b == 0:
                if blk.shortcut is not None:
                    ks = k[f"{sname}.0.shortcut.0"]
                    shortcut = nn.Sequential(_conv(blk.shortcut[0], ks, prev_cols), _bn(blk.shortcut[1], ks))
                    idx_b = torch.tensor([pos[c] for c in ks])
                else:  # stage 1: the stem's output is the identity
                    idx_b = torch.tensor([pos[c] for c in k["conv1"]])
            else:
                idx_b = None
            blocks.append(IndependentBlock(conv1, bn1, conv2, bn2, shortcut, IndexAdd(len(u), idx_a, idx_b)))
        stages.append(nn.Sequential(*blocks))
        union[sname] = u
        prev_cols = u
    fc = nn.Linear(len(prev_cols), model.fc.out_features)
    with torch.no_grad():
        fc.weight.copy_(model.fc.weight[:, list(prev_cols)])
        fc.bias.copy_(model.fc.bias)
    out = IndependentResNet(stem, stem_bn, stages, fc, union).eval()
    out.model_name = getattr(model, "model_name", None)
    out.dense_channels = channel_spec(model)  # the architecture it was made from (a checkpoint's channel spec)
    out.residual = {"mode": "independent", "keep": {n: list(v) for n, v in k.items()}}
    return out


def from_residual_spec(model: nn.Module, residual: Dict[str, object]) -> "IndependentResNet":
    """The network a checkpoint's ``residual`` spec describes, built from the (freshly initialised) dense ``model``;
    its weights come from the checkpoint's ``state_dict``.

    Raises:
        ChannelSpecError: an unknown mode, a model without residual branches, or kept channels that do not fit.
    """
    if not isinstance(residual, dict) or residual.get("mode") not in RESIDUAL_MODES:
        raise ChannelSpecError(f"residual spec must be {{'mode': 'independent', 'keep': {{...}}}}, got {residual!r}")
    keep = residual.get("keep")
    if not isinstance(keep, dict) or not all(isinstance(v, list) and all(isinstance(i, int) and not
                                                                         isinstance(i, bool) for i in v)
                                             for v in keep.values()):
        raise ChannelSpecError("residual spec 'keep' must map branch names to lists of channel indices")
    if not all(hasattr(model, f"layer{s}") for s in (1, 2, 3)) or not hasattr(model, "bn1"):
        raise ChannelSpecError(f"{getattr(model, 'model_name', type(model).__name__)} has no independent residual "
                               "mode (CIFAR ResNets only)")
    return independent_from_dense(model, keep)

"""Independent residual pruning (from the Neural Network Shrinking work) for CIFAR ResNets.

In the coupled mode (Torch-Pruning's dependency graph, :mod:`host.prune.surgery`) every branch that meets at a
residual add keeps the same channels: the stem or projection and every ``conv2`` of a stage share one width.
Here each branch keeps its own channels instead. The add becomes an index-add: each branch's channels are
scattered into a zero tensor of the union width ``|U|`` (transposed to ``(C, N, H, W)`` so the scatter indexes
channels), exported to ONNX as ``ScatterND`` with ``reduction="add"`` (opset >= 16).

A stage's stream then carries the union ``U`` of the channels its branches kept (positions in ``U`` order);
every consumer of the stream (the next blocks' ``conv1``, the next stage's ``conv1`` and projection, the
classifier) reads those ``|U|`` channels. :func:`independent_from_dense` builds such a network from a dense
(or coupled-pruned) ``CifarResNet`` and the per-branch kept channel indices, copying weights; with every
channel kept it computes exactly what the dense network does.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from host.latency.key import LayerKey


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
        raise ValueError(f"not residual branches of this model: {', '.join(sorted(bad))}")
    k = {n: sorted(int(i) for i in keep.get(n, range(mods[n].out_channels))) for n in known}
    for n, idx in k.items():
        if not idx or idx[-1] >= mods[n].out_channels or idx[0] < 0:
            raise ValueError(f"{n}: kept channels must be a non-empty subset of 0..{mods[n].out_channels - 1}")
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
    return IndependentResNet(stem, stem_bn, stages, fc, union).eval()


def layer_keys(model: IndependentResNet, input_hw=(32, 32)) -> Dict[str, List]:
    """The latency-table keys of an independent network's convolutions and classifier, and its index-adds.

    Returns:
        ``{"layers": [LayerKey], "index_adds": [(width, C_a, C_b or None, H, W)]}``. Each ``conv2`` is keyed as
        the table keys add-fused convs (measured as conv+BN); the index-adds are not in latency tables and are
        measured separately.
    """
    h, w = input_hw
    keys: List[LayerKey] = [LayerKey("conv2d", 3, model.conv1.out_channels, (h, w), (3, 3), (1, 1), (1, 1), 1,
                                     ("bn", "relu"))]
    adds = []
    for s in (1, 2, 3):
        for blk in getattr(model, f"layer{s}"):
            st = blk.conv1.stride[0]
            keys.append(LayerKey("conv2d", blk.conv1.in_channels, blk.conv1.out_channels, (h, w), (3, 3), (st, st),
                                 (1, 1), 1, ("bn", "relu")))
            if blk.shortcut is not None:
                sc = blk.shortcut[0]
                keys.append(LayerKey("conv2d", sc.in_channels, sc.out_channels, (h, w), (1, 1), (st, st), (0, 0), 1,
                                     ("bn",)))
            h, w = h // st, w // st
            keys.append(LayerKey("conv2d", blk.conv2.in_channels, blk.conv2.out_channels, (h, w), (3, 3), (1, 1),
                                 (1, 1), 1, ("bn", "add", "relu")))
            a = blk.add
            adds.append((a.width, int(a.idx_a.numel()), None if a.idx_b is None else int(a.idx_b.numel()), h, w))
    keys.append(LayerKey("gap_linear", model.fc.in_features, model.fc.out_features, (h, w)))
    return {"layers": keys, "index_adds": adds}


def select_independent_keep(model: nn.Module, per_stage: Dict[str, int],
                            union: Optional[Dict[str, int]] = None) -> Dict[str, List[int]]:
    """Each residual branch keeps its own ``per_stage[stage]`` output channels with the largest filter L2 norm
    (Li et al. 2017), independently of the other branches of the stage.

    Args:
        model: a ``CifarResNet``.
        per_stage: ``{"layer1": k1, ...}``; a missing stage keeps every channel.
        union: optional ``{"layer1": u1, ...}``: the stage's branches choose within the ``u`` channels of
            largest summed L2 norm over the branches (the coupled group's importance), so the stream is at most
            ``u`` wide; without it each branch chooses among all channels and the union can grow to the full width.

    Returns:
        ``{branch name: kept channel indices}`` for :func:`independent_from_dense`.
    """
    out: Dict[str, List[int]] = {}
    for stage, members in branch_names(model).items():
        norms = {n: model.get_submodule(n).weight.detach().flatten(1).norm(dim=1) for n in members}
        width = len(next(iter(norms.values())))
        allowed = torch.arange(width)
        if union and stage in union:
            total = sum(norms.values())
            allowed = torch.topk(total, min(int(union[stage]), width)).indices
        for name in members:
            k = min(int(per_stage.get(stage, width)), len(allowed))
            top = torch.topk(norms[name][allowed], k).indices
            out[name] = sorted(allowed[top].tolist())
    return out


def interpolated_entry_ms(table, key: LayerKey) -> float:
    """A table entry's latency (ms, the table's statistic) for ``key``; when ``key.in_channels`` is off the
    table's grid (a union width), linear interpolation between the entries at the nearest grid input widths below and above with
    everything else equal.

    Raises:
        KeyError: no entries to interpolate from.
    """
    e = table.lookup(key)
    if e is not None:
        return e.ms(table.statistic)
    same = {}
    for ent in table.entries:
        k = ent.key
        if (k.op, k.out_channels, tuple(k.in_hw), tuple(k.kernel), tuple(k.stride), tuple(k.padding), k.groups,
                tuple(k.fused)) == (key.op, key.out_channels, tuple(key.in_hw), tuple(key.kernel), tuple(key.stride),
                                    tuple(key.padding), key.groups, tuple(key.fused)):
            same[k.in_channels] = ent.ms(table.statistic)
    lo = max((c for c in same if c < key.in_channels), default=None)
    hi = min((c for c in same if c > key.in_channels), default=None)
    if lo is None or hi is None:
        raise KeyError(f"no table entries around {key.op} {key.in_channels}->{key.out_channels} at {key.in_hw}")
    t = (key.in_channels - lo) / (hi - lo)
    return same[lo] + t * (same[hi] - same[lo])


def parse_stage_widths(text: str) -> Dict[str, int]:
    """``"layer1=8,layer2=16"`` -> ``{"layer1": 8, "layer2": 16}``.

    Raises:
        ValueError: malformed text, an unknown stage or a width < 1.
    """
    out: Dict[str, int] = {}
    for part in text.split(","):
        name, _, val = part.strip().partition("=")
        if name not in ("layer1", "layer2", "layer3") or not val.isdigit() or int(val) < 1:
            raise ValueError(f"malformed --keep {text!r}: expected e.g. layer1=8,layer2=16,layer3=32")
        out[name] = int(val)
    return out


def checkpoint_dict(model: IndependentResNet, base_name: str, base_channels: Dict[str, int],
                    keep: Dict[str, List[int]], num_classes: int, **meta) -> Dict[str, object]:
    """An edgeshrink checkpoint of an independent network: the dense architecture (name + channel spec), each
    branch's kept channels (``residual``) and the state_dict, so :func:`host.checkpoint.model_from_checkpoint`
    rebuilds it."""
    from host.checkpoint import FORMAT, VERSION

    return {"format": FORMAT, "version": VERSION, "model": base_name, "num_classes": int(num_classes),
            "channels": dict(base_channels), "residual": {"mode": "independent", "keep": {k: list(v) for k, v in keep.items()}},
            "state_dict": model.state_dict(), **meta}

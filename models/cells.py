"""Networks with internal classifiers (Shallow-Deep Networks, Kaya et al., ICML 2019): the growing cell networks of
the earlier work this suite unifies, and internal classifiers after chosen blocks of the registry's CIFAR ResNets.

**Cell networks** (``cells_<type>[_<array>][_w<width>]``, e.g. ``cells_iterative``, ``cells_dense_0101_w32``): a
chain of cells, a cell being two conv-BN-ReLU layers (3x3, ``width`` channels, 32x32 kept throughout) with a skip
connection over the second (``h = relu(bn1(conv1(x)))``, ``out = relu(bn2(conv2(h)) + h)``). The ``array`` has one
digit per cell, 1 where the cell carries a classifier; the last digit is the final classifier and must be 1
(default ``00100100101``: 11 cells, internal classifiers after cells 3, 6 and 9). The cells up to and including a
classifier form a *block*; a block is what growth adds and what SNIP's per-block keep ratios refer to. The types:

- ``dense``: dense growing with internal classifiers: block ``b`` reads the channel concatenation of the outputs of
  every earlier block (its first conv has ``b * width`` inputs), and so does its classifier;
- ``iterative``: feed-forward growing with internal classifiers;
- ``full_ic``: feed-forward with internal classifiers, every block from the start;
- ``full``: feed-forward, one block, the final classifier only (the array's other digits are ignored).

A classifier (internal or final) is SDN's: the features pooled to 4x4 (adaptive average pooling), flattened, one
linear layer. Growing types start with one active block (:attr:`CellNet.active`); training adds the others
(:mod:`edgeshrink.host.dynamic.grow`). Module names (the channel spec keys): ``blocks.{b}.cells.{c}.conv1`` / ``conv2``, the
two convs of a cell coupled by its skip connection.

**Internal classifiers on a CIFAR ResNet**: ``create_model("resnet20", exits=["layer1.2", "layer2.2"])`` adds one
after each named residual block (:class:`ExitResNet`), the base network's modules kept at their own names.

Both share one interface: ``forward(x)`` gives the final logits ``(N, classes)`` (in training mode every
classifier's logits are kept in ``last_exits``, a list of ``(N, classes)``, final last); ``forward_exits(x)`` gives
that list; ``segments()`` gives ``[(module h -> h, classifier)]``, what early exit deploys stage by stage.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ._spec import ChannelSpecError, ModelError, WidthReader, init_weights_

CELL_TYPES = ("dense", "iterative", "full_ic", "full")
GROWING = ("dense", "iterative")
DEFAULT_ARRAY = "00100100101"
DEFAULT_WIDTH = 16
MAX_CELLS = 64
NAME_RE = re.compile(r"^cells_(dense|iterative|full_ic|full)(?:_([01]+))?(?:_w(\d+))?$")


class Cell(nn.Module):
    """conv3x3-BN-ReLU, then conv3x3-BN plus the first's output, ReLU: ``(N, C_in, H, W) -> (N, width, H, W)``."""

    def __init__(self, cin: int, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(h)) + h)


class CellBlock(nn.Module):
    """Cells in a chain; ``dense``: the output is the input concatenated with the cells' output."""

    def __init__(self, cells: List[Cell], dense: bool):
        super().__init__()
        self.cells = nn.Sequential(*cells)
        self.dense = dense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.cells(x)
        return torch.cat([x, out], 1) if self.dense else out


class Classifier(nn.Module):
    """SDN's classifier: ``(N, C, H, W)`` pooled to ``(N, C, 4, 4)``, flattened, linear -> ``(N, classes)``."""

    def __init__(self, channels: int, num_classes: int, pooled: int = 4):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(pooled)
        self.fc = nn.Linear(channels * pooled * pooled, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


class _Segment(nn.Module):
    """Modules applied in order (what one early-exit stage runs before its classifier)."""

    def __init__(self, parts: Sequence[nn.Module]):
        super().__init__()
        self.parts = nn.ModuleList(parts)  # the network's own modules (a segment is never registered in it)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for p in self.parts:
            x = p(x)
        return x


class _ExitsMixin:
    """What early exit needs of a network with classifiers (module docstring)."""

    all_exits = False  # forward returns every classifier's logits (a tuple), for tracing the latency of each

    def __getstate__(self):
        # the last training batch's logits are part of an autograd graph: a copy (deepcopy, pickling) leaves them
        state = dict(self.__dict__)
        state["last_exits"] = None
        return state

    def dependency_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every classifier's logits summed: what Torch-Pruning's dependency graph is traced through, so a pruned
        channel is removed from the classifiers that read it too."""
        outs = self.forward_exits(x)
        total = outs[0]
        for o in outs[1:]:
            total = total + o
        return total

    def forward_exits(self, x: torch.Tensor) -> List[torch.Tensor]:
        was = self.all_exits
        self.all_exits = True
        try:
            return list(self.forward(x))
        finally:
            self.all_exits = was


class CellNet(_ExitsMixin, nn.Module):
    """The cell network (module docstring). Input ``(N, 3, H, W)`` with ``H, W`` multiples of 4.

    Args:
        kind: one of :data:`CELL_TYPES`.
        array: one digit per cell, 1 where it carries a classifier, the last 1.
        width: the channels of every cell (the unpruned width).
        channels: a channel spec (pruned widths), conv module name -> channels.

    Raises:
        ModelError: an unknown type, an array not of 0/1 digits ending in 1, more than 64 cells, a width < 1.
        ChannelSpecError: the spec names unknown layers or gives a cell's two convs different widths.
    """

    def __init__(self, kind: str = "iterative", array: str = DEFAULT_ARRAY, width: int = DEFAULT_WIDTH,
                 num_classes: int = 10, channels: Optional[Dict[str, int]] = None):
        super().__init__()
        if kind not in CELL_TYPES:
            raise ModelError(f"cell network type must be one of {', '.join(CELL_TYPES)}, got {kind!r}")
        if not array or set(array) - {"0", "1"} or array[-1] != "1" or len(array) > MAX_CELLS:
            raise ModelError(f"cell array must be 1 to {MAX_CELLS} digits 0/1 ending in 1 (the final classifier), "
                             f"got {array!r}")
        if width < 1:
            raise ModelError(f"cell width must be >= 1, got {width}")
        self.kind, self.array, self.width = kind, array, int(width)
        ends = [len(array) - 1] if kind == "full" else [i for i, d in enumerate(array) if d == "1"]
        starts = [0] + [e + 1 for e in ends[:-1]]
        reader = WidthReader(channels or {})
        blocks, exits, streams = [], [], []
        for b, (s, e) in enumerate(zip(starts, ends)):
            dense = kind == "dense" and b > 0
            cin = sum(streams) if dense else (3 if b == 0 else streams[-1])
            cells, c_in = [], cin
            for c in range(e - s + 1):
                p = f"blocks.{b}.cells.{c}"
                w = reader(f"{p}.conv2", self.width)
                if reader(f"{p}.conv1", w) != w:
                    raise ChannelSpecError(f"channel spec: {p}.conv1 and {p}.conv2 must be equal (the cell's skip "
                                           "connection adds them)")
                cells.append(Cell(c_in, w))
                c_in = w
            out = (cin + c_in) if dense else c_in
            streams.append(c_in)
            blocks.append(CellBlock(cells, dense))
            exits.append(Classifier(out, num_classes))
        reader.check_consumed(f"cells_{kind}_{array}_w{width}")
        self.blocks = nn.ModuleList(blocks)
        self.exits = nn.ModuleList(exits)
        self.block_cells = [(s, e) for s, e in zip(starts, ends)]  # first and last cell index of each block
        self.active = len(blocks)
        self.last_exits: Optional[List[torch.Tensor]] = None
        init_weights_(self)

    @property
    def growing(self) -> bool:
        return self.kind in GROWING

    @property
    def exit_names(self) -> List[str]:
        """``exits.{b}`` of every active block, the final one last."""
        return [f"exits.{b}" for b in range(self.active)]

    def exit_depths(self) -> List[float]:
        """Each active classifier's depth as a fraction of the active cells (SDN's classifier positions)."""
        n = self.block_cells[self.active - 1][1] + 1
        return [(self.block_cells[b][1] + 1) / n for b in range(self.active)]

    def segments(self) -> List[Tuple[nn.Module, nn.Module]]:
        return [(self.blocks[b], self.exits[b]) for b in range(self.active)]

    def dependency_forward(self, x: torch.Tensor) -> torch.Tensor:
        """As :meth:`_ExitsMixin.dependency_forward` with every block active: a block not yet grown reads what the
        grown ones give (a dense block their concatenation), so pruning them must reach it."""
        was = self.active
        self.active = len(self.blocks)
        try:
            return super().dependency_forward(x)
        finally:
            self.active = was

    def forward(self, x: torch.Tensor):
        h, outs, n = x, [], self.active
        for b in range(n):
            h = self.blocks[b](h)
            if b == n - 1 or self.training or self.all_exits:
                outs.append(self.exits[b](h))
        if self.training:
            self.last_exits = outs
        return tuple(outs) if self.all_exits else outs[-1]


def parse_cell_name(name: str) -> Optional[Tuple[str, str, int]]:
    """``(type, array, width)`` of a cell network's registry name, or None for another name."""
    m = NAME_RE.match(name)
    if not m:
        return None
    return m.group(1), m.group(2) or DEFAULT_ARRAY, int(m.group(3) or DEFAULT_WIDTH)


def create_cell_net(name: str, num_classes: int = 10, channels: Optional[Dict[str, int]] = None) -> CellNet:
    """The cell network a name describes (:func:`parse_cell_name`)."""
    kind, array, width = parse_cell_name(name)
    return CellNet(kind, array, width, num_classes, channels)


def default_factory(kind: str):
    """The registry's factory of ``cells_<kind>`` (the default array and width)."""

    def make(num_classes: int = 10, channels: Optional[Dict[str, int]] = None) -> CellNet:
        return CellNet(kind, DEFAULT_ARRAY, DEFAULT_WIDTH, num_classes, channels)

    return make


class ExitResNet(_ExitsMixin, nn.Module):
    """A CIFAR ResNet with an internal classifier (:class:`Classifier`) after each block named in ``after``; the
    base network's modules at their own names, the classifiers at ``exits.{block with _ for .}``.

    Raises:
        ModelError: a base network not in the CIFAR ResNet layout, an unknown or repeated block name, or the last
            block (its classifier is the network's own).
    """

    def __init__(self, base: nn.Module, after: Sequence[str]):
        super().__init__()
        name = getattr(base, "model_name", type(base).__name__)
        if not all(hasattr(base, a) for a in ("conv1", "bn1", "relu", "layer1", "pool", "fc")) or \
                getattr(base, "residual", None) or getattr(base, "gates", None):
            raise ModelError(f"{name} has no residual blocks in the CIFAR ResNet layout to put classifiers after")
        blocks = [(f"{s}.{i}", blk) for s in ("layer1", "layer2", "layer3") if hasattr(base, s)
                  for i, blk in enumerate(getattr(base, s))]
        known = [n for n, _ in blocks]
        after = list(after)
        bad = [a for a in after if a not in known[:-1]]
        if bad or len(set(after)) != len(after) or not after:
            raise ModelError(f"exits must name distinct residual blocks of {name} before its last, got "
                             f"{', '.join(after) or 'none'}; blocks: {', '.join(known[:-1])}")
        for child, mod in base.named_children():
            self.add_module(child, mod)
        object.__setattr__(self, "_base", base)
        object.__setattr__(self, "_blocks", blocks)
        self.after = sorted(after, key=known.index)
        self.exits = nn.ModuleDict({a.replace(".", "_"): Classifier(dict(blocks)[a].conv2.out_channels,
                                                                    base.fc.out_features) for a in self.after})
        self.model_name = getattr(base, "model_name", None)
        self.model_source = getattr(base, "model_source", None)
        self.active = len(self.after) + 1
        self.last_exits: Optional[List[torch.Tensor]] = None

    @property
    def exit_names(self) -> List[str]:
        return [f"exits.{a.replace('.', '_')}" for a in self.after] + ["fc"]

    def exit_depths(self) -> List[float]:
        known = [n for n, _ in self._blocks]
        return [(known.index(a) + 1) / len(known) for a in self.after] + [1.0]

    def segments(self) -> List[Tuple[nn.Module, nn.Module]]:
        b = self._base
        parts: List[nn.Module] = [b.conv1, b.bn1, b.relu]
        out = []
        for n, blk in self._blocks:
            parts.append(blk)
            if n in self.after:
                out.append((_Segment(parts), self.exits[n.replace(".", "_")]))
                parts = []
        out.append((_Segment(parts), _Segment([b.pool, nn.Flatten(1), b.fc])))
        return out

    def forward(self, x: torch.Tensor):
        b = self._base
        h = b.relu(b.bn1(b.conv1(x)))
        outs = []
        for n, blk in self._blocks:
            h = blk(h)
            if n in self.after and (self.training or self.all_exits):
                outs.append(self.exits[n.replace(".", "_")](h))
        outs.append(b.fc(torch.flatten(b.pool(h), 1)))
        if self.training:
            self.last_exits = outs
        return tuple(outs) if self.all_exits else outs[-1]


def add_exits(base: nn.Module, after: Sequence[str]) -> ExitResNet:
    """:class:`ExitResNet` from a checkpoint's ``exits`` field (the block names)."""
    if not isinstance(after, (list, tuple)) or not all(isinstance(a, str) for a in after):
        raise ModelError(f"exits must be a list of block names, got {after!r}")
    return ExitResNet(base, after)


def has_exits(model: nn.Module) -> bool:
    """Whether ``model`` has internal classifiers (more than its final one)."""
    return isinstance(model, (CellNet, ExitResNet)) and model.active > 1 and (
        not isinstance(model, CellNet) or model.kind != "full")


"""The pruning space of a model: its coupled channel groups and the latency-relevant layer sites.

Channel groups come from Torch-Pruning's ``DependencyGraph`` (Fang et al. 2023, "DepGraph"): every set of
output channels that must be pruned together (the convolutions joined by a residual add form one group).
Layer sites come from a ``torch.fx`` trace with shape propagation: each convolution with what follows it
and fuses in the runtime (BN, ReLU), each residual add, each standalone BN (pre-activation networks),
and the classifier (global average pool + linear). A site knows which group sets its input and output
channels, so the layer configurations of any pruned variant follow from the group widths alone.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.passes.shape_prop import ShapeProp

from edgeshrink.host.latency.key import LayerKey


@dataclass(frozen=True)
class ChannelGroup:
    """Output channels pruned together. ``name`` is the first member in module order."""

    name: str
    width: int  # unpruned width
    members: Tuple[str, ...]  # conv module names whose output channels form this group


@dataclass(frozen=True)
class LayerSite:
    """Where a layer configuration occurs in the model; channels given by a group or fixed."""

    name: str
    op: str
    in_hw: Tuple[int, int]
    in_group: Optional[str]  # group setting the input channels, None when fixed
    in_channels: int  # unpruned (or fixed) input channels
    out_group: Optional[str]
    out_channels: int
    kernel: Tuple[int, int] = (1, 1)
    stride: Tuple[int, int] = (1, 1)
    padding: Tuple[int, int] = (0, 0)
    groups: int = 1
    fused: Tuple[str, ...] = ()

    def key(self, widths: Dict[str, int]) -> LayerKey:
        cin = widths[self.in_group] if self.in_group else self.in_channels
        cout = widths[self.out_group] if self.out_group else self.out_channels
        return LayerKey(self.op, cin, cout, self.in_hw, self.kernel, self.stride, self.padding,
                        self.groups, self.fused)


@dataclass
class PruningSpace:
    """A model's channel groups and layer sites, at one input shape ``(1, C, H, W)``."""

    model_name: str
    input_shape: Tuple[int, int, int, int]
    groups: List[ChannelGroup]
    sites: List[LayerSite]
    fuse_residual_add: bool = True  # residual adds fused into the conv producing their first operand
    _by_conv: Dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self._by_conv = {m: g.name for g in self.groups for m in g.members}

    @property
    def full_widths(self) -> Dict[str, int]:
        return {g.name: g.width for g in self.groups}

    def widths_from_spec(self, spec: Dict[str, int]) -> Dict[str, int]:
        """Group widths from a channel spec (conv name -> out channels); missing convs keep full width.

        Raises:
            ValueError: a spec entry names no prunable conv, or members of one group disagree.
        """
        widths: Dict[str, int] = {}
        for conv, c in spec.items():
            if conv not in self._by_conv:
                raise ValueError(f"channel spec names {conv!r}, which is not a prunable conv of {self.model_name}")
            g = self._by_conv[conv]
            if widths.setdefault(g, int(c)) != int(c):
                raise ValueError(f"channel spec: the coupled layers of group {g!r} have different widths")
        return {g.name: widths.get(g.name, g.width) for g in self.groups}

    def spec_from_widths(self, widths: Dict[str, int]) -> Dict[str, int]:
        """Channel spec (every prunable conv -> out channels) for group widths."""
        return {m: int(widths[g.name]) for g in self.groups for m in g.members}

    def keys(self, widths: Dict[str, int]) -> List[LayerKey]:
        """The layer configurations of the model at these group widths, one per site."""
        return [s.key(widths) for s in self.sites]


def channel_groups(model: nn.Module, example: torch.Tensor, ignored: Sequence[nn.Module] = ()) -> List[ChannelGroup]:
    """Coupled output-channel groups of every Conv2d, via Torch-Pruning's DependencyGraph.

    Args:
        model: the network (not modified).
        example: an input ``(1, C, H, W)``.
        ignored: modules whose output channels are not prunable (the classifier).
    """
    import torch_pruning as tp

    names = {m: n for n, m in model.named_modules()}
    order = {n: i for i, n in enumerate(names.values())}
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
    out = []
    for group in dg.get_all_groups(ignored_layers=list(ignored), root_module_types=[nn.Conv2d]):
        members = set()
        for dep, _ in group:
            mod = dep.target.module
            if isinstance(mod, nn.Conv2d) and dg.is_out_channel_pruning_fn(dep.handler):
                members.add(names[mod])
        if members:
            ms = tuple(sorted(members, key=order.__getitem__))
            out.append(ChannelGroup(ms[0], model.get_submodule(ms[0]).out_channels, ms))
    out.sort(key=lambda g: order[g.name])
    return out


def _single_user(node: fx.Node) -> Optional[fx.Node]:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def build_space(model: nn.Module, input_shape: Sequence[int], fuse_residual_add: bool = True) -> PruningSpace:
    """Trace ``model`` at ``input_shape`` ``(1, C, H, W)`` and return its :class:`PruningSpace`.

    Supported ops: Conv2d (optionally followed by BatchNorm2d and ReLU), residual ``+``, standalone
    BatchNorm2d(+ReLU), AdaptiveAvgPool2d(1) + flatten + Linear. Anything else is ignored (its cost
    ends up in the table's calibration).

    Args:
        fuse_residual_add: fuse a residual add (and a ReLU after it) into the conv(+BN) that produces its
            first operand, as ONNX Runtime's CPU NCHWc kernels do (``Conv`` with a ``Sum`` input); the
            fused conv's key lists ``("bn", "add", "relu")`` and the add has no site of its own.

    Raises:
        ValueError: the model cannot be traced by torch.fx.
    """
    model = model.eval()
    example = torch.zeros(*input_shape)
    mods = dict(model.named_modules())
    linears = [m for m in mods.values() if isinstance(m, nn.Linear)]
    groups = channel_groups(model, example, ignored=linears)
    by_conv = {m: g.name for g in groups for m in g.members}

    gm = fx.symbolic_trace(model)
    ShapeProp(gm).propagate(example)

    def shape(n: fx.Node) -> Tuple[int, ...]:
        return tuple(n.meta["tensor_meta"].shape)

    def is_mod(n: Optional[fx.Node], cls) -> bool:
        return n is not None and n.op == "call_module" and isinstance(mods[n.target], cls)

    def source_group(n: fx.Node) -> Optional[str]:
        """Group of the conv that produced tensor ``n`` (walking back through BN, ReLU, add, pool)."""
        while True:
            if is_mod(n, nn.Conv2d):
                return by_conv.get(n.target)
            tensors = [a for a in n.args if isinstance(a, fx.Node)]
            if n.op == "placeholder" or not tensors:
                return None
            n = tensors[0]

    sites: List[LayerSite] = []
    consumed = set()
    for n in gm.graph.nodes:
        if is_mod(n, nn.Conv2d):
            conv = mods[n.target]
            fused, tail = [], n
            nxt = _single_user(tail)
            if is_mod(nxt, nn.BatchNorm2d):
                fused.append("bn")
                consumed.add(nxt)
                tail, nxt = nxt, _single_user(nxt)
            if is_mod(nxt, nn.ReLU):
                fused.append("relu")
                consumed.add(nxt)
            elif (fuse_residual_add and nxt is not None and nxt.op == "call_function"
                  and nxt.target in (operator.add, torch.add) and nxt.args[0] is tail):
                fused.append("add")
                consumed.add(nxt)
                after = _single_user(nxt)
                if is_mod(after, nn.ReLU):
                    fused.append("relu")
                    consumed.add(after)
            x = n.args[0]
            sites.append(LayerSite(
                n.target, "conv2d", shape(x)[2:4], source_group(x), conv.in_channels, by_conv.get(n.target),
                conv.out_channels, tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.padding), conv.groups,
                tuple(fused)))
        elif is_mod(n, nn.BatchNorm2d) and n not in consumed:
            nxt = _single_user(n)
            fused = ("relu",) if is_mod(nxt, nn.ReLU) else ()
            if fused:
                consumed.add(nxt)
            c = shape(n)[1]
            g = source_group(n.args[0])
            sites.append(LayerSite(n.target, "bn", shape(n)[2:4], g, c, g, c, fused=fused))
        elif n.op == "call_function" and n.target in (operator.add, torch.add) and n not in consumed:
            nxt = _single_user(n)
            fused = ("relu",) if is_mod(nxt, nn.ReLU) else ()
            if fused:
                consumed.add(nxt)
            c = shape(n)[1]
            g = source_group(n)
            sites.append(LayerSite(f"add@{n.name}", "add", shape(n)[2:4], g, c, g, c, fused=fused))
        elif is_mod(n, nn.Linear):
            lin = mods[n.target]
            pooled = n.args[0]
            while pooled.op != "placeholder" and not is_mod(pooled, nn.AdaptiveAvgPool2d):
                pooled = pooled.args[0]
            if pooled.op == "placeholder":
                raise ValueError(f"{n.target}: only global-average-pool + linear classifiers are modelled")
            src = pooled.args[0]
            sites.append(LayerSite(n.target, "gap_linear", shape(src)[2:4], source_group(src), lin.in_features,
                                   None, lin.out_features))
    name = getattr(model, "model_name", type(model).__name__)
    return PruningSpace(name, tuple(int(v) for v in input_shape), groups, sites, fuse_residual_add)


def channel_grid(width: int, granularity: int) -> List[int]:
    """Channel counts reachable by pruning a group of ``width`` on a grid of ``granularity``: multiples of
    the granularity up to the width, plus the full width. ``granularity >= 1``."""
    if granularity < 1:
        raise ValueError("granularity must be >= 1")
    return sorted(set(range(granularity, width + 1, granularity)) | {width})


def enumerate_keys(space: PruningSpace, granularity: int) -> List[LayerKey]:
    """Every distinct layer configuration reachable by pruning on the channel grid (each measured once)."""
    grids = {g.name: channel_grid(g.width, granularity) for g in space.groups}
    seen: Dict[LayerKey, None] = {}
    for s in space.sites:
        cins = grids[s.in_group] if s.in_group else [s.in_channels]
        couts = grids[s.out_group] if s.out_group else [s.out_channels]
        if s.op in ("add", "bn"):  # one channel count for both sides
            pairs: Iterable[Tuple[int, int]] = ((c, c) for c in cins)
        else:
            pairs = ((ci, co) for ci in cins for co in couts)
        for ci, co in pairs:
            seen.setdefault(s.key({s.in_group: ci, s.out_group: co} if s.in_group or s.out_group else {}), None)
    return list(seen)

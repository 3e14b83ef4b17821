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
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp

from edgeshrink.host.errors import UserError
from edgeshrink.host.latency.key import ACTIVATION_OPS, LayerKey


# ops whose output channels are their input channels (one channel count per key)
SAME_CHANNEL_OPS = ("dwconv2d", "add", "mul", "scale", "bn", "maxpool", "avgpool", "gap", "concat",
                    "resize_nearest", "resize_bilinear") + ACTIVATION_OPS


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
    # a concatenation's input (or what reads one): ((group or None, unpruned channels), ...) summed; else empty
    in_parts: Tuple[Tuple[Optional[str], int], ...] = ()

    def key(self, widths: Dict[str, int]) -> LayerKey:
        if self.in_parts:
            cin = sum(widths[g] if g else c for g, c in self.in_parts)
        else:
            cin = widths[self.in_group] if self.in_group else self.in_channels
        if self.op in SAME_CHANNEL_OPS:
            cout = cin  # a depthwise conv, a pool, an activation: as many channels out as in
        else:
            cout = widths[self.out_group] if self.out_group else self.out_channels
        return LayerKey(self.op, cin, cout, self.in_hw, self.kernel, self.stride, self.padding,
                        self.groups, self.fused)


@dataclass(frozen=True)
class FusionRules:
    """Which ops the runtime fuses into the convolution before them (Conv + BN is always folded).

    ``conv_acts``: activations fused into a conv(+BN); ``conv_add``: a residual add fused into a conv(+BN) that
    produces one of its operands (ONNX Runtime's NCHWc ``Conv`` with a ``Sum`` input); ``conv_add_acts``:
    activations fused after that add. :func:`edgeshrink.host.latency.fusion.detect_fusion` reads them from the
    runtime's optimised graph of the whole network; :data:`LEGACY_FUSION` is what tables built before that
    assumed (ReLU, and add + ReLU).
    """

    conv_acts: FrozenSet[str] = frozenset({"relu"})
    conv_add: bool = True
    conv_add_acts: FrozenSet[str] = frozenset({"relu"})

    def to_dict(self) -> Dict[str, object]:
        return {"conv_acts": sorted(self.conv_acts), "conv_add": self.conv_add,
                "conv_add_acts": sorted(self.conv_add_acts)}

    @classmethod
    def from_dict(cls, d: Dict[str, object]) -> "FusionRules":
        return cls(frozenset(d.get("conv_acts", ())), bool(d.get("conv_add", False)),
                   frozenset(d.get("conv_add_acts", ())))


LEGACY_FUSION = FusionRules()
UNFUSED_ADD = FusionRules(conv_add=False, conv_add_acts=frozenset())


@dataclass
class PruningSpace:
    """A model's channel groups and layer sites, at one input shape ``(1, C, H, W)``."""

    model_name: str
    input_shape: Tuple[int, int, int, int]
    groups: List[ChannelGroup]
    sites: List[LayerSite]
    fusion: FusionRules = LEGACY_FUSION  # what the runtime fuses, so what the sites' keys hold
    _by_conv: Dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self._by_conv = {m: g.name for g in self.groups for m in g.members}

    @property
    def fuse_residual_add(self) -> bool:
        """Residual adds are fused into a conv producing one of their operands."""
        return self.fusion.conv_add

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


# Activations by the name table keys use (key.ACTIVATION_OPS): torch modules and functions, and the ONNX op the
# exporter writes.
_ACT_MODULES = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Hardswish: "hardswish", nn.Sigmoid: "sigmoid",
                nn.Hardsigmoid: "hardsigmoid", nn.SiLU: "silu"}
_ACT_FUNCTIONS = {F.relu: "relu", torch.relu: "relu", F.relu6: "relu6", F.hardswish: "hardswish",
                  torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", F.hardsigmoid: "hardsigmoid", F.silu: "silu"}
_ACT_METHODS = {"relu": "relu", "sigmoid": "sigmoid", "relu_": "relu", "sigmoid_": "sigmoid"}
ONNX_ACTIVATION = {"relu": "Relu", "relu6": "Clip", "hardswish": "HardSwish", "sigmoid": "Sigmoid",
                   "hardsigmoid": "HardSigmoid", "silu": None}  # SiLU exports as Sigmoid and Mul: never one op
_ADDS = (operator.add, torch.add, operator.sub, torch.sub)
_MULS = (operator.mul, torch.mul, operator.truediv, torch.div)
# ops that move no data a latency table needs to count (views, shape queries, dropout and identity at inference)
_FREE_FUNCTIONS = (torch.flatten, operator.getitem, getattr, torch.reshape, torch.squeeze, torch.unsqueeze,
                   F.dropout)
_FREE_METHODS = ("flatten", "view", "reshape", "size", "contiguous", "squeeze", "unsqueeze", "dim", "float")
_FREE_MODULES = (nn.Dropout, nn.Identity, nn.Flatten)


class UnsupportedOpError(UserError, ValueError):
    """A model op the pruning space cannot model (the message names the op and the node)."""


def build_space(model: nn.Module, input_shape: Sequence[int], fuse_residual_add: bool = True,
                fusion: Optional[FusionRules] = None) -> PruningSpace:
    """Trace ``model`` at ``input_shape`` ``(1, C, H, W)`` and return its :class:`PruningSpace`.

    Modelled ops (each a site keyed by its configuration): Conv2d (dense, grouped, depthwise ``dwconv2d``) with the
    BN, activation or residual add the runtime fuses into it (``fusion``); standalone BatchNorm2d; the activations
    of :data:`~edgeshrink.host.latency.key.ACTIVATION_OPS`; residual add / multiply of two tensors (``add``, ``mul``) and the channel scale of a
    squeeze-and-excitation block (``scale``: ``(1, C, H, W) * (1, C, 1, 1)``); max / average pooling; global
    average pooling (``gap``, or ``gap_linear`` with the linear classifier it feeds); linear; concatenation along
    channels; nearest and bilinear resize. Views, dropout, identity and arithmetic with a constant cost nothing
    here (their cost, if any, falls into the table's calibration).

    Args:
        fuse_residual_add: with the default ``fusion``, fuse residual adds into convs (False: separate ``add``
            sites).
        fusion: what the runtime fuses (:class:`FusionRules`); default :data:`LEGACY_FUSION`.

    Raises:
        UnsupportedOpError: the model cannot be traced by torch.fx, or holds an op not listed above (naming it).
    """
    rules = fusion or (LEGACY_FUSION if fuse_residual_add else UNFUSED_ADD)
    model = model.eval()
    example = torch.zeros(*input_shape)
    mods = dict(model.named_modules())
    linears = [m for m in mods.values() if isinstance(m, nn.Linear)]
    name = getattr(model, "model_name", type(model).__name__)
    try:
        gm = fx.symbolic_trace(model)
    except Exception as e:
        raise UnsupportedOpError(f"{name} cannot be traced by torch.fx, so its layers cannot be modelled "
                                 f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    gm.graph.eliminate_dead_code()  # what no output needs does not run (an output the selector dropped)
    groups = channel_groups(model, example, ignored=linears)
    by_conv = {m: g.name for g in groups for m in g.members}
    ShapeProp(gm).propagate(example)

    def shape(n: fx.Node) -> Tuple[int, ...]:
        return tuple(n.meta["tensor_meta"].shape)

    def hw(n: fx.Node) -> Tuple[int, int]:
        s = shape(n)
        return (int(s[2]), int(s[3])) if len(s) == 4 else (1, 1)

    def is_mod(n: Optional[fx.Node], cls) -> bool:
        return n is not None and n.op == "call_module" and isinstance(mods[n.target], cls)

    def act_of(n: Optional[fx.Node]) -> Optional[str]:
        if n is None:
            return None
        if n.op == "call_module":
            return _ACT_MODULES.get(type(mods[n.target]))
        if n.op == "call_function":
            return _ACT_FUNCTIONS.get(n.target)
        if n.op == "call_method":
            return _ACT_METHODS.get(n.target)
        return None

    def tensor_args(n: fx.Node) -> List[fx.Node]:
        return [a for a in n.args if isinstance(a, fx.Node) and "tensor_meta" in a.meta]

    def is_binary(n: Optional[fx.Node], ops) -> bool:
        if n is None:
            return False
        hit = (n.op == "call_function" and n.target in ops) or \
              (n.op == "call_method" and n.target in {o.__name__.strip("_") for o in ops if hasattr(o, "__name__")})
        return hit and len(tensor_args(n)) == 2

    def is_free(n: fx.Node) -> bool:
        if n.op in ("placeholder", "output", "get_attr"):
            return True
        if n.op == "call_module":
            return isinstance(mods[n.target], _FREE_MODULES)
        if n.op == "call_method":
            return n.target in _FREE_METHODS
        if n.op == "call_function":
            if n.target in _FREE_FUNCTIONS:
                return True
            # arithmetic with a constant (x + 3 inside a hand-written hardswish): elementwise, cheap
            return (n.target in _ADDS + _MULS) and len(tensor_args(n)) < 2
        return False

    def parts(n: fx.Node) -> Tuple[Tuple[Optional[str], int], ...]:
        """Where tensor ``n``'s channels come from: ``((group or None, unpruned channels), ...)``, walking back
        through ops that keep the channels; a concatenation contributes each of its inputs."""
        while True:
            if is_mod(n, nn.Conv2d):
                return ((by_conv.get(n.target), mods[n.target].out_channels),)
            if is_mod(n, nn.Linear) or n.op == "placeholder":
                return ((None, int(shape(n)[1])),)
            if n.op == "call_function" and n.target is torch.cat:
                return tuple(p for t in n.args[0] for p in parts(t))
            ts = tensor_args(n)
            if not ts:
                return ((None, int(shape(n)[1])),)
            if is_binary(n, _MULS) and len(shape(ts[0])) == 4 and shape(ts[0])[2:] == (1, 1):
                n = ts[1]  # the SE scale: the channels come from the feature map, not the gate
            else:
                n = ts[0]

    def group_of(n: fx.Node) -> Optional[str]:
        p = parts(n)
        return p[0][0] if len(p) == 1 else None

    def pooled_by_gap(n: fx.Node) -> Optional[fx.Node]:
        """The global average pool a Linear reads through views only, else None."""
        x = n.args[0]
        while isinstance(x, fx.Node) and is_free(x) and x.op != "placeholder" and tensor_args(x):
            x = tensor_args(x)[0]
        if is_mod(x, nn.AdaptiveAvgPool2d) and _is_global(mods[x.target].output_size) and len(x.users) == 1:
            return x
        return None

    sites: List[LayerSite] = []
    consumed = set()
    gap_of_linear = {}
    for n in gm.graph.nodes:
        if is_mod(n, nn.Linear):
            pool = pooled_by_gap(n)
            if pool is not None:
                gap_of_linear[n] = pool
                consumed.add(pool)

    def site(n: fx.Node, op: str, x: fx.Node, cout_group: Optional[str], cout: int, **kw) -> None:
        p = parts(x)
        in_group = p[0][0] if len(p) == 1 else None
        cin = sum(c for _, c in p)
        sites.append(LayerSite(kw.pop("name", n.target if n.op == "call_module" else f"{op}@{n.name}"), op, hw(x),
                               in_group, cin, cout_group, cout, in_parts=p if len(p) > 1 else (), **kw))

    for n in gm.graph.nodes:
        if n in consumed or is_free(n):
            continue
        if is_mod(n, nn.Conv2d):
            conv = mods[n.target]
            fused, tail = [], n
            nxt = _single_user(tail)
            if is_mod(nxt, nn.BatchNorm2d):
                fused.append("bn")
                consumed.add(nxt)
                tail, nxt = nxt, _single_user(nxt)
            a = act_of(nxt)
            if a is not None:
                if a in rules.conv_acts:
                    fused.append(a)
                    consumed.add(nxt)
            # a residual add is fused into the first of its producing convs (graph order) to reach it, as ONNX
            # Runtime fuses it into one of them
            elif rules.conv_add and nxt not in consumed and is_binary(nxt, (operator.add, torch.add)) \
                    and shape(tensor_args(nxt)[0]) == shape(tensor_args(nxt)[1]) and tail in nxt.args[:2]:
                fused.append("add")
                consumed.add(nxt)
                after = _single_user(nxt)
                if act_of(after) in rules.conv_add_acts:
                    fused.append(act_of(after))
                    consumed.add(after)
            depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
            # a depthwise conv's groups follow its channels, so its key keeps groups=1 and the op says it
            site(n, "dwconv2d" if depthwise else "conv2d", n.args[0], by_conv.get(n.target), conv.out_channels,
                 kernel=tuple(conv.kernel_size), stride=tuple(conv.stride), padding=tuple(conv.padding),
                 groups=1 if depthwise else conv.groups, fused=tuple(fused))
        elif is_mod(n, nn.BatchNorm2d):
            nxt = _single_user(n)
            fused = ("relu",) if act_of(nxt) == "relu" else ()
            if fused:
                consumed.add(nxt)
            g, c = group_of(n.args[0]), shape(n)[1]
            site(n, "bn", n.args[0], g, c, fused=fused)
        elif act_of(n) is not None:
            x = tensor_args(n)[0]
            site(n, act_of(n), x, group_of(x), int(shape(n)[1]))
        elif is_binary(n, _ADDS) or is_binary(n, _MULS):
            a, b = tensor_args(n)
            add = is_binary(n, _ADDS)
            if shape(a) != shape(b):
                big = a if len(shape(a)) == 4 and shape(a)[2:] != (1, 1) else b
                op = "add" if add else "scale"
            else:
                big, op = a, "add" if add else "mul"
            fused = ()
            nxt = _single_user(n)
            if op == "add" and act_of(nxt) == "relu":
                fused = ("relu",)
                consumed.add(nxt)
            c = int(shape(n)[1])
            site(n, op, big, group_of(big), c, fused=fused, name=f"{op}@{n.name}")
        elif is_mod(n, (nn.MaxPool2d, nn.AvgPool2d)) or (n.op == "call_function"
                                                         and n.target in (F.max_pool2d, F.avg_pool2d)):
            k, st, pad = _pool_params(mods[n.target] if n.op == "call_module" else None, n)
            op = "maxpool" if (is_mod(n, nn.MaxPool2d) or n.target is F.max_pool2d) else "avgpool"
            x = tensor_args(n)[0]
            site(n, op, x, group_of(x), int(shape(n)[1]), kernel=k, stride=st, padding=pad)
        elif is_mod(n, nn.AdaptiveAvgPool2d) and not _is_global(mods[n.target].output_size):
            # to a fixed size that divides the input: the average pooling of kernel = stride = input / output
            x = tensor_args(n)[0]
            (ih, iw), (oh, ow) = hw(x), hw(n)
            if ih % oh or iw % ow:
                raise UnsupportedOpError(f"{name}: adaptive average pooling {ih}x{iw} -> {oh}x{ow} at node {n.name} "
                                         "(modelled where the output size divides the input)")
            k = (ih // oh, iw // ow)
            site(n, "avgpool", x, group_of(x), int(shape(n)[1]), kernel=k, stride=k, padding=(0, 0))
        elif (is_mod(n, nn.AdaptiveAvgPool2d) and _is_global(mods[n.target].output_size)) or \
                (n.op == "call_function" and n.target is F.adaptive_avg_pool2d and _is_global(n.args[1])) or \
                (n.op == "call_method" and n.target == "mean" and tuple(n.args[1:2]) in (((2, 3),), ([2, 3],))):
            x = tensor_args(n)[0]
            site(n, "gap", x, group_of(x), int(shape(x)[1]))
        elif is_mod(n, nn.Linear):
            lin = mods[n.target]
            pool = gap_of_linear.get(n)
            if pool is not None:
                src = pool.args[0]
                site(n, "gap_linear", src, None, lin.out_features)
            else:  # a hidden linear (its width is not pruned) or one reading a flattened feature map (kept fixed)
                sites.append(LayerSite(n.target, "linear", (1, 1), None, lin.in_features, None, lin.out_features))
        elif n.op == "call_function" and n.target is torch.cat:
            dim = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else 0)
            if dim not in (1, -3):
                raise UnsupportedOpError(f"{name}: torch.cat along dim {dim} at node {n.name} (only channel "
                                         "concatenation, dim=1, is modelled)")
            p = parts(n)
            ins = list(n.args[0])
            sites.append(LayerSite(f"concat@{n.name}", "concat", hw(ins[0]), None, sum(c for _, c in p), None,
                                   sum(c for _, c in p), groups=len(ins), in_parts=p))
        elif is_mod(n, nn.Upsample) or (n.op == "call_function" and n.target is F.interpolate):
            x = tensor_args(n)[0]
            mode = mods[n.target].mode if n.op == "call_module" else n.kwargs.get("mode", "nearest")
            if mode not in ("nearest", "bilinear"):
                raise UnsupportedOpError(f"{name}: resize mode {mode!r} at node {n.name} (nearest and bilinear are "
                                         "modelled)")
            (ih, iw), (oh, ow) = hw(x), hw(n)
            site(n, f"resize_{mode}", x, group_of(x), int(shape(n)[1]), stride=(oh // ih, ow // iw))
        else:
            what = type(mods[n.target]).__name__ if n.op == "call_module" else getattr(n.target, "__name__",
                                                                                        str(n.target))
            raise UnsupportedOpError(f"{name}: op {what} (node {n.name}) is not one the latency table models; "
                                     "supported: conv (dense, grouped, depthwise), BN, ReLU/ReLU6/hardswish/SiLU/"
                                     "sigmoid/hardsigmoid, add, multiply, max/avg/global pooling, linear, concat, "
                                     "resize")
    return PruningSpace(name, tuple(int(v) for v in input_shape), groups, sites, rules)


def _is_global(size) -> bool:
    return size == 1 or size == (1, 1) or size == [1, 1]


def _pool_params(mod: Optional[nn.Module], n: fx.Node) -> Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int]]:
    def pair(v) -> Tuple[int, int]:
        return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))

    if mod is not None:
        k, st, pad = mod.kernel_size, mod.stride, mod.padding
    else:
        args = list(n.args[1:]) + [None, None, None]
        k = n.kwargs.get("kernel_size", args[0])
        st = n.kwargs.get("stride", args[1]) or k
        pad = n.kwargs.get("padding", args[2] if args[2] is not None else 0)
    return pair(k), pair(st if st is not None else k), pair(pad)


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
        if s.in_parts:
            cins = _reachable_sums([grids[g] if g else [c] for g, c in s.in_parts])
        else:
            cins = grids[s.in_group] if s.in_group else [s.in_channels]
        couts = grids[s.out_group] if s.out_group else [s.out_channels]
        if s.op in SAME_CHANNEL_OPS:  # one channel count for both sides
            pairs: Iterable[Tuple[int, int]] = ((c, c) for c in cins)
        else:
            pairs = ((ci, co) for ci in cins for co in couts if ci % s.groups == 0 and co % s.groups == 0)
        for ci, co in pairs:
            seen.setdefault(LayerKey(s.op, ci, co, s.in_hw, s.kernel, s.stride, s.padding, s.groups, s.fused), None)
    return list(seen)


def _reachable_sums(grids: Sequence[Sequence[int]]) -> List[int]:
    """Every total of one value from each grid (a concatenation's channel counts)."""
    totals = {0}
    for g in grids:
        totals = {t + v for t in totals for v in g}
    return sorted(totals)

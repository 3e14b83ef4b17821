"""The key of a latency table entry: one layer configuration (torch-free, shared by builders and workers)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Dict, Tuple


# The activations a table models, by the names its keys use (an op of their own, or fused into a conv's key).
ACTIVATION_OPS = ("relu", "relu6", "hardswish", "sigmoid", "hardsigmoid", "silu")


@dataclass(frozen=True)
class LayerKey:
    """One layer configuration: the key of a latency table entry (never a layer name)."""

    op: str  # "conv2d", "dwconv2d", "add", "bn", "gap_linear", ... (table.OPS)
    in_channels: int
    out_channels: int
    in_hw: Tuple[int, int]  # input height, width
    kernel: Tuple[int, int] = (1, 1)
    stride: Tuple[int, int] = (1, 1)
    padding: Tuple[int, int] = (0, 0)
    groups: int = 1
    fused: Tuple[str, ...] = ()  # ops that follow and fuse in the runtime, e.g. ("bn", "relu")

    def to_dict(self) -> Dict[str, object]:
        d = asdict(self)
        for k in ("in_hw", "kernel", "stride", "padding", "fused"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, object]) -> "LayerKey":
        return cls(
            op=str(d["op"]), in_channels=int(d["in_channels"]), out_channels=int(d["out_channels"]),
            in_hw=tuple(d["in_hw"]), kernel=tuple(d.get("kernel", (1, 1))), stride=tuple(d.get("stride", (1, 1))),
            padding=tuple(d.get("padding", (0, 0))), groups=int(d.get("groups", 1)), fused=tuple(d.get("fused", ())),
        )

    def macs(self) -> int:
        """Multiply-accumulates of this layer at batch 1."""
        h, w = self.in_hw
        if self.op == "conv2d":
            oh = (h + 2 * self.padding[0] - self.kernel[0]) // self.stride[0] + 1
            ow = (w + 2 * self.padding[1] - self.kernel[1]) // self.stride[1] + 1
            return oh * ow * self.out_channels * (self.in_channels // self.groups) * self.kernel[0] * self.kernel[1]
        if self.op == "dwconv2d":
            oh = (h + 2 * self.padding[0] - self.kernel[0]) // self.stride[0] + 1
            ow = (w + 2 * self.padding[1] - self.kernel[1]) // self.stride[1] + 1
            return oh * ow * self.in_channels * self.kernel[0] * self.kernel[1]
        if self.op in ("gap_linear", "linear"):
            return self.in_channels * self.out_channels
        return 0


@lru_cache(maxsize=None)
def family(key: LayerKey) -> LayerKey:
    """A configuration's layer family: its key with the channel counts zeroed (same op, resolution, kernel,
    stride, padding, groups, fusion). Interpolation, smoothing and heatmaps work within a family; calibration
    corrects per family. The one definition of a family in the project."""
    return replace(key, in_channels=0, out_channels=0)


def family_at_in(key: LayerKey) -> LayerKey:
    """The family at the key's input channel count (output channels zeroed)."""
    return replace(key, out_channels=0)


def family_at_out(key: LayerKey) -> LayerKey:
    """The family at the key's output channel count (input channels zeroed)."""
    return replace(key, in_channels=0)


def family_name(key: LayerKey) -> str:
    """A family's name, safe in file names: ``conv2d_k3_s1_32x32_bn+relu``, ``gap_linear_8x8_plain``, with
    ``_g<groups>`` for grouped convolutions."""
    fused = "+".join(key.fused) or "plain"
    if key.op in ("conv2d", "dwconv2d"):
        groups = f"_g{key.groups}" if key.groups != 1 else ""
        return f"{key.op}_k{key.kernel[0]}_s{key.stride[0]}{groups}_{key.in_hw[0]}x{key.in_hw[1]}_{fused}"
    return f"{key.op}_{key.in_hw[0]}x{key.in_hw[1]}_{fused}"

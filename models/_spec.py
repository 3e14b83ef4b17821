"""What the architectures share: the model errors, channel specs (conv module name -> output channels) and how
a model reads its widths from one."""

from __future__ import annotations

from typing import Callable, Dict, Sequence, Set

import torch.nn as nn


class ModelError(ValueError):
    """A model that cannot be built as asked (the message says why)."""


class UnknownModelError(ModelError):
    """Raised for a model name that is not registered."""


class ChannelSpecError(ModelError):
    """Raised for a channel spec that does not fit the architecture (unknown layer, bad width, broken coupling)."""


def channel_spec(model: nn.Module) -> Dict[str, int]:
    """The channel spec of a built model: every Conv2d's module name -> its output channels (a convolution in its
    eigenbasis form, :mod:`.eigen`, counts as the one layer it replaces; modules marked ``channel_spec_skip``, such
    as SkipNet gates, are left out)."""
    out, inside = {}, []
    for n, m in model.named_modules():
        if any(n.startswith(p) for p in inside):
            continue
        if getattr(m, "channel_spec_skip", False):
            inside.append(n + ".")
        elif hasattr(m, "eigen_ranks"):
            out[n] = m.out_channels
            inside.append(n + ".")
        elif isinstance(m, nn.Conv2d):
            out[n] = m.out_channels
    return out


class WidthReader:
    """Reads ``spec[name]`` with a default and remembers which names were asked for.

    After the model is built, :meth:`check_consumed` rejects spec keys the architecture does not have,
    so a spec for another model fails loudly instead of being silently ignored.
    """

    def __init__(self, spec: Dict[str, int]):
        self.spec = dict(spec)
        self.asked: Set[str] = set()

    def __call__(self, name: str, default: int) -> int:
        self.asked.add(name)
        value = self.spec.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ChannelSpecError(f"channel spec: {name!r} must be a positive integer, got {value!r}")
        return value

    def check_consumed(self, model_name: str) -> None:
        unknown = sorted(set(self.spec) - self.asked)
        if unknown:
            raise ChannelSpecError(
                f"channel spec has layers that {model_name} does not have: {', '.join(unknown[:5])}"
                + (" ..." if len(unknown) > 5 else "")
            )


def build_stages(module: nn.Module, width: WidthReader, block: Callable[..., nn.Module], in_planes: int,
                 default_in: int, stage_widths: Sequence[int], blocks_per_stage: int, shortcut: str) -> int:
    """Add ``layer1..layerS`` (``nn.Sequential`` of residual blocks) to ``module``; returns the output width.

    The first block of every stage after the first has stride 2. Where a block changes the stride or the
    unpruned width it gets a projection shortcut named ``{block}.{shortcut}``; which blocks have one
    follows the unpruned widths, never the spec, so a pruned model keeps its architecture.
    ``block(in_planes, mid, out, stride, projection, name)`` builds one block.
    """
    for s, default_out in enumerate(stage_widths, start=1):
        blocks = []
        for b in range(blocks_per_stage):
            name = f"layer{s}.{b}"
            stride = 2 if (s > 1 and b == 0) else 1
            projection = stride != 1 or default_in != default_out
            out = width(f"{name}.conv2", default_out)
            if projection and width(f"{name}.{shortcut}", out) != out:
                raise ChannelSpecError(f"channel spec: {name}.conv2 and {name}.{shortcut} must be equal")
            mid = width(f"{name}.conv1", default_out)
            blocks.append(block(in_planes, mid, out, stride, projection, name))
            in_planes, default_in = out, default_out
        setattr(module, f"layer{s}", nn.Sequential(*blocks))
    return in_planes


def init_weights_(model: nn.Module) -> None:
    """He (Kaiming) normal init for convs (fan-out, ReLU), BN to identity, zero linear biases; in place."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)

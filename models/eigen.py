"""A convolution in its Kronecker-factored eigenbasis form (EigenDamage, Wang et al. ICML 2019): three layers in
sequence, a ``kh x kw`` rotation ``C_in -> r_in``, the 1x1 core ``r_in -> r_out`` and the 1x1 rotation back
``r_out -> C_out``. It keeps the layer's interface (``in_channels``, ``out_channels``), so a network with such layers
keeps its channel spec; ``eigen_ranks`` is ``(r_in, r_out)``. The weights come from the eigenbasis
(:func:`edgeshrink.host.prune.eigendamage.eigen_conv`); a checkpoint rebuilds the shapes with
:func:`apply_eigen_` (``create_model(..., eigen={layer: [r_in, r_out]})``) and loads them.
"""

from __future__ import annotations

from typing import Dict, Sequence

import torch.nn as nn

from ._spec import ChannelSpecError


class EigenConv(nn.Sequential):
    """Shapes: ``(N, C_in, H, W) -> (N, C_out, H', H')`` as the convolution it replaces (stride, padding and
    dilation on the first layer; a bias, when the layer had one, on the first layer's constant direction)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride, padding, dilation, bias: bool,
                 r_in: int, r_out: int):
        if min(r_in, r_out) < 1:
            raise ChannelSpecError(f"an eigenbasis layer keeps at least one direction each side, got {r_in}, {r_out}")
        super().__init__(nn.Conv2d(in_channels, r_in, kernel_size, stride, padding, dilation, bias=bias),
                         nn.Conv2d(r_in, r_out, 1, bias=False), nn.Conv2d(r_out, out_channels, 1, bias=False))
        self.in_channels, self.out_channels = in_channels, out_channels
        self.eigen_ranks = (int(r_in), int(r_out))


def eigen_layers(model: nn.Module) -> Dict[str, list]:
    """``{layer name: [r_in, r_out]}`` of the model's eigenbasis layers."""
    return {n: list(m.eigen_ranks) for n, m in model.named_modules() if isinstance(m, EigenConv)}


def apply_eigen_(model: nn.Module, eigen: Dict[str, Sequence[int]]) -> nn.Module:
    """Replace each named Conv2d by an :class:`EigenConv` of the given ranks (placeholder weights), in place.

    Raises:
        ChannelSpecError: a name that is not an ungrouped Conv2d of the model, or ranks that are not two positive
            integers.
    """
    for name, ranks in eigen.items():
        conv = dict(model.named_modules()).get(name)
        if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
            raise ChannelSpecError(f"eigen spec names {name!r}, which is not an ungrouped Conv2d of the model")
        if not (isinstance(ranks, (list, tuple)) and len(ranks) == 2
                and all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in ranks)):
            raise ChannelSpecError(f"eigen spec of {name!r} must be [r_in, r_out], positive integers, got {ranks!r}")
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child,
                EigenConv(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          conv.dilation, conv.bias is not None, *ranks))
    return model

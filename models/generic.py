"""Channel specs for any network: shrink a freshly built (unpruned) model to a channel spec with Torch-Pruning's
dependency graph, so architectures without a hand-written width reader (a user's model, the MobileNets, the
ImageNet ResNets) are rebuilt from a spec with no per-architecture code.

The kept channels are the first ``width`` of each group: the weights of a model rebuilt this way are
placeholders that a checkpoint's ``state_dict`` then replaces.
"""

from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn as nn

from ._spec import ChannelSpecError


def apply_channel_spec_(model: nn.Module, spec: Dict[str, int], input_shape: Sequence[int]) -> nn.Module:
    """Shrink ``model`` in place so each conv named in ``spec`` has that many output channels.

    Args:
        model: the unpruned network.
        spec: conv module name -> output channels (``<=`` the unpruned width).
        input_shape: ``(1, C, H, W)`` to trace the dependency graph at.

    Returns:
        ``model``.

    Raises:
        ChannelSpecError: a name that is not a Conv2d of the model, a width outside ``1..unpruned``, coupled
            convs given different widths, or a group Torch-Pruning refuses.
    """
    import torch_pruning as tp

    if not spec:
        return model
    mods = dict(model.named_modules())
    for name, c in spec.items():
        if not isinstance(mods.get(name), nn.Conv2d):
            raise ChannelSpecError(f"channel spec names {name!r}, which is not a Conv2d of "
                                   f"{getattr(model, 'model_name', type(model).__name__)}")
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= mods[name].out_channels:
            raise ChannelSpecError(f"channel spec: {name!r} must be 1..{mods[name].out_channels}, got {c!r}")
    was = model.training
    model.eval()
    try:
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(*input_shape), verbose=False)
    except Exception as e:
        raise ChannelSpecError(f"cannot trace the model to apply a channel spec ({type(e).__name__}: {e})") from None
    done = set()
    for name, c in spec.items():
        if name in done:
            continue
        conv = mods[name]
        group = dg.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=list(range(conv.out_channels)))
        members = [dep.target.module for dep, _ in group
                   if isinstance(dep.target.module, nn.Conv2d) and dg.is_out_channel_pruning_fn(dep.handler)]
        names = [n for n, m in mods.items() if any(m is x for x in members)]
        widths = {spec[n] for n in names if n in spec}
        if len(widths) > 1:
            raise ChannelSpecError(f"channel spec: the coupled convs {', '.join(names)} have different widths "
                                   f"{sorted(widths)}")
        done.update(names)
        if c < conv.out_channels:
            group = dg.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=list(range(c, conv.out_channels)))
            if not dg.check_pruning_group(group):
                raise ChannelSpecError(f"Torch-Pruning refused to prune {name} to {c} channels")
            group.prune()
    model.train(was)
    return model

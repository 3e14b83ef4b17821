"""Physical channel removal through Torch-Pruning's DependencyGraph: no per-architecture surgery.

Removing output channels of one member of a coupled group (e.g. a stage's residual width) removes them
from every conv, BN and consumer in the group, so the pruned network stays valid.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn


def filter_l2_importance(model: nn.Module, members: Sequence[str]) -> torch.Tensor:
    """Importance of each output channel of a coupled group: the sum over the group's convolutions of
    the L2 norm of the channel's filter (Li et al. 2017; NetAdapt, Yang et al. 2018, Sec. 4.1 keeps the
    filters with the largest L2 norm). Returns shape ``(C,)``."""
    total = None
    for name in members:
        w = model.get_submodule(name).weight.detach()
        norms = w.flatten(1).norm(p=2, dim=1)
        total = norms if total is None else total + norms
    return total


def prune_group_(model: nn.Module, members: Sequence[str], keep: int, input_shape: Sequence[int]) -> Sequence[int]:
    """Keep the ``keep`` output channels of the group with the largest filter L2 norm, in place.

    Args:
        model: the network; modified in place.
        members: conv module names whose output channels are coupled (one :class:`ChannelGroup`).
        keep: channels to keep, ``1 <= keep <= current width``.
        input_shape: ``(1, C, H, W)`` for tracing the dependency graph.

    Returns:
        The indices of the kept channels (ascending, in the pre-pruning numbering).

    Raises:
        ValueError: ``keep`` out of range, or Torch-Pruning refuses the group.
    """

    first = model.get_submodule(members[0])
    width = first.out_channels
    if not 1 <= keep <= width:
        raise ValueError(f"cannot keep {keep} of {width} channels of {members[0]}")
    if keep == width:
        return list(range(width))
    scores = filter_l2_importance(model, members)
    kept = sorted(torch.topk(scores, keep).indices.tolist())
    remove_channels_(model, members[0], sorted(set(range(width)) - set(kept)), input_shape)
    return kept


def dependency_graph(model: nn.Module, input_shape: Sequence[int]):
    """Torch-Pruning's DependencyGraph of ``model``, traced in eval mode at ``(1, C, H, W)``; the mode is restored. A
    model with a ``dependency_forward(x)`` is traced through it (a gated network: its gates read the streams, but
    their decisions must not be taken for channels of what they multiply)."""
    import torch_pruning as tp

    was = model.training
    model.eval()
    fwd = getattr(model, "dependency_forward", None)
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(*input_shape), verbose=False,
                                               **({"forward_fn": lambda m, x: fwd(x)} if fwd else {}))
    model.train(was)
    return dg


def remove_channels_(model: nn.Module, conv: str, drop: Sequence[int], input_shape: Sequence[int]) -> None:
    """Remove output channels ``drop`` of conv ``conv`` and of everything coupled to it, in place.

    Raises:
        ValueError: Torch-Pruning refuses the group.
    """
    import torch_pruning as tp

    if not drop:
        return
    dg = dependency_graph(model, input_shape)
    group = dg.get_pruning_group(model.get_submodule(conv), tp.prune_conv_out_channels, idxs=list(drop))
    if not dg.check_pruning_group(group):
        raise ValueError(f"Torch-Pruning refused to prune {len(drop)} channels of {conv}")
    group.prune()

"""SNIP's connection sensitivity (Lee et al. 2019, "SNIP: Single-shot Network Pruning based on Connection
Sensitivity", Eq. 6): what ``host prune --method snip`` ranks channels by and what growth (:mod:`edgeshrink.host.dynamic.grow`)
prunes each new block with."""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def weight(m: nn.Module) -> torch.Tensor:
    """The weight a layer computes with (under a mask: the original times the mask)."""
    return m.weight_orig * m.weight_mask if hasattr(m, "weight_mask") else m.weight


def snip_scores(model: nn.Module, layers: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor,
                loss_fn: Optional[Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]] = None
                ) -> List[torch.Tensor]:
    """SNIP's connection sensitivity (Lee et al. 2019, Eq. 6) of each weight of ``layers``: ``|w * dL/dw|`` on the
    batch ``(x, y)``, normalised by its sum over all of them (they sum to 1; a masked weight scores 0).

    Args:
        loss_fn: ``loss_fn(model, x, y)``; default the cross-entropy of ``model(x)``.

    Returns:
        One tensor per layer, of its weight's shape.

    The batch statistics of BatchNorm are used (training mode) without updating the running ones; the model's mode
    and its parameters' gradients are restored.
    """
    was = model.training
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    saved = {p: p.grad for p in model.parameters()}
    model.train()
    for m in bns:
        m.momentum = 0.0  # batch statistics, running statistics left as they are
    try:
        params = [m.weight_orig if hasattr(m, "weight_mask") else m.weight for m in layers]
        for p in params:
            p.grad = None
        loss = loss_fn(model, x, y) if loss_fn is not None else F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        raw = [(weight(m) * (g if g is not None else torch.zeros_like(p))).abs().detach()
               for m, p, g in zip(layers, params, grads)]
    finally:
        for m, mo in zip(bns, momenta):
            m.momentum = mo
        for p, g in saved.items():
            p.grad = g
        model.train(was)
    total = sum(float(r.sum()) for r in raw) or 1.0
    return [r / total for r in raw]

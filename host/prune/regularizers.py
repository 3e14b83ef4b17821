"""The regularisers of the training-time pruning methods, each a ``regularize(model)`` call after ``loss.backward()``
that adds the penalty's (sub)gradient to ``.grad``, for users' own training loops as for :mod:`.methods`.

- :class:`SlimmingRegularizer`: network slimming (Liu et al. 2017, Eq. 1: ``L = loss + lambda * sum g(gamma)`` over the
  BN scale factors, ``g = |.|``), or the smooth-L1 ``g`` the Neural Network Shrinking work used (Huber with
  ``beta = 1``: gradient ``gamma`` inside ``[-1, 1]``, ``sign(gamma)`` outside).
- :class:`SWDRegularizer`: Selective Weight Decay (Tessier et al. 2022, Eq. 3: ``L = loss + a(t) * mu / 2 * ||w_T||^2``
  over the weights ``T`` the criterion would prune now, ``a(t) = a_min * (a_max / a_min) ** (t / T)``).
- :class:`MorphNetRegularizer`: MorphNet (Gordon et al. 2018, Eq. 2) with the resource a latency table: ``lambda *
  sum over channels of cost_c * |gamma_c|``, ``cost_c`` the channel's marginal latency (ms) by the table.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Sequence

import torch
import torch.nn as nn

from edgeshrink.host.prune.config import PENALTIES  # noqa: F401 - its one definition (torch-free)


def _add_grad(p: torch.Tensor, g: torch.Tensor) -> None:
    if p.grad is None:
        p.grad = g.clone()
    else:
        p.grad.add_(g)


class SlimmingRegularizer:
    """Sparsity on every BatchNorm2d scale factor of ``model``.

    Args:
        strength: ``lambda`` (> 0); 1e-5 is the default for ``l1``, 1e-6 for ``smooth-l1``.
        penalty: ``"l1"`` (subgradient ``sign(gamma)``) or ``"smooth-l1"``.

    Raises:
        ValueError: a strength not > 0 or an unknown penalty.
    """

    def __init__(self, model: nn.Module, strength: float, penalty: str = "l1"):
        if not strength > 0 or penalty not in PENALTIES:
            raise ValueError(f"strength must be > 0 and penalty one of {PENALTIES}")
        self.strength, self.penalty = float(strength), penalty
        self.bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.weight is not None]

    def gradient(self, gamma: torch.Tensor) -> torch.Tensor:
        """The penalty's (sub)gradient at ``gamma``, shape of ``gamma``."""
        if self.penalty == "l1":
            return self.strength * torch.sign(gamma)
        return self.strength * torch.where(gamma.abs() < 1, gamma, torch.sign(gamma))

    def regularize(self, model: nn.Module = None) -> None:
        """Add the gradient to every BN scale's ``.grad`` (call after ``loss.backward()``)."""
        for bn in self.bns:
            _add_grad(bn.weight, self.gradient(bn.weight.detach()))


class SWDRegularizer:
    """Selective Weight Decay on a target set of output channels.

    The target set is ``{group: channel indices}``: for each channel the filter (and bias) of every coupled
    convolution of its group and the scale and shift of the group's BNs receive ``a(t) * mu * w``.

    Args:
        members: ``{group: [conv, ...]}`` (the group's convolutions, output channels coupled).
        bns: ``{group: [bn, ...]}`` (:func:`edgeshrink.host.prune.criteria.group_batchnorms`).
        mu: the decay strength (> 0), as the weight decay's.
        a_min, a_max: ``0 < a_min <= a_max``, the range of ``a(t)``.
        total_steps: training steps ``T`` over which ``a`` grows.

    Raises:
        ValueError: bad strengths or a_min > a_max.
    """

    def __init__(self, members: Dict[str, Sequence[nn.Conv2d]], bns: Dict[str, Sequence[nn.BatchNorm2d]], mu: float,
                 a_min: float, a_max: float, total_steps: int):
        if not (mu > 0 and 0 < a_min <= a_max and total_steps >= 1):
            raise ValueError("SWD needs mu > 0, 0 < a_min <= a_max and total_steps >= 1")
        self.members, self.bns = members, bns
        self.mu, self.a_min, self.a_max, self.total = float(mu), float(a_min), float(a_max), int(total_steps)
        self.step_count = 0
        self.masks: List[tuple] = []  # (parameter, mask of its target entries)

    def a(self, step: int) -> float:
        """``a(t) = a_min * (a_max / a_min) ** (t / T)``, ``t`` clipped to ``[0, T]``."""
        t = min(max(step, 0), self.total) / self.total
        return self.a_min * (self.a_max / self.a_min) ** t

    def set_targets(self, targets: Dict[str, Iterable[int]]) -> None:
        """The channels to decay from now on, ``{group: indices}`` (recomputed as the weights move)."""
        masks = []
        for g, idx in targets.items():
            idx = torch.as_tensor(sorted(idx), dtype=torch.long)
            if idx.numel() == 0:
                continue
            for mod in list(self.members.get(g, ())) + list(self.bns.get(g, ())):
                for p in (mod.weight, mod.bias):
                    if p is None:
                        continue
                    m = torch.zeros_like(p, dtype=torch.bool)
                    m[idx] = True
                    masks.append((p, m))
        self.masks = masks

    def regularize(self, model: nn.Module = None) -> None:
        """Add ``a(t) * mu * w`` to the target weights' ``.grad`` and advance ``t`` by one step."""
        coef = self.a(self.step_count) * self.mu
        for p, m in self.masks:
            _add_grad(p, coef * p.detach() * m)
        self.step_count += 1


class MorphNetRegularizer:
    """The latency-weighted L1 penalty on BN scales.

    Args:
        bns: ``{group: [bn, ...]}``.
        strength: ``lambda`` (> 0), per ms.

    ``costs`` (``{group: ms per channel}``) are set with :meth:`set_costs`, from
    :func:`edgeshrink.host.prune.criteria.marginal_ms` at the current alive widths.
    """

    def __init__(self, bns: Dict[str, Sequence[nn.BatchNorm2d]], strength: float):
        if not strength > 0:
            raise ValueError("MorphNet's strength must be > 0")
        self.bns, self.strength = bns, float(strength)
        self.costs: Dict[str, float] = {}

    def set_costs(self, costs: Dict[str, float]) -> None:
        self.costs = {g: max(float(c), 0.0) for g, c in costs.items()}

    def regularize(self, model: nn.Module = None) -> None:
        """Add ``lambda * cost_g * sign(gamma)`` to every BN scale of each group ``g``."""
        for g, bns in self.bns.items():
            c = self.strength * self.costs.get(g, 0.0)
            if c:
                for bn in bns:
                    _add_grad(bn.weight, c * torch.sign(bn.weight.detach()))

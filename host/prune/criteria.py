"""Criterion-based channel selection to a latency budget: per-channel scores of each coupled channel group from
Torch-Pruning's importances, then the widths the table says meet the budget, then the physical pruning.

Every method but NetAdapt ends here: it scores channels (filter norm, Taylor, BN scale, its own regularised BN
scale) and asks :func:`widths_to_budget` which channels go. Widths move in steps of the table's channel grid, so
every network a method proposes has table entries; :func:`widths_at_rate` (``--pruning-rate``) is the one way off
the grid, and its latency is predicted at the widths rounded up to the grid (:func:`grid_ceil`).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from edgeshrink.host.errors import BudgetError
from edgeshrink.host.latency.space import PruningSpace
from edgeshrink.host.prune.config import RANKS, SCOPES  # noqa: F401 - their one definition (torch-free)
from edgeshrink.host.prune.surgery import dependency_graph as _dependency_graph, remove_channels_

Scores = Dict[str, torch.Tensor]  # group name -> (current width,) score of each output channel, larger = keep




def group_scores(model: nn.Module, space: PruningSpace, importance, input_shape: Sequence[int]) -> Scores:
    """Score every output channel of every channel group with a Torch-Pruning importance.

    Args:
        model: the network at its current widths (a Taylor importance needs ``.grad`` filled by the caller).
        space: the unpruned model's pruning space (group names are its first member convs).
        importance: a ``tp.importance.Importance`` (``MagnitudeImportance``, ``TaylorImportance``,
            ``BNScaleImportance``), called on each group's full index list.

    Returns:
        ``{group: scores of shape (width,)}``, float64 on the CPU.
    """
    import torch_pruning as tp

    dg = _dependency_graph(model, input_shape)
    out: Scores = {}
    for g in space.groups:
        conv = model.get_submodule(g.members[0])
        grp = dg.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=list(range(conv.out_channels)))
        s = importance(grp)
        if s is None:
            raise ValueError(f"{type(importance).__name__} gives no score for group {g.name}")
        out[g.name] = s.detach().double().cpu()
    return out


def group_batchnorms(model: nn.Module, space: PruningSpace, input_shape: Sequence[int]) -> Dict[str, List[nn.BatchNorm2d]]:
    """The BatchNorm2d layers whose channels each group prunes (through the dependency graph: the BNs after the
    group's convolutions), ``{group: [bn, ...]}``."""
    import torch_pruning as tp

    dg = _dependency_graph(model, input_shape)
    out: Dict[str, List[nn.BatchNorm2d]] = {}
    for g in space.groups:
        conv = model.get_submodule(g.members[0])
        grp = dg.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=[0])
        bns = []
        for dep, _ in grp:
            m = dep.target.module
            if isinstance(m, nn.BatchNorm2d) and all(m is not b for b in bns):
                bns.append(m)
        out[g.name] = bns
    return out


def bn_scale_scores(model: nn.Module, space: PruningSpace, input_shape: Sequence[int],
                    bns_by_group: Optional[Dict[str, List[nn.BatchNorm2d]]] = None) -> Scores:
    """Network slimming's channel score (Liu et al. 2017): |gamma| of the channel's BN scale, the mean over the BNs
    of a coupled group, not normalised (one global threshold over the network, as the paper). ``bns_by_group``:
    :func:`group_batchnorms` of the model at its current widths, when already known."""
    out = {}
    for g, bns in (bns_by_group or group_batchnorms(model, space, input_shape)).items():
        if not bns:
            raise ValueError(f"channel group {g} has no BatchNorm2d; network slimming needs one per group")
        out[g] = torch.stack([b.weight.detach().abs().double() for b in bns]).mean(dim=0)
    return out


def marginal_ms(latency, widths: Dict[str, int], grids: Dict[str, List[int]]) -> Dict[str, float]:
    """Each group's marginal latency per channel (ms) at ``widths``: the latency the table predicts saved by the
    group's next step down its grid, divided by the channels that step removes; at the bottom of the grid, the
    step up from there. Groups whose grid has one width get 0."""
    here = latency.predict_ms(widths)
    out = {}
    for g, grid in grids.items():
        w = widths[g]
        lower = [v for v in grid if v < w]
        if lower:
            out[g] = (here - latency.predict_ms({**widths, g: lower[-1]})) / (w - lower[-1])
            continue
        upper = [v for v in grid if v > w]
        out[g] = (latency.predict_ms({**widths, g: upper[0]}) - here) / (upper[0] - w) if upper else 0.0
    return out


def grid_floor(grid: List[int], value: float) -> int:
    """The largest grid width at or below ``value``, the smallest grid width when none is."""
    below = [v for v in grid if v <= value + 1e-9]
    return below[-1] if below else grid[0]


def grid_ceil(grid: List[int], value: float) -> int:
    """The smallest grid width at or above ``value``, the largest when none is."""
    above = [v for v in grid if v >= value - 1e-9]
    return above[0] if above else grid[-1]


def check_reachable(latency, grids: Dict[str, List[int]], budget_ms: float, grid_note: str,
                    floor: Optional[Dict[str, int]] = None, prefix: str = "") -> float:
    """The one reachability check before any pruning work: the narrowest network a method may reach (every group at
    the bottom of its grid, or at ``floor`` where given) must be predicted at or below ``budget_ms``.

    Args:
        grid_note: how the grid is described in the message ("granularity 8", "granularity 8, safe floor 0.25").
        prefix: what the message starts with ("--method magnitude: ").

    Returns:
        The narrowest network's prediction (ms).

    Raises:
        BudgetError: one line naming the budget and the floor's prediction.
    """
    narrow = {g: (floor or {}).get(g, grid[0]) for g, grid in grids.items()}
    ms = latency.predict_ms(narrow)
    if ms > budget_ms:
        raise BudgetError(f"{prefix}budget {budget_ms:.4f} ms is unreachable: the narrowest network on the channel "
                          f"grid ({grid_note}) is predicted at {ms:.4f} ms")
    return ms


def uniform_widths(latency, widths: Dict[str, int], grids: Dict[str, List[int]], budget_ms: float,
                   cap: Optional[Dict[str, int]] = None) -> Dict[str, object]:
    """One width multiplier for every group: the largest ``m`` for which the widths ``grid_floor(m * widths[g])``
    (at most ``cap[g]``) are predicted at or below ``budget_ms``, found by bisection over the multipliers where
    some group's width changes (the latency is non-decreasing in ``m``).

    Returns:
        ``{"multiplier", "widths", "predicted_ms"}``.

    Raises:
        BudgetError: even the smallest multiplier misses the budget.
    """
    cap = cap or {g: max(grid) for g, grid in grids.items()}

    def at(m: float) -> Dict[str, int]:
        return {g: min(grid_floor(grid, m * widths[g]), cap[g]) for g, grid in grids.items()}

    top = max(max(cap[g] / widths[g] for g in grids), 1.0)
    cands = sorted({v / widths[g] for g, grid in grids.items() for v in grid if v / widths[g] <= top + 1e-12})
    if latency.predict_ms(at(cands[0])) > budget_ms:
        raise BudgetError(f"budget {budget_ms:.4f} ms is unreachable by one width multiplier: the narrowest "
                          f"network on the grid is predicted at {latency.predict_ms(at(cands[0])):.4f} ms")
    lo, hi = 0, len(cands) - 1  # cands[lo] meets the budget
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if latency.predict_ms(at(cands[mid])) <= budget_ms:
            lo = mid
        else:
            hi = mid - 1
    w = at(cands[lo])
    return {"multiplier": cands[lo], "widths": w, "predicted_ms": latency.predict_ms(w)}


def widths_to_budget(scores: Scores, latency, widths: Dict[str, int], grids: Dict[str, List[int]], budget_ms: float,
                     scope: str = "global", rank: str = "importance", min_keep: float = 0.25,
                     on_step: Optional[Callable[[Dict[str, object]], None]] = None) -> Dict[str, object]:
    """The widths a criterion reaches the budget with, removing channels in steps of the grid.

    ``scope="global"``: one ranking over the network. Each step removes one grid step from the group whose
    lowest-scored channels cost least: the sum of the scores that step removes, or with ``rank="per-ms"`` that sum
    divided by the latency the table predicts the step saves (latency-aware ranking). Steps repeat until the table
    predicts the budget. ``"safe"``: as global, but no group goes below ``min_keep`` of its width (guarding against
    a layer cut to nothing, the collapse a global ranking risks). ``"local"``: the same ratio in every layer, the
    largest on the grid that meets the budget (:func:`uniform_widths`); the scores then only choose which channels.

    Args:
        scores: :func:`group_scores` at ``widths``.
        widths: the current width of each group (``len(scores[g]) == widths[g]``).

    Returns:
        ``{"widths", "predicted_ms", "steps"}``.

    Raises:
        BudgetError: the budget cannot be reached on the grid (within the ``safe`` floor).
        ValueError: an unknown scope or rank.
    """
    if scope not in SCOPES or rank not in RANKS:
        raise ValueError(f"scope must be one of {SCOPES} and rank one of {RANKS}")
    if scope == "local":
        r = uniform_widths(latency, widths, grids, budget_ms)
        return {"widths": r["widths"], "predicted_ms": r["predicted_ms"], "steps": 0, "multiplier": r["multiplier"]}
    floor = {g: (grid_ceil(grids[g], min_keep * widths[g]) if scope == "safe" else grids[g][0]) for g in grids}
    order = {g: torch.sort(s).values for g, s in scores.items()}  # ascending: the first ones go first
    cur = dict(widths)
    pred = latency.predict_ms(cur)
    steps = 0
    while pred > budget_ms + 1e-12:
        best, best_cost, best_pred = None, None, None
        for g, grid in grids.items():
            lower = [v for v in grid if v < cur[g] and v >= floor[g]]
            if not lower:
                continue
            w = lower[-1]
            removed = widths[g] - w  # channels gone after this step, counted from the start
            cost = float(order[g][:removed].sum() - order[g][:widths[g] - cur[g]].sum())
            p = latency.predict_ms({**cur, g: w})
            if rank == "per-ms":
                cost = cost / max(pred - p, 1e-9)
            if best_cost is None or cost < best_cost or (cost == best_cost and p < best_pred):
                best, best_cost, best_pred = (g, w), cost, p
        if best is None:
            raise BudgetError(f"budget {budget_ms:.4f} ms is unreachable: every channel group is at the bottom of its "
                              f"grid{' (or the safe floor)' if scope == 'safe' else ''}, predicted {pred:.4f} ms")
        cur[best[0]], pred = best[1], best_pred
        steps += 1
        if on_step:
            on_step({"step": steps, "group": best[0], "width": best[1], "predicted_ms": pred})
    return {"widths": cur, "predicted_ms": pred, "steps": steps}


def widths_at_rate(scores: Scores, count_params: Callable[[Dict[str, int]], int], widths: Dict[str, int], rate: float,
                   per_channel_ms: Optional[Dict[str, float]] = None) -> Dict[str, object]:
    """The widths that remove a fraction ``rate`` of the parameters (the Neural Network Shrinking work's
    ``pruning_rate`` with exact pruning): the channels below one global threshold on the score (or the score per ms
    of marginal latency) go, the threshold found by bisection so the parameters removed are the smallest count at
    or above ``rate`` of the total. Every group keeps at least one channel; widths leave the table's grid.

    Args:
        count_params: parameters of the network at given widths.
        per_channel_ms: divide each group's scores by its marginal latency per channel (``--rank per-ms``).

    Returns:
        ``{"widths", "params", "params_removed_fraction", "threshold"}``.

    Raises:
        BudgetError: ``rate`` cannot be reached with one channel left per group.
    """
    if not 0 < rate < 1:
        raise ValueError(f"pruning rate must be in (0, 1), got {rate}")
    ranked = []  # (score, group), one per channel that may go (each group's best channel stays)
    for g, s in scores.items():
        v = s / max(per_channel_ms[g], 1e-12) if per_channel_ms else s
        ranked += [(float(x), g) for x in torch.sort(v).values[:-1]]
    ranked.sort()
    total = count_params(widths)

    def after(k: int) -> Dict[str, int]:
        w = dict(widths)
        for _, g in ranked[:k]:
            w[g] -= 1
        return w

    if 1 - count_params(after(len(ranked))) / total < rate:
        raise BudgetError(f"a pruning rate of {rate:g} is unreachable: one channel per group keeps "
                          f"{count_params(after(len(ranked))) / total:.1%} of the parameters")
    lo, hi = 0, len(ranked)  # the smallest k whose removal reaches the rate
    while lo < hi:
        mid = (lo + hi) // 2
        if 1 - count_params(after(mid)) / total >= rate:
            hi = mid
        else:
            lo = mid + 1
    w = after(lo)
    params = count_params(w)
    return {"widths": w, "params": params, "params_removed_fraction": 1 - params / total,
            "threshold": ranked[lo - 1][0] if lo else None}


def prune_to_widths_(model: nn.Module, space: PruningSpace, scores: Scores, target: Dict[str, int],
                     input_shape: Sequence[int]) -> Dict[str, List[int]]:
    """Physically keep the ``target[g]`` highest-scored output channels of every group, in place (Torch-Pruning's
    dependency graph removes them from every coupled conv, BN and consumer).

    Returns:
        ``{group: kept channel indices}`` in the numbering before this call.

    Raises:
        ValueError: a target outside ``1 .. current width``, or Torch-Pruning refuses a group.
    """
    kept_all = {}
    for g in space.groups:
        conv = model.get_submodule(g.members[0])
        width = conv.out_channels
        k = int(target[g.name])
        if not 1 <= k <= width:
            raise ValueError(f"cannot keep {k} of {width} channels of {g.name}")
        kept = sorted(torch.topk(scores[g.name], k).indices.tolist())
        kept_all[g.name] = kept
        if k == width:
            continue
        remove_channels_(model, g.members[0], sorted(set(range(width)) - set(kept)), input_shape)
    return kept_all

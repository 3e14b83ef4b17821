"""NetAdapt: latency-aware channel pruning driven by a latency lookup table.

Yang et al. 2018, "NetAdapt: Platform-Aware Neural Network Adaptation for Mobile Applications", Alg. 1::

    while Res_i > Bud:
        for each channel group k:
            N_k   = ChooseNumFilters(Net_i, k, Res_i - dR_i)   # largest width meeting the target (table)
            Net_k = ChooseWhichFilters(Net_i, k, N_k)          # keep the largest-L2-norm filters
            Net_k = ShortTermFineTune(Net_k)
        Net_{i+1} = PickHighestAccuracy(Net_k)                 # or least accuracy loss per ms saved
    LongTermFineTune(Net_i)

The reduction target ``dR_i = init_reduction * decay**i * Res_0`` decays geometrically and is clipped so
the last iteration lands on the budget. Propose, then commit (Torch-Pruning's interactive style):
:meth:`NetAdapt.propose` returns one :class:`Proposal` per group, the caller evaluates and commits one.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Protocol, Union

import torch.nn as nn

from edgeshrink import models
from edgeshrink.host import distributed as dist_
from edgeshrink.host.data import Dataset
from edgeshrink.host.errors import BudgetError
from edgeshrink.host.latency.space import PruningSpace, channel_grid
from edgeshrink.host.prune.config import NetAdaptConfig
from edgeshrink.host.prune.criteria import check_reachable
from edgeshrink.host.prune.surgery import prune_group_
from edgeshrink.host.train import DatasetTrainer, Trainer


class LatencyModel(Protocol):
    def predict_ms(self, widths: Dict[str, int]) -> float: ...


@dataclass
class Proposal:
    group: str  # channel group name
    width: int  # proposed channel count
    predicted_ms: float
    val_top1: Optional[float] = None  # after short-term fine-tuning: NetAdapt.metric on val (top-1, or mIoU), in %
    score: Optional[float] = None  # the selection criterion (lower is better)
    model: Optional[nn.Module] = field(default=None, repr=False)

    def summary(self) -> Dict[str, object]:
        return {"group": self.group, "width": self.width, "predicted_ms": self.predicted_ms,
                "val_top1": self.val_top1, "score": self.score}


class NetAdapt:
    """One NetAdapt run over a model.

    Args:
        model: the trained network, unpruned or already pruned (not modified; iterations work on copies).
        data: a dataset (its :class:`~edgeshrink.host.train.DatasetTrainer` from ``cfg``: short-term fine-tuning on
            ``train``, proposals judged on ``val``, never ``test``), or any
            :class:`~edgeshrink.host.train.Trainer` (the user's functions: :class:`~edgeshrink.host.train.UserTrainer`).
        space: the model's pruning space (groups from Torch-Pruning, sites from torch.fx).
        latency: a latency model, ``predict_ms(widths) -> float``.
        cfg: settings.
        on_event: ``on_event(kind, info)`` progress hook; kinds ``"iteration"``, ``"candidate"``,
            ``"chosen"``, ``"long_term"``.
        frozen: groups kept at their width (``prune_only`` / ``ignore`` of :func:`edgeshrink.shrink`).
        example_shape: ``(1, C, H, W)`` at which proposals are traced for surgery (default the space's input; a
            segmentation network is pruned at a small ``--pruner-input`` while the table is at the deployment input).

    Under torchrun (:mod:`edgeshrink.host.distributed`) each rank fine-tunes its share of an iteration's proposals
    (proposal k on rank k mod N); the scores are gathered so every rank commits the same proposal, whose weights the
    rank that evaluated it broadcasts. Each proposal is fine-tuned from the same seed wherever it runs, so the choice is
    the one a single process makes.
    """

    def __init__(self, model: nn.Module, data: Union[Dataset, Trainer], space: PruningSpace, latency: LatencyModel,
                 cfg: NetAdaptConfig, on_event: Optional[Callable[[str, Dict[str, object]], None]] = None,
                 frozen=(), example_shape: Optional[tuple] = None):
        if cfg.select not in ("ratio", "accuracy"):
            raise ValueError(f"select must be 'ratio' or 'accuracy', got {cfg.select!r}")
        self.model = copy.deepcopy(model).eval()
        self.space, self.latency, self.cfg = space, latency, cfg
        self.example_shape = tuple(example_shape or space.input_shape)
        self.trainer = DatasetTrainer(data, cfg.loss, cfg.batch_size, cfg.seed, cfg.short_term_val) \
            if isinstance(data, Dataset) else data
        self.on_event = on_event or (lambda kind, info: None)
        self.members = {g.name: g.members for g in space.groups}
        self.metric = self.trainer.metric
        self.grids = {g.name: channel_grid(g.width, cfg.granularity) for g in space.groups}
        current = self.widths(self.model) if frozen else {}
        for g in frozen:
            self.grids[g] = [current[g]]
        self.baseline_ms = latency.predict_ms(self.widths())  # the given model's, pruned or not
        self.history: List[Dict[str, object]] = []
        self._val_top1: Optional[float] = None  # val top-1 of self.model, known after each commit

    # -- state -------------------------------------------------------------------------------------------
    def widths(self, model: Optional[nn.Module] = None) -> Dict[str, int]:
        return self.space.widths_from_spec(models.channel_spec(model or self.model))

    def restore_(self, model: nn.Module, history: List[Dict[str, object]]) -> None:
        """Continue a run from a saved state: the model after ``len(history)`` committed iterations."""
        self.model = model.eval()
        self.history = list(history)
        self._val_top1 = None

    def check_reachable(self) -> None:
        """Raise BudgetError when even the narrowest network on the grid misses the budget."""
        check_reachable(self.latency, self.grids, self.cfg.budget_ms, f"granularity {self.cfg.granularity}")

    def target_ms(self, iteration: int, current_ms: float) -> float:
        """Latency target of iteration ``iteration`` (0-based): ``current - dR_i``, not below the budget."""
        reduction = self.cfg.init_reduction * (self.cfg.decay ** iteration) * self.baseline_ms
        return max(current_ms - reduction, self.cfg.budget_ms)

    # -- propose -----------------------------------------------------------------------------------------
    def propose(self, widths: Dict[str, int], target_ms: float) -> List[Proposal]:
        """ChooseNumFilters for every group: the largest grid width below the current one whose network
        is predicted at or below ``target_ms``. Groups that cannot reach it are left out."""
        out = []
        for g, grid in self.grids.items():
            for w in reversed([v for v in grid if v < widths[g]]):
                pred = self.latency.predict_ms({**widths, g: w})
                if pred <= target_ms:
                    out.append(Proposal(g, w, pred))
                    break
        return out

    def evaluate_proposal(self, p: Proposal, current_ms: float, current_top1: float) -> Proposal:
        """ChooseWhichFilters (L2 norm) + ShortTermFineTune + evaluation on val; fills ``p`` in place."""
        m = self.pruned_copy(p)
        self.trainer.fine_tune(m, self.cfg.short_term_steps, self.cfg.short_term_lr)
        m.eval()
        p.val_top1 = self.trainer.score(m)
        p.score = self.score(p, current_ms, current_top1)
        p.model = m
        return p

    def pruned_copy(self, p: Proposal) -> nn.Module:
        """ChooseWhichFilters: a copy of the current network with ``p.group`` cut to ``p.width`` (largest L2 norm)."""
        m = copy.deepcopy(self.model)
        prune_group_(m, self.members[p.group], p.width, self.example_shape)
        return m

    def score(self, p: Proposal, current_ms: float, current_top1: float) -> float:
        """The selection criterion of an evaluated proposal, lower is better: with ``select="ratio"`` the val top-1
        lost per ms saved (the earlier NetAdapt implementations), with ``"accuracy"`` minus the val top-1 (the
        paper's PickHighestAccuracy)."""
        if self.cfg.select == "accuracy":
            return -p.val_top1
        return (current_top1 - p.val_top1) / max(current_ms - p.predicted_ms, 1e-9)

    @staticmethod
    def choose(proposals: List[Proposal]) -> Proposal:
        """The proposal to commit: the lowest score, the lower predicted latency on a tie."""
        return min(proposals, key=lambda p: (p.score, p.predicted_ms))

    # -- run ---------------------------------------------------------------------------------------------
    def step(self, iteration: int) -> Dict[str, object]:
        """One NetAdapt iteration; commits the best proposal into ``self.model``."""
        t0 = time.monotonic()
        widths = self.widths()
        current = self.latency.predict_ms(widths)
        target = self.target_ms(iteration, current)
        if self._val_top1 is None:
            self._val_top1 = self.trainer.score(self.model)
        current_top1 = self._val_top1
        proposals = self.propose(widths, target)
        relaxed = False
        if not proposals:
            # No single group reaches the target: relax it to the lowest latency one group can still reach
            # (the budget is reachable, check_reachable() said so, so some group can still shrink).
            reachable = [self.latency.predict_ms({**widths, g: grid[0]}) for g, grid in self.grids.items()
                         if grid[0] < widths[g]]
            reachable = [r for r in reachable if r < current]
            if not reachable:
                raise BudgetError(f"iteration {iteration + 1}: no channel group can be pruned further below "
                                  f"{current:.4f} ms; the budget {self.cfg.budget_ms:.4f} ms is not reachable")
            target, relaxed = max(min(reachable), self.cfg.budget_ms), True
            proposals = self.propose(widths, target)
        self.on_event("iteration", {"iteration": iteration + 1, "current_ms": current, "target_ms": target,
                                    "candidates": len(proposals), "target_relaxed": relaxed})
        world, me = dist_.world_size(), dist_.rank()
        for k, p in enumerate(proposals):
            if k % world != me:
                continue
            self.evaluate_proposal(p, current, current_top1)
            self.on_event("candidate", {"iteration": iteration + 1, "index": k + 1, "of": len(proposals), **p.summary()})
        if world > 1:  # every rank's scores, then the same choice everywhere; the winner's owner sends its weights
            mine = {k: (p.val_top1, p.score) for k, p in enumerate(proposals) if k % world == me}
            for part in dist_.gather(mine):
                for k, (v, sc) in part.items():
                    proposals[k].val_top1, proposals[k].score = v, sc
        best = self.choose(proposals)
        if world > 1:
            owner = proposals.index(best) % world
            state = dist_.broadcast(best.model.state_dict() if owner == me else None, owner)
            if owner != me:
                best.model = self.pruned_copy(best)
                best.model.load_state_dict(state)
                best.model.eval()
        self.model, self._val_top1 = best.model, best.val_top1
        for p in proposals:
            p.model = None
        record = {"iteration": iteration + 1, "current_ms": current, "target_ms": target, "target_relaxed": relaxed,
                  "chosen_group": best.group,
                  "chosen_members": list(self.members[best.group]), "width_before": widths[best.group],
                  "width_after": best.width, "val_top1": best.val_top1, "val_top1_before": current_top1,
                  "predicted_ms": best.predicted_ms, "metric": self.metric, "ranks": world,
                  "candidates": [p.summary() for p in proposals],
                  "wall_s": round(time.monotonic() - t0, 2)}
        self.history.append(record)
        self.on_event("chosen", record)
        return record

    def run(self, start_iteration: int = 0,
            after_iteration: Optional[Callable[["NetAdapt"], None]] = None) -> nn.Module:
        """Iterate until the predicted latency meets the budget (no long-term fine-tuning here).

        Args:
            start_iteration: for a resumed run, the number of iterations already done.
            after_iteration: called after each committed iteration (checkpointing for resume).

        Raises:
            BudgetError: the budget is unreachable or ``max_iters`` iterations did not reach it.
        """
        self.check_reachable()
        it = start_iteration
        while self.latency.predict_ms(self.widths()) > self.cfg.budget_ms + 1e-12:
            if it >= self.cfg.max_iters:
                raise BudgetError(f"{self.cfg.max_iters} NetAdapt iterations did not reach {self.cfg.budget_ms:.4f} ms")
            self.step(it)
            it += 1
            if after_iteration:
                after_iteration(self)
        return self.model

    def expected_iterations(self) -> int:
        """Iterations the geometric schedule needs from the baseline to the budget (for progress bars)."""
        need = self.baseline_ms - self.cfg.budget_ms
        r, d = self.cfg.init_reduction * self.baseline_ms, self.cfg.decay
        if need <= 0:
            return 0
        if d >= 1:
            return math.ceil(need / r)
        total = r / (1 - d)
        if need >= total:
            return self.cfg.max_iters
        return max(1, math.ceil(math.log(1 - need * (1 - d) / r) / math.log(d)))

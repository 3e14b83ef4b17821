"""A pruner to a latency budget in Torch-Pruning's shape, for users with their own training loop::

    pruner = LatencyPruner(model, table, budget_ms=0.5 * full_ms, importance="taylor", iterative_steps=3)
    for _ in range(pruner.iterative_steps):
        loss_fn(model(x), y).backward()  # Taylor scores read .grad, as tp.importance.TaylorImportance does
        pruner.step()                     # prune to the next latency target, in place
        fine_tune(model)

Step ``k`` of ``K`` prunes to ``full_ms * (budget_ms / full_ms) ** (k / K)`` as the table predicts it (the last step
to the budget), removing channels in steps of the table's grid by :func:`.criteria.widths_to_budget`.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch.nn as nn
import torch_pruning as tp

from edgeshrink.host.latency.predict import TablePredictor
from edgeshrink.host.latency.space import channel_grid
from edgeshrink.host.prune import criteria

IMPORTANCES = ("magnitude", "l1", "taylor", "bn_scale")


class LatencyPruner:
    """Prune ``model`` (a registry network, unpruned at construction) in place to a latency budget.

    Args:
        model: the network; its pruning space is traced at the table's input shape.
        table: a :class:`edgeshrink.host.latency.table.LatencyTable` for this model and device.
        budget_ms: the target, as the table predicts it (ms).
        importance: ``"magnitude"`` (L2 filter norm), ``"l1"``, ``"taylor"`` (first-order Taylor; call
            ``loss.backward()`` before each :meth:`step`), ``"bn_scale"`` (network slimming's |gamma|), or any
            Torch-Pruning ``Importance``.
        scope, rank, min_keep: as :func:`.criteria.widths_to_budget`.
        iterative_steps: steps to reach the budget (a geometric schedule of latency targets).
        granularity: the channel grid (default: the table's).

    Raises:
        BudgetError: the narrowest network on the grid misses the budget. ValueError: an unknown importance.
    """

    def __init__(self, model: nn.Module, table, budget_ms: float, importance="magnitude", scope: str = "global",
                 rank: str = "importance", iterative_steps: int = 1, granularity: Optional[int] = None,
                 min_keep: float = 0.25):
        if isinstance(importance, str) and importance not in IMPORTANCES:
            raise ValueError(f"importance must be one of {IMPORTANCES} or a Torch-Pruning Importance")
        if iterative_steps < 1:
            raise ValueError("iterative_steps must be >= 1")
        self.model, self.budget_ms, self.importance = model, float(budget_ms), importance
        self.scope, self.rank, self.min_keep, self.iterative_steps = scope, rank, min_keep, int(iterative_steps)
        self.predictor = TablePredictor.for_model(table, model)
        self.space = self.predictor.space
        g = int(granularity or table.build.get("granularity", 4))
        self.grids = {grp.name: channel_grid(grp.width, g) for grp in self.space.groups}
        self.full_ms = self.predictor.predict_ms(self.widths())
        floor = {k: criteria.grid_ceil(v, min_keep * self.widths()[k]) for k, v in self.grids.items()} \
            if scope == "safe" else None
        criteria.check_reachable(self.predictor, self.grids, self.budget_ms, f"granularity {g}", floor)
        self.current_step = 0
        self.history = []

    def widths(self) -> Dict[str, int]:
        """The current width of every channel group."""
        return {g.name: self.model.get_submodule(g.name).out_channels for g in self.space.groups}

    def _importance(self):
        if not isinstance(self.importance, str):
            return self.importance
        return {"magnitude": lambda: tp.importance.MagnitudeImportance(p=2),
                "l1": lambda: tp.importance.MagnitudeImportance(p=1),
                "taylor": tp.importance.TaylorImportance,
                "bn_scale": lambda: tp.importance.BNScaleImportance(normalizer=None)}[self.importance]()

    def target_ms(self, step: int) -> float:
        """The latency target after ``step`` of :attr:`iterative_steps` steps (ms)."""
        return self.full_ms * (self.budget_ms / self.full_ms) ** (step / self.iterative_steps)

    def step(self) -> Dict[str, object]:
        """Prune to the next target, in place. Returns ``{"step", "target_ms", "widths", "predicted_ms"}``.

        Raises:
            RuntimeError: called after the last step.
        """
        if self.current_step >= self.iterative_steps:
            raise RuntimeError(f"all {self.iterative_steps} steps are done")
        self.current_step += 1
        target = max(self.target_ms(self.current_step), self.budget_ms)
        scores = criteria.group_scores(self.model, self.space, self._importance(), self.space.input_shape)
        r = criteria.widths_to_budget(scores, self.predictor, self.widths(), self.grids, target, self.scope, self.rank,
                                      self.min_keep)
        criteria.prune_to_widths_(self.model, self.space, scores, r["widths"], self.space.input_shape)
        self.model.zero_grad(set_to_none=True)
        rec = {"step": self.current_step, "target_ms": target, "widths": r["widths"], "predicted_ms": r["predicted_ms"]}
        self.history.append(rec)
        return rec

"""The latency budget of a prune, as the table predicts it (its statistic)."""

from __future__ import annotations

import math
from typing import Optional

from edgeshrink.host.errors import BudgetError


def resolve_budget(baseline_predicted_ms: float, budget: Optional[float] = 0.5,
                   budget_ms: Optional[float] = None) -> float:
    """The budget in ms: ``budget_ms`` when given (``--budget-ms``), else ``budget`` (a fraction in (0, 1),
    ``--budget``) of the baseline's prediction.

    Raises:
        BudgetError: a fraction outside (0, 1), or a budget that is not a positive finite number of ms.
    """
    if budget_ms is not None:
        ms = float(budget_ms)
        if not (math.isfinite(ms) and ms > 0):
            raise BudgetError(f"--budget-ms must be a positive finite number of ms, got {budget_ms}")
        return ms
    if budget is None or not (0 < budget < 1):
        raise BudgetError(f"--budget must be a fraction in (0, 1) of the unpruned latency, got {budget}")
    return budget * baseline_predicted_ms

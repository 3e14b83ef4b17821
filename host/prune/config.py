"""NetAdapt's settings and their one set of defaults (torch-free: the command line's help reads them).

The defaults are ``host prune``'s and :func:`edgeshrink.shrink`'s; :data:`DEMO_PRESET` is the shorter schedule of
``host demo``, named and shown in its output, never a second set of literals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Dict, Optional


@dataclass(frozen=True)
class NetAdaptConfig:
    """NetAdapt (Yang et al. 2018, Alg. 1). The reduction target of iteration ``i`` is ``init_reduction * decay**i``
    of the unpruned prediction; each proposal gets ``short_term_steps`` of short-term fine-tuning at
    ``short_term_lr``; the long-term fine-tuning (the pipeline's recovery) ``long_term_epochs`` at ``long_term_lr``."""

    budget_ms: float = 0.0  # stop when the predicted latency is at or below this (ms; the pipeline fills it in)
    init_reduction: float = 0.06  # first iteration's reduction target, a fraction of the unpruned prediction
    decay: float = 0.95  # per-iteration multiplier of the reduction target
    granularity: int = 4  # channel grid step (the table's; the pipeline fills it in)
    short_term_steps: int = 30  # SGD steps of short-term fine-tuning per proposal
    short_term_lr: float = 0.01
    batch_size: int = 64
    select: str = "ratio"  # "ratio": least val-accuracy loss per ms saved; "accuracy": highest val accuracy
    long_term_epochs: int = 10  # epochs of long-term fine-tuning after the budget is met
    long_term_lr: float = 0.01
    max_iters: int = 100
    seed: int = 0
    short_term_val: Optional[int] = None  # evaluate proposals on a seeded subset of this many val images (None: all)
    loss: str = "crossentropy"  # short-term fine-tuning's criterion ("rmi": a segmentation network trained with it)

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


# host demo: a newcomer sees the whole job in about four minutes on two cores (docs/results.md has the runs);
# digits saturates, so the shorter schedule loses nothing there. Never judge a method with it.
DEMO_PRESET = replace(NetAdaptConfig(), init_reduction=0.08, decay=0.92, short_term_steps=15, long_term_epochs=8)


def preset_changes(preset: NetAdaptConfig, base: NetAdaptConfig = NetAdaptConfig()) -> Dict[str, object]:
    """The settings in which ``preset`` differs from ``base`` (the defaults): ``{name: (preset's, default)}``."""
    return {f.name: (getattr(preset, f.name), getattr(base, f.name)) for f in fields(NetAdaptConfig)
            if getattr(preset, f.name) != getattr(base, f.name)}

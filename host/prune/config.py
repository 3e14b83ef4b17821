"""Every pruning method's settings, their one set of defaults and the methods' traits, torch-free: the command line
builds its options and its help from here without importing torch (:data:`METHOD_TRAITS`; the registry
:data:`edgeshrink.host.prune.methods.METHODS` adds each method's ``run``).

NetAdapt's defaults are ``host prune``'s and :func:`edgeshrink.shrink`'s; :data:`DEMO_PRESET` is the shorter schedule
of ``host demo``, named and shown in its output, never a second set of literals.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Dict, NamedTuple, Optional

from edgeshrink.host.errors import UserError

SCOPES = ("global", "local", "safe")  # where the criterion methods rank channels (criteria.widths_to_budget)
RANKS = ("importance", "per-ms")  # by score, or by score per ms of marginal latency
PENALTIES = ("l1", "smooth-l1")  # network slimming's sparsity penalty
RECOVERY = ("fine-tune", "lr-rewind", "scratch", "none")


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


def _to_dict(self) -> Dict[str, object]:
    return asdict(self)


@dataclass(frozen=True)
class UniformConfig:
    to_dict = _to_dict


@dataclass(frozen=True)
class MagnitudeConfig:
    scope: str = "global"  # global | local | safe
    rank: str = "importance"  # importance | per-ms
    norm: int = 2  # L1 or L2 filter norm
    min_keep: float = 0.25  # "safe" scope: no group below this fraction of its width
    to_dict = _to_dict


@dataclass(frozen=True)
class TaylorConfig:
    scope: str = "global"
    rank: str = "importance"
    taylor_batches: int = 8  # training batches whose gradients the Taylor scores sum
    min_keep: float = 0.25
    to_dict = _to_dict


@dataclass(frozen=True)
class SlimmingConfig:
    penalty: str = "l1"  # l1 | smooth-l1
    sparsity: Optional[float] = None  # lambda; None: 1e-5 for l1, 1e-6 for smooth-l1
    method_epochs: int = 5  # sparsity-training epochs
    method_lr: float = 0.01
    pruning_iterations: int = 1  # rounds of prune + fine-tune
    fine_tuning_epochs: int = 1  # after each round but the last (the recovery follows the last)
    rank: str = "importance"
    to_dict = _to_dict

    @property
    def strength(self) -> float:
        return self.sparsity if self.sparsity is not None else (1e-5 if self.penalty == "l1" else 1e-6)


@dataclass(frozen=True)
class SWDConfig:
    mu: float = 5e-4
    a_min: float = 1.0
    a_max: float = 1e4
    criterion: str = "global"  # global | local | safe (the scopes of widths_to_budget)
    method_epochs: int = 5  # SWD training epochs
    method_lr: float = 0.01
    refresh_steps: int = 50  # steps between recomputations of the target set
    min_keep: float = 0.25
    rank: str = "importance"
    to_dict = _to_dict


@dataclass(frozen=True)
class MorphNetConfig:
    morphnet_rounds: int = 2
    method_epochs: int = 2  # regularised training epochs per round
    method_lr: float = 0.01
    morphnet_strength: float = 0.05  # lambda, per ms of marginal latency
    gamma_threshold: float = 1e-2  # shrink: |gamma| below this is a dead channel
    refresh_steps: int = 50  # steps between refreshes of the marginal latencies
    to_dict = _to_dict


@dataclass(frozen=True)
class EigenDamageConfig:
    damping: float = 1e-3
    correct_eigenvalues: bool = False
    kfac_batches: int = 8
    pruning_iterations: int = 1
    fine_tuning_epochs: int = 1
    method_lr: float = 0.01
    eigenbasis: str = "off"  # off | latency (opt-in: docs/pruning.md has what it cost in accuracy here)
    rank: str = "importance"
    to_dict = _to_dict


@dataclass(frozen=True)
class SnipMethodConfig:
    prune_batch: int = 128  # examples in SNIP's one batch
    scope: str = "global"
    rank: str = "importance"
    min_keep: float = 0.25
    to_dict = _to_dict


def check_config(method: str, cfg) -> None:
    """Refuse settings out of range, naming the option.

    Raises:
        UserError: one line.
    """
    def bad(msg):
        raise UserError(f"--method {method}: {msg}")

    for name, flag in (("scope", "--scope"), ("criterion", "--swd-scope")):
        if getattr(cfg, name, "global") not in SCOPES:
            bad(f"{flag} must be one of {', '.join(SCOPES)}")
    if getattr(cfg, "rank", "importance") not in RANKS:
        bad(f"--rank must be one of {', '.join(RANKS)}")
    if getattr(cfg, "norm", 2) not in (1, 2):
        bad("--norm must be 1 or 2")
    if getattr(cfg, "penalty", "l1") not in PENALTIES:
        bad(f"--penalty must be one of {', '.join(PENALTIES)}")
    if getattr(cfg, "eigenbasis", "off") not in ("latency", "off"):
        bad("--eigenbasis must be latency or off")
    for name in ("sparsity", "mu", "a_min", "a_max", "method_lr", "morphnet_strength", "gamma_threshold", "damping"):
        v = getattr(cfg, name, None)
        if v is not None and not (v > 0 and math.isfinite(v)):
            bad(f"--{name.replace('_', '-')} must be a positive finite number, got {v:g}")
    if getattr(cfg, "a_min", 0) > getattr(cfg, "a_max", math.inf):
        bad(f"--a-min {cfg.a_min:g} is above --a-max {cfg.a_max:g}")
    if not 0 < getattr(cfg, "min_keep", 0.5) <= 1:
        bad("--min-keep must be in (0, 1]")
    for name in ("method_epochs", "pruning_iterations", "taylor_batches", "refresh_steps", "morphnet_rounds",
                 "kfac_batches", "prune_batch"):
        if getattr(cfg, name, 1) < 1:
            bad(f"--{name.replace('_', '-')} must be >= 1")
    if getattr(cfg, "fine_tuning_epochs", 0) < 0:
        bad("--fine-tuning-epochs must be >= 0")


class MethodTraits(NamedTuple):
    config: type  # the settings dataclass; its fields are the method's own options
    recover: str  # the default recovery
    threshold: bool  # accepts --pruning-rate
    needs_data: bool  # reads training batches itself (False: runs on the user's functions too, edgeshrink.shrink)
    summary: str


METHOD_TRAITS: Dict[str, MethodTraits] = {
    "netadapt": MethodTraits(NetAdaptConfig, "fine-tune", False, False,
                             "NetAdapt (Yang et al. 2018): per-group proposals, short-term fine-tuning, the best kept"),
    "uniform": MethodTraits(UniformConfig, "fine-tune", False, False,
                            "one width multiplier for every channel group (bisection on the table)"),
    "magnitude": MethodTraits(MagnitudeConfig, "fine-tune", True, False,
                              "filter norm (Torch-Pruning MagnitudeImportance)"),
    "taylor": MethodTraits(TaylorConfig, "fine-tune", True, True, "first-order Taylor (Torch-Pruning TaylorImportance)"),
    "slimming": MethodTraits(SlimmingConfig, "fine-tune", True, True,
                             "network slimming (Liu et al. 2017): sparsity on BN scales, smallest |gamma| removed"),
    "swd": MethodTraits(SWDConfig, "none", True, True, "Selective Weight Decay (Tessier et al. 2022)"),
    "morphnet": MethodTraits(MorphNetConfig, "fine-tune", False, True,
                             "MorphNet (Gordon et al. 2018), latency from the table as the resource"),
    "eigendamage": MethodTraits(EigenDamageConfig, "fine-tune", False, True,
                                "EigenDamage (Wang et al. 2019): OBD saliency in the Kronecker-factored eigenbasis"),
    "snip": MethodTraits(SnipMethodConfig, "fine-tune", True, True,
                         "structured SNIP (Lee et al. 2019): connection sensitivity summed per filter"),
}
SHRINK_METHODS = tuple(n for n, t in METHOD_TRAITS.items() if not t.needs_data)  # what runs on the user's functions
SHRINK_OUTPUTS = ("pytorch", "onnx")  # what edgeshrink.shrink returns: the module, or also its ONNX artifact

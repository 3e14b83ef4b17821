"""The pruning methods of ``host prune --method``, one registry (:data:`METHODS`), each run to a latency budget as the
table predicts it (or to a parameter pruning rate) on a :class:`MethodContext`, returning the pruned network and its
history. Recovery training (fine-tuning, LR rewinding, retraining from scratch) is the pipeline's, after the method.

- ``netadapt``: :mod:`.netadapt` (Yang et al. 2018), resumed per iteration through ``ctx.resume``.
- ``uniform``: one width multiplier for every group (:func:`.criteria.uniform_widths`), filters kept by L2 norm.
- ``magnitude``: Torch-Pruning's ``MagnitudeImportance`` (L1/L2 filter norm, Li et al. 2017).
- ``taylor``: Torch-Pruning's ``TaylorImportance`` (first-order Taylor, Molchanov et al. 2019; on an untrained
  network this is channel-level SNIP, Lee et al. 2019).
- ``slimming``: network slimming (Liu et al. 2017): sparsity training on the BN scales, then the smallest |gamma|
  removed, in ``pruning_iterations`` rounds each followed by fine-tuning (the Neural Network Shrinking work).
- ``swd``: Selective Weight Decay (Tessier et al. 2022): the channels the criterion would remove at the budget decay
  ever more strongly during training; then they are removed.
- ``morphnet``: MorphNet (Gordon et al. 2018) with the latency table as the resource: latency-weighted L1 on the BN
  scales, then shrink (threshold) and expand (one width multiplier to the budget), for ``morphnet_rounds``.
- ``eigendamage``: EigenDamage (Wang et al. 2019, :mod:`.eigendamage`): OBD saliency in the Kronecker-factored
  eigenbasis, channels removed globally to the budget in ``pruning_iterations`` rounds; with ``eigenbasis =
  "latency"``, a layer takes its eigenbasis form (three convolutions) where that is measured faster than the plain
  pruned layer on the table's device.
- ``snip``: structured SNIP (Lee et al. 2019, Eq. 6, :mod:`.snip`): the connection sensitivity
  ``|w dL/dw|`` on one batch of ``prune_batch`` training examples, normalised, summed per filter and over a group's
  coupled convolutions; channels removed by one ranking to the budget (the SDN loss where the network has internal
  classifiers).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, fields, replace
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch_pruning as tp

from edgeshrink import models
from edgeshrink.host import distributed as dist_
from edgeshrink.host.data import Dataset
from edgeshrink.host.dynamic.grow import sdn_loss, sdn_loss_fn, sdn_weights
from edgeshrink.host.errors import UserError
from edgeshrink.host.latency.space import PruningSpace, channel_grid
from edgeshrink.host.prune import criteria
from edgeshrink.host.prune import eigendamage as ed
from edgeshrink.host.prune.config import (METHOD_TRAITS, RECOVERY, EigenDamageConfig, MagnitudeConfig, MethodTraits,
                                          MorphNetConfig, NetAdaptConfig, SlimmingConfig, SnipMethodConfig, SWDConfig,
                                          TaylorConfig, UniformConfig, check_config)
from edgeshrink.host.prune.netadapt import NetAdapt
from edgeshrink.host.prune.regularizers import MorphNetRegularizer, SlimmingRegularizer, SWDRegularizer
from edgeshrink.host.prune.snip import snip_scores
from edgeshrink.host.train import TrainConfig, Trainer, UserTrainer, train


@dataclass
class MethodContext:
    """What a method works on.

    Args:
        model: the trained network (a method works on a copy).
        space: its unpruned pruning space; ``predictor.predict_ms(widths)`` the table's latency (ms).
        budget_ms: the target as the table predicts it; None with ``pruning_rate``.
        pruning_rate: the fraction of parameters to remove instead of a latency budget (threshold methods).
        log: one-line progress messages.
    """

    model: nn.Module
    data: Dataset
    space: PruningSpace
    predictor: object
    name: str
    num_classes: int
    granularity: int
    budget_ms: Optional[float]
    pruning_rate: Optional[float] = None
    batch_size: int = 64
    seed: int = 0
    log: Callable[[str], None] = print
    example_shape: Optional[Tuple[int, ...]] = None  # where surgery traces the network (--pruner-input); None: the space's
    criterion: str = "crossentropy"  # the training loss of recovery (the checkpoint's)
    trainer: Optional[Trainer] = None  # None: the dataset's (DatasetTrainer); UserTrainer: edgeshrink.shrink's functions
    frozen: Tuple[str, ...] = ()  # groups kept at their width (shrink's prune_only / ignore)
    resume: Optional[object] = None  # load() -> (model, history) or None, save(model, history): a method's own
    #   progress (NetAdapt's iterations) kept for an interrupted run
    on_event: Optional[Callable[[str, Dict[str, object]], None]] = None  # progress events (NetAdapt's)

    @property
    def input_shape(self):
        """``(1, C, H, W)`` at which the methods trace the network for surgery and importance (the pruner input)."""
        return tuple(self.example_shape) if self.example_shape else self.space.input_shape

    @property
    def grids(self) -> Dict[str, List[int]]:
        """Each group's channel grid (a frozen group's: its current width alone)."""
        now = self.widths(self.model) if self.frozen else {}
        return {g.name: [now[g.name]] if g.name in self.frozen else channel_grid(g.width, self.granularity)
                for g in self.space.groups}

    def widths(self, model: nn.Module) -> Dict[str, int]:
        return self.space.widths_from_spec(models.channel_spec(model))

    def count_params(self, widths: Dict[str, int]) -> int:
        m = models.create_model(self.name, self.num_classes, self.space.spec_from_widths(widths),
                                input_shape=self.space.input_shape, exits=getattr(self.model, "after", None))
        return sum(p.numel() for p in m.parameters())

    def predict(self, widths: Dict[str, int]) -> float:
        """The table's latency (ms) at ``widths``, rounded up to the grid where they are off it (``--pruning-rate``)."""
        g = self.grids
        return self.predictor.predict_ms({k: criteria.grid_ceil(g[k], v) for k, v in widths.items()})

    def train_config(self, epochs: int, lr: float) -> TrainConfig:
        return TrainConfig(epochs=epochs, lr=lr, batch_size=self.batch_size, schedule="cosine", seed=self.seed,
                           criterion=self.criterion)


@dataclass(frozen=True)
class MethodSpec:
    """A registry entry: the method's traits (:data:`.config.METHOD_TRAITS`, torch-free for the command line) and its
    ``run(ctx, cfg) -> (pruned model, history)``."""

    name: str
    run: Callable[[MethodContext, object], Tuple[nn.Module, List[Dict[str, object]]]]

    @property
    def traits(self) -> MethodTraits:
        return METHOD_TRAITS[self.name]

    config = property(lambda self: self.traits.config)  # the settings dataclass; its fields are the method's options
    recover = property(lambda self: self.traits.recover)  # the default recovery
    threshold = property(lambda self: self.traits.threshold)  # accepts --pruning-rate
    needs_data = property(lambda self: self.traits.needs_data)  # reads training batches itself
    summary = property(lambda self: self.traits.summary)


# -- the methods ---------------------------------------------------------------------------------------------------

def _select(ctx: MethodContext, model: nn.Module, scores: criteria.Scores, budget_ms: Optional[float], scope: str,
            rank: str, min_keep: float = 0.25) -> Dict[str, object]:
    """The target widths for the scores: to ``budget_ms`` on the grid, or to ``ctx.pruning_rate`` off it."""
    widths = ctx.widths(model)
    if ctx.pruning_rate is not None:
        per_ms = criteria.marginal_ms(ctx.predictor, {g: criteria.grid_ceil(ctx.grids[g], w) for g, w in widths.items()},
                                      ctx.grids) if rank == "per-ms" else None
        r = criteria.widths_at_rate(scores, ctx.count_params, widths, ctx.pruning_rate, per_ms)
        return {**r, "predicted_ms": ctx.predict(r["widths"])}
    return criteria.widths_to_budget(scores, ctx.predictor, widths, ctx.grids, budget_ms, scope, rank, min_keep)


def _round_target(ctx: MethodContext, base_ms: float, k: int, rounds: int) -> float:
    """Round ``k`` of ``rounds``' latency target: a geometric schedule from ``base_ms`` to the budget."""
    return max(base_ms * (ctx.budget_ms / base_ms) ** (k / rounds), ctx.budget_ms)


def _prune(ctx: MethodContext, model: nn.Module, scores: criteria.Scores, target: Dict[str, int]) -> Dict[str, List[int]]:
    """Keep each group's ``target`` best-scored channels; returns the kept indices (numbered before the call)."""
    return criteria.prune_to_widths_(model, ctx.space, scores, target, ctx.input_shape)


def check_method_reachable(ctx: MethodContext, cfg, method: str) -> None:
    """Refuse a budget no network the method may reach on the grid meets (within a ``safe`` scope's floor), before
    any work (:func:`.criteria.check_reachable`)."""
    if ctx.budget_ms is None:
        return
    scope = getattr(cfg, "scope", getattr(cfg, "criterion", "global"))
    grids, note = ctx.grids, f"granularity {ctx.granularity}"
    floor = None
    if scope == "safe":
        full = ctx.widths(ctx.model)
        floor = {g: criteria.grid_ceil(grids[g], cfg.min_keep * full[g]) for g in grids}
        note += f", safe floor {cfg.min_keep:g}"
    criteria.check_reachable(ctx.predictor, grids, ctx.budget_ms, note, floor, prefix=f"--method {method}: ")


def run_netadapt(ctx: MethodContext, cfg: NetAdaptConfig):
    """NetAdapt (:mod:`.netadapt`) on the context's trainer, continuing from ``ctx.resume`` where it holds completed
    iterations; emits ``start`` (``expected_iterations``, ``done``, ``metric``) then NetAdapt's own events."""
    cfg = replace(cfg, budget_ms=ctx.budget_ms, granularity=ctx.granularity, loss=ctx.criterion)
    na = NetAdapt(ctx.model, ctx.trainer or ctx.data, ctx.space, ctx.predictor, cfg, on_event=ctx.on_event,
                  frozen=ctx.frozen, example_shape=ctx.input_shape)
    if dist_.active():
        ctx.log(f"distributed NetAdapt: {dist_.world_size()} ranks share each iteration's candidates")
    start = 0
    saved = ctx.resume.load() if ctx.resume is not None else None
    if saved is not None:
        na.restore_(*saved)
        start = len(na.history)
        ctx.log(f"resuming after iteration {start} (NetAdapt)")
    if ctx.on_event:
        ctx.on_event("start", {"expected_iterations": na.expected_iterations(), "done": start, "metric": na.metric})
    model = na.run(start_iteration=start,
                   after_iteration=(lambda n: ctx.resume.save(n.model, n.history)) if ctx.resume is not None else None)
    return model, na.history


def run_uniform(ctx: MethodContext, cfg: UniformConfig):
    model = copy.deepcopy(ctx.model).eval()
    widths = ctx.widths(model)
    r = criteria.uniform_widths(ctx.predictor, widths, ctx.grids, ctx.budget_ms)

    scores = criteria.group_scores(model, ctx.space, tp.importance.MagnitudeImportance(p=2, normalizer=None),
                                   ctx.input_shape)
    _prune(ctx, model, scores, r["widths"])
    ctx.log(f"uniform: width multiplier {r['multiplier']:.3f}, predicted {r['predicted_ms']:.4f} ms")
    return model, [{"multiplier": r["multiplier"], "widths": r["widths"], "predicted_ms": r["predicted_ms"]}]


def taylor_gradients(model: nn.Module, data: Dataset, batches: int, batch_size: int, seed: int) -> None:
    """Fill ``.grad`` with the cross-entropy gradient summed over ``batches`` training batches (no augmentation)."""
    g = torch.Generator().manual_seed(seed)
    model.eval()  # BN statistics as at deployment; gradients still flow
    model.zero_grad(set_to_none=True)
    crit = nn.CrossEntropyLoss()
    for i, (x, y) in enumerate(data.batches("train", batch_size, shuffle=True, generator=g)):
        if i >= batches:
            break
        crit(model(x), y).backward()


def run_criterion(kind: str):
    """``magnitude`` or ``taylor``: score once, prune to the budget in one shot."""
    def run(ctx: MethodContext, cfg):
        model = copy.deepcopy(ctx.model).eval()
        if kind == "taylor":
            imp = tp.importance.TaylorImportance()
            taylor_gradients(model, ctx.data, cfg.taylor_batches, ctx.batch_size, ctx.seed)
        else:
            imp = tp.importance.MagnitudeImportance(p=cfg.norm)
        scores = criteria.group_scores(model, ctx.space, imp, ctx.input_shape)
        model.zero_grad(set_to_none=True)
        r = _select(ctx, model, scores, ctx.budget_ms, cfg.scope, cfg.rank, cfg.min_keep)
        _prune(ctx, model, scores, r["widths"])
        ctx.log(f"{kind}: {cfg.scope} scope, rank {cfg.rank}: predicted {r['predicted_ms']:.4f} ms")
        return model, [{k: v for k, v in r.items()}]
    return run


def _regularised_training(ctx: MethodContext, model: nn.Module, epochs: int, lr: float, hook) -> List[Dict[str, float]]:
    history = train(model, ctx.data, ctx.train_config(epochs, lr), after_backward=hook,
                    on_epoch=lambda e, m: ctx.log(f"  epoch {e}/{epochs}: train loss {m['train_loss']:.4f}, "
                                                  f"val top-1 {m['val_top1']:.2f}%"))
    model.eval()
    return history


def run_slimming(ctx: MethodContext, cfg: SlimmingConfig):
    model = copy.deepcopy(ctx.model)
    reg = SlimmingRegularizer(model, cfg.strength, cfg.penalty)
    ctx.log(f"slimming: {cfg.method_epochs} epochs of sparsity training, {cfg.penalty} {cfg.strength:g}")
    hist = _regularised_training(ctx, model, cfg.method_epochs, cfg.method_lr, lambda s, n: reg.regularize(model))
    records = [{"stage": "sparsity", "epochs": hist}]
    base_ms = ctx.predict(ctx.widths(model))
    k_rounds = cfg.pruning_iterations
    for k in range(1, k_rounds + 1):
        scores = criteria.bn_scale_scores(model, ctx.space, ctx.input_shape)
        if ctx.pruning_rate is not None:
            # the parameters of the unpruned model are what the rate counts; round k removes its share
            rate = 1 - (1 - ctx.pruning_rate) ** (k / k_rounds)
            total0 = ctx.count_params(ctx.widths(ctx.model))
            now = ctx.count_params(ctx.widths(model))
            sub = replace(ctx, pruning_rate=max(1e-9, 1 - (1 - rate) * total0 / now))
            r = _select(sub, model, scores, None, "global", cfg.rank)
        else:
            r = _select(ctx, model, scores, _round_target(ctx, base_ms, k, k_rounds), "global", cfg.rank)
        _prune(ctx, model, scores, r["widths"])
        ft = []
        if k < k_rounds and cfg.fine_tuning_epochs:
            ft = _regularised_training(ctx, model, cfg.fine_tuning_epochs, cfg.method_lr, None)
        ctx.log(f"slimming round {k}/{k_rounds}: predicted {r['predicted_ms']:.4f} ms")
        records.append({"stage": "prune", "round": k, "widths": r["widths"], "predicted_ms": r["predicted_ms"],
                        "fine_tuning": ft})
    return model, records


def run_swd(ctx: MethodContext, cfg: SWDConfig):
    model = copy.deepcopy(ctx.model)
    members = {g.name: [model.get_submodule(m) for m in g.members] for g in ctx.space.groups}
    bns = criteria.group_batchnorms(model, ctx.space, ctx.input_shape)
    imp = tp.importance.MagnitudeImportance(p=2)
    steps_per_epoch = math.ceil(len(ctx.data.train) / ctx.batch_size)
    reg = SWDRegularizer(members, bns, cfg.mu, cfg.a_min, cfg.a_max, steps_per_epoch * cfg.method_epochs)
    widths0 = ctx.widths(model)
    targets_log = []

    def targets():
        scores = criteria.group_scores(model, ctx.space, imp, ctx.input_shape)
        r = _select(ctx, model, scores, ctx.budget_ms, cfg.criterion, cfg.rank, cfg.min_keep)
        return scores, r

    def hook(step, total):
        if step % cfg.refresh_steps == 0:
            scores, r = targets()
            reg.set_targets({g: torch.topk(-scores[g], widths0[g] - r["widths"][g]).indices.tolist()
                             for g in widths0 if widths0[g] > r["widths"][g]})
            model.train()
            targets_log.append({"step": step, "a": reg.a(step), "widths": r["widths"]})
        reg.regularize(model)

    ctx.log(f"SWD: {cfg.method_epochs} epochs, mu {cfg.mu:g}, a {cfg.a_min:g} -> {cfg.a_max:g}, criterion "
            f"{cfg.criterion}, targets every {cfg.refresh_steps} steps")
    hist = _regularised_training(ctx, model, cfg.method_epochs, cfg.method_lr, hook)
    scores, r = targets()
    _prune(ctx, model, scores, r["widths"])
    ctx.log(f"SWD: removed the target set, predicted {r['predicted_ms']:.4f} ms")
    return model, [{"stage": "swd", "epochs": hist, "targets": targets_log},
                   {"stage": "prune", "widths": r["widths"], "predicted_ms": r["predicted_ms"]}]


def run_morphnet(ctx: MethodContext, cfg: MorphNetConfig):
    model = copy.deepcopy(ctx.model)
    records = []
    for k in range(1, cfg.morphnet_rounds + 1):
        bns = criteria.group_batchnorms(model, ctx.space, ctx.input_shape)
        reg = MorphNetRegularizer(bns, cfg.morphnet_strength)
        costs_log = []

        def alive() -> Dict[str, int]:
            s = criteria.bn_scale_scores(model, ctx.space, ctx.input_shape, bns)
            return {g: criteria.grid_ceil(ctx.grids[g], max(int((v >= cfg.gamma_threshold).sum()), 1))
                    for g, v in s.items()}

        def hook(step, total, reg=reg, costs_log=costs_log):
            if step % cfg.refresh_steps == 0:
                a = alive()
                reg.set_costs(criteria.marginal_ms(ctx.predictor, a, ctx.grids))
                costs_log.append({"step": step, "alive": a, "ms_per_channel": dict(reg.costs)})
            reg.regularize(model)

        ctx.log(f"MorphNet round {k}/{cfg.morphnet_rounds}: {cfg.method_epochs} epochs, strength "
                f"{cfg.morphnet_strength:g} per ms")
        hist = _regularised_training(ctx, model, cfg.method_epochs, cfg.method_lr, hook)
        current = ctx.widths(model)
        shrunk = {g: min(w, current[g]) for g, w in alive().items()}
        # expand: one multiplier on the shrunk widths, as large as the budget allows, never past the current widths
        r = criteria.uniform_widths(ctx.predictor, shrunk, ctx.grids, ctx.budget_ms, cap=current)
        scores = criteria.bn_scale_scores(model, ctx.space, ctx.input_shape, bns)
        _prune(ctx, model, scores, r["widths"])
        ctx.log(f"MorphNet round {k}: shrink to {sum(shrunk.values())} channels, expand x{r['multiplier']:.3f} to "
                f"{sum(r['widths'].values())}, predicted {r['predicted_ms']:.4f} ms")
        records.append({"round": k, "epochs": hist, "costs": costs_log, "shrunk": shrunk,
                        "multiplier": r["multiplier"], "widths": r["widths"], "predicted_ms": r["predicted_ms"]})
    return model, records


def _kfac_batches(ctx: MethodContext, n: int, seed: int) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for x, y in ctx.data.batches("train", ctx.batch_size, shuffle=True, generator=g):
        if len(out) >= n:
            break
        out.append((x, y))
    return out


def run_eigendamage(ctx: MethodContext, cfg: EigenDamageConfig):
    model = copy.deepcopy(ctx.model).eval()
    base_ms = ctx.predict(ctx.widths(model))
    records, threshold = [], 0.0
    for k in range(1, cfg.pruning_iterations + 1):
        batches = _kfac_batches(ctx, cfg.kfac_batches, ctx.seed + k)
        factors = ed.kfac_factors(model, batches)
        bases = ed.layer_bases(model, batches, cfg.damping, cfg.correct_eigenvalues, factors=factors)
        scores = ed.group_saliency(model, ctx.space, bases)
        r = _select(ctx, model, scores, _round_target(ctx, base_ms, k, cfg.pruning_iterations), "global", cfg.rank)
        widths = ctx.widths(model)
        removed = [float(v) for g, s in scores.items() if r["widths"][g] < widths[g]
                   for v in torch.sort(s).values[:widths[g] - r["widths"][g]]]
        threshold = max(removed, default=0.0)  # the most salient channel removed: the round's saliency cut (nats)
        kept = _prune(ctx, model, scores, r["widths"])
        ft = []
        if k < cfg.pruning_iterations and cfg.fine_tuning_epochs:
            ft = _regularised_training(ctx, model, cfg.fine_tuning_epochs, cfg.method_lr, None)
        ctx.log(f"eigendamage round {k}/{cfg.pruning_iterations}: {len(removed)} channels removed (saliency cut "
                f"{threshold:.3g}), predicted {r['predicted_ms']:.4f} ms")
        records.append({"stage": "prune", "round": k, "widths": r["widths"], "predicted_ms": r["predicted_ms"],
                        "saliency_cut": threshold, "channels_removed": len(removed), "fine_tuning": ft})
    if cfg.eigenbasis == "latency":
        # the last round's curvature (the network before it was pruned), restricted to what it kept: a freshly
        # pruned network's own curvature is that of a network not yet recovered
        decision = ed.eigen_form_decision(ctx, model, factors, kept, cfg, threshold)
        records.append({"stage": "eigenbasis", **decision})
    return model, records


def run_snip(ctx: MethodContext, cfg: SnipMethodConfig):
    model = copy.deepcopy(ctx.model).eval()
    g = torch.Generator().manual_seed(ctx.seed)
    x, y = next(iter(ctx.data.batches("train", cfg.prune_batch, shuffle=True, generator=g)))
    members = [(grp.name, m) for grp in ctx.space.groups for m in grp.members]
    layers = [model.get_submodule(m) for _, m in members]
    loss = None
    if hasattr(model, "forward_exits"):  # every classifier's loss, as the network was trained
        def loss(m, x, y):
            return sdn_loss(m.forward_exits(x), y, sdn_weights(m.exit_depths(), 1.0))
    per = snip_scores(model, layers, x, y, loss)
    scores: criteria.Scores = {}
    for (grp, _), s in zip(members, per):
        ch = s.sum(dim=tuple(range(1, s.ndim)))
        scores[grp] = scores[grp] + ch if grp in scores else ch
    r = _select(ctx, model, scores, ctx.budget_ms, cfg.scope, cfg.rank, cfg.min_keep)
    _prune(ctx, model, scores, r["widths"])
    ctx.log(f"snip: {cfg.prune_batch} examples, {cfg.scope} scope, rank {cfg.rank}: predicted "
            f"{r['predicted_ms']:.4f} ms")
    return model, [dict(r)]


METHODS: Dict[str, MethodSpec] = {name: MethodSpec(name, run) for name, run in (
    ("netadapt", run_netadapt), ("uniform", run_uniform), ("magnitude", run_criterion("magnitude")),
    ("taylor", run_criterion("taylor")), ("slimming", run_slimming), ("swd", run_swd), ("morphnet", run_morphnet),
    ("eigendamage", run_eigendamage), ("snip", run_snip))}
assert list(METHODS) == list(METHOD_TRAITS), "every method has its traits in prune/config.py, in the same order"


def method_spec(name: str) -> MethodSpec:
    """Raises UserError for an unknown method, naming the known ones."""
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


def method_options(name: str) -> Tuple[str, ...]:
    """The option names (config fields) that belong to ``name``."""
    return tuple(f.name for f in fields(method_spec(name).config) if f.name != "budget_ms")


def recover(model: nn.Module, mode: str, ctx: MethodContext, epochs: int, lr: float,
            original: Optional[Dict[str, object]], on_epoch=None) -> Tuple[nn.Module, List[Dict[str, float]], Dict[str, object]]:
    """Recovery training after pruning.

    - ``fine-tune``: ``epochs`` at ``lr``, cosine (NetAdapt's long-term fine-tuning).
    - ``lr-rewind``: Renda et al. 2020: the last ``epochs`` of the original training schedule (``original``, the
      checkpoint's ``train_config``) replayed from the pruned weights.
    - ``scratch``: the pruned architecture from a fresh initialisation, trained with the original schedule in full
      (the NetAdapt thesis and MobileNetV3 found this better than fine-tuning).
    - ``none``.
    - with the user's functions (:class:`~edgeshrink.host.train.UserTrainer`): their ``train(model)``, whatever ``mode``.

    Returns:
        ``(model, per-epoch history, {"mode", "epochs", "schedule"})``.

    Raises:
        UserError: an unknown mode, or ``lr-rewind`` / ``scratch`` for a checkpoint without its training schedule.
    """
    if isinstance(ctx.trainer, UserTrainer):  # the user's train(model) is the recovery (edgeshrink.shrink)
        if ctx.trainer.train is None:
            return model, [], {"mode": "none", "epochs": 0}
        ctx.log("recovery: the user's train(model)")
        ctx.trainer.recover(model)
        return model, [], {"mode": "user-train"}
    if mode not in RECOVERY:
        raise UserError(f"--recover must be one of {', '.join(RECOVERY)}, got {mode!r}")
    if mode == "none" or (mode == "fine-tune" and epochs == 0):
        return model, [], {"mode": mode, "epochs": 0}
    def loss(m):  # a network with internal classifiers recovers with all of them (the SDN loss)
        if not hasattr(m, "forward_exits"):
            return None

        return sdn_loss_fn(m)

    if mode == "fine-tune":
        cfg = ctx.train_config(epochs, lr)
        return model, train(model, ctx.data, cfg, on_epoch=on_epoch, loss_fn=loss(model)), {
            "mode": mode, "epochs": epochs, "schedule": cfg.to_dict()}
    if not isinstance(original, dict):
        raise UserError(f"--recover {mode} replays the original training schedule, and the checkpoint has none "
                        "(train it with `host train`, or use --recover fine-tune)")
    try:
        known = {f.name for f in fields(TrainConfig)}
        cfg = TrainConfig(**{k: v for k, v in original.items() if k in known})
    except TypeError as e:
        raise UserError(f"the checkpoint's train_config is unreadable ({e})") from None
    if mode == "lr-rewind":
        start = max(cfg.epochs - epochs, 0)
        return model, train(model, ctx.data, cfg, start_epoch=start, on_epoch=on_epoch, loss_fn=loss(model)), {
            "mode": mode, "epochs": cfg.epochs - start, "rewound_to_epoch": start, "schedule": cfg.to_dict()}
    torch.manual_seed(ctx.seed)
    fresh = models.create_model(ctx.name, ctx.num_classes, models.channel_spec(model), input_shape=ctx.space.input_shape,
                                exits=getattr(model, "after", None))
    return fresh, train(fresh, ctx.data, cfg, on_epoch=on_epoch, loss_fn=loss(fresh)), {"mode": mode, "epochs": cfg.epochs,
                                                                   "schedule": cfg.to_dict()}


__all__ = ["METHODS", "MethodContext", "MethodSpec", "check_method_reachable", "run_netadapt", "UniformConfig", "MagnitudeConfig", "TaylorConfig",
           "SlimmingConfig", "SWDConfig", "MorphNetConfig", "EigenDamageConfig", "SnipMethodConfig", "check_config", "method_spec", "method_options", "recover"]

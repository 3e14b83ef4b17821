"""Training, fine-tuning and evaluation on an in-memory :class:`edgeshrink.host.data.Dataset`, and ``host train``
(:func:`train_and_save`)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Protocol, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeshrink import models
from edgeshrink.host import distributed as dist_
from edgeshrink.host import ui
from edgeshrink.host.checkpoint import save_checkpoint
from edgeshrink.host.data import Dataset, Split, load_dataset
from edgeshrink.host.dynamic.grow import (GrowthConfig, block_layers, check_configs, evenly_spaced, finalize_masks_,
                                          iterative_keep, mask_block_, reinit_block_, sdn_loss, sdn_loss_fn,
                                          sdn_weights, sparsity, structured_block_)
from edgeshrink.host.dynamic.skipnet import block_weights, rl_loss
from edgeshrink.host.errors import UserError
from edgeshrink.host.io import prepare_dir, write_json
from edgeshrink.host.latency.predict import TablePredictor
from edgeshrink.host.latency.table import load_table
from edgeshrink.host.names import OPTIMIZERS, SCHEDULES
from edgeshrink.host.prune.snip import snip_scores
from edgeshrink.host.seg import make_criterion, parse_metrics
from edgeshrink.host.tensorboard import open_writer
from edgeshrink.models.cells import CellNet, ExitResNet
from edgeshrink.models.gated import GatedResNet, add_gates


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum) or "adam"
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9  # SGD only
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # "step", "multistep", "cosine", "poly", "constant"
    step_size: int = 30  # epochs between decays ("step")
    milestones: Sequence[int] = field(default_factory=lambda: (100, 150))  # epochs ("multistep")
    gamma: float = 0.1  # decay factor ("step", "multistep")
    power: float = 0.9  # "poly": lr * (1 - t/T)^power
    label_smoothing: float = 0.0  # off by default
    seed: int = 0
    criterion: str = "crossentropy"  # or "rmi" (segmentation: Region Mutual Information + BCE, host.seg.RMILoss)

    def to_dict(self) -> Dict[str, object]:
        d = asdict(self)
        d["milestones"] = list(d["milestones"])
        return d




def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum or Adam; no weight decay on BN parameters and biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; known: {', '.join(OPTIMIZERS)}")


def lr_factor(cfg: TrainConfig, epoch_float: float) -> float:
    """Learning-rate multiplier at a (fractional) epoch for the configured schedule."""
    t, total = epoch_float, max(cfg.epochs, 1)
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(t / total, 1.0)))
    if cfg.schedule == "poly":
        return max(1 - t / total, 0.0) ** cfg.power
    if cfg.schedule == "step":
        return cfg.gamma ** int(t // max(cfg.step_size, 1))
    if cfg.schedule == "multistep":
        return cfg.gamma ** sum(t >= m for m in cfg.milestones)
    if cfg.schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {cfg.schedule!r}; known: {', '.join(SCHEDULES)}")


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, split: str = "val", batch_size: int = 512,
             shard: bool = False) -> Dict[str, object]:
    """Top-1 and top-5 accuracy in percent and mean cross-entropy on ``split``; for a segmentation dataset also mIoU
    and per-class IoU in percent, top-1 / top-5 then per labelled pixel (:func:`edgeshrink.host.seg.evaluate_segmentation`).

    ``shard``: in a distributed run each rank evaluates its share of the split and the counts are summed over the
    ranks (every rank must call it with the same model); ignored in a single process.
    """
    sharded = shard and dist_.active()
    reduce = dist_.all_sum if sharded else None
    if sharded:
        part = getattr(data, split)
        sl = dist_.shard(len(part))
        from edgeshrink.host.data import Split

        data = data.with_split(split, Split(part.images[sl], part.labels[sl]))
    dev = next(iter(model.parameters()), torch.empty(0)).device  # a DDP-trained model evaluates where it trains
    batches = ((x.to(dev), y.to(dev)) for x, y in data.batches(split, batch_size))
    if getattr(data, "task", "classification") == "segmentation":
        from edgeshrink.host.seg import evaluate_segmentation

        return evaluate_segmentation(model, batches, data.num_classes, reduce=reduce)
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)  # top-1 hits, top-5 hits, loss sum, count
    for x, y in batches:
        logits = model(x)
        sums[2] += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        sums[0] += (top[:, 0] == y).sum().item()
        sums[1] += (top == y.unsqueeze(1)).any(dim=1).sum().item()
        sums[3] += y.numel()
    if reduce is not None:
        sums = reduce(sums)
    n = max(float(sums[3]), 1.0)
    return {"top1": 100.0 * float(sums[0]) / n, "top5": 100.0 * float(sums[1]) / n, "loss": float(sums[2]) / n}


def primary_metric(data: Dataset) -> str:
    """The metric models are selected by: the first of the dataset's ``metrics`` (``miou`` for segmentation)."""
    return getattr(data, "metrics", ("top1",))[0]


def criterion_for(data: Dataset, cfg: "TrainConfig") -> nn.Module:
    """The training loss of ``cfg.criterion`` for ``data``'s task.

    Raises:
        UserError: an unknown criterion, or RMI for classification.
    """
    try:
        return make_criterion(cfg.criterion, data.num_classes, getattr(data, "task", "classification"),
                              cfg.label_smoothing)
    except ValueError as e:
        raise UserError(str(e)) from None


def train(model: nn.Module, data: Dataset, cfg: TrainConfig,
          on_epoch: Optional[Callable[[int, Dict[str, float]], None]] = None,
          on_step: Optional[Callable[[int, int], None]] = None, start_epoch: int = 0,
          after_backward: Optional[Callable[[int, int], None]] = None,
          loss_fn: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
          stop_epoch: Optional[int] = None,
          stop_when: Optional[Callable[[int, Dict[str, float]], bool]] = None) -> List[Dict[str, float]]:
    """Train ``model`` in place on ``data.train`` with augmentation; evaluates on val after each epoch.

    Args:
        on_epoch: ``on_epoch(epoch, metrics)`` with train loss, lr and val top-1/top-5.
        on_step: ``on_step(step, total_steps)`` for progress bars.
        start_epoch: train epochs ``start_epoch .. cfg.epochs - 1`` of the schedule only (learning-rate rewinding,
            Renda et al. 2020, replays the last epochs of the original schedule).
        after_backward: ``after_backward(step, total_steps)`` between ``loss.backward()`` and the optimiser step,
            where a regulariser adds its gradient (network slimming, SWD, MorphNet).
        loss_fn: ``loss_fn(logits, y)`` instead of the cross-entropy (SkipNet's hybrid RL loss, SDN's weighted
            loss); the reported train loss is then that loss.
        stop_epoch: stop before this epoch of the schedule (a growth phase trains part of one schedule).
        stop_when: ``stop_when(epoch, metrics)`` after each epoch; True stops there (loss-based growth).

    In a distributed run (:mod:`edgeshrink.host.distributed`) the model trains wrapped in DistributedDataParallel:
    every rank draws the same global batch and trains on its contiguous share; validation is sharded and reduced.

    Returns:
        One metrics dict per epoch trained.
    """
    ddp = dist_.active()
    net = model
    if ddp:
        from torch.nn.parallel import DistributedDataParallel

        if torch.cuda.is_available():  # NCCL: one GPU per rank, BN synchronised across them
            model.cuda()
            net = DistributedDataParallel(nn.SyncBatchNorm.convert_sync_batchnorm(model))
        else:
            net = DistributedDataParallel(model)
        world, me = dist_.world_size(), dist_.rank()
    # a later phase of one schedule draws other batches than its first (seeded by where it starts)
    torch.manual_seed(cfg.seed + int(start_epoch))
    g = torch.Generator().manual_seed(cfg.seed + int(start_epoch))
    opt = make_optimizer(model, cfg)
    crit = criterion_for(data, cfg)
    steps_per_epoch = math.ceil(len(data.train) / cfg.batch_size)
    start_epoch = min(max(int(start_epoch), 0), cfg.epochs)
    end = cfg.epochs if stop_epoch is None else min(max(int(stop_epoch), start_epoch), cfg.epochs)
    total = steps_per_epoch * (end - start_epoch)
    history, step = [], 0
    for epoch in range(start_epoch, end):
        model.train()
        loss_sum, seen = 0.0, 0
        for x, y in data.batches("train", cfg.batch_size, shuffle=True, augment=True, generator=g):
            lr = cfg.lr * lr_factor(cfg, start_epoch + step / steps_per_epoch)
            for pg in opt.param_groups:
                pg["lr"] = lr
            if ddp:
                if len(y) < world:  # a last batch too small to share: every rank skips it alike
                    continue
                sl = dist_.shard(len(y), me, world)
                x, y = x[sl], y[sl]
                if torch.cuda.is_available():
                    x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            out = net(x)
            loss = crit(out, y) if loss_fn is None else loss_fn(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if after_backward:
                after_backward(step, total)
            opt.step()
            loss_sum += loss.item() * y.numel()
            seen += y.numel()
            step += 1
            if on_step:
                on_step(step, total)
        if ddp:
            loss_sum, seen = (float(v) for v in dist_.all_sum(torch.tensor([loss_sum, float(seen)], dtype=torch.float64)))
        m = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "lr": lr,
             **{f"val_{k}": v for k, v in evaluate(model, data, "val", shard=ddp).items() if k != "per_class_iou"}}
        history.append(m)
        if on_epoch:
            on_epoch(epoch + 1, m)
        if stop_when is not None and stop_when(epoch + 1, m):
            break
    if ddp and torch.cuda.is_available():
        model.cpu()
    return history


def train_gated(model: nn.Module, data: Dataset, cfg: TrainConfig, rl=None,
                weights: Optional[Dict[str, float]] = None, on_epoch=None, on_step=None) -> List[Dict[str, float]]:
    """Supervised pre-training (``rl`` None) or the hybrid RL stage (``rl``, an
    :class:`edgeshrink.host.dynamic.skipnet.RLConfig`, and the blocks' latency ``weights``) of a SkipNet-gated network, in
    place, with :func:`train`'s loop and schedule (the loss: :func:`edgeshrink.host.dynamic.skipnet.rl_loss`).

    Raises:
        UserError: ``rl`` without ``weights`` for every gated block.
    """
    if rl is None:
        model.policy = "hard"
        return train(model, data, cfg, on_epoch=on_epoch, on_step=on_step)
    rl.check()
    if weights is None or set(weights) != set(model.gated):
        raise UserError("--rl needs each gated block's latency share from a table (--table)")
    w = torch.tensor([weights[n] for n in model.gated], dtype=torch.float32)
    model.policy = "sample"
    try:
        return train(model, data, cfg, on_epoch=on_epoch, on_step=on_step,
                     loss_fn=lambda logits, y: rl_loss(model, logits, y, w, rl))
    finally:
        model.policy = "hard"


def train_cells(model: nn.Module, data: Dataset, cfg: TrainConfig, growth=None, snip=None,
                log: Callable[[str], None] = print, on_epoch=None,
                on_step=None) -> Dict[str, object]:
    """Train a cell network (or an :class:`~edgeshrink.models.cells.ExitResNet`) in place with the SDN loss,
    growing it and pruning it with SNIP as configured (:mod:`edgeshrink.host.dynamic.grow`: ``growth`` a ``GrowthConfig``,
    ``snip`` a ``SnipConfig``), with :func:`train`'s loop, one call per growth phase on one schedule.

    Returns:
        ``{"history": per-epoch metrics (with ``active_blocks``), "grown_at": epochs after which a block was added,
        "pruning": one record per pruning (epoch, blocks, keep ratios, kept), "sparsity" (unstructured),
        "widths" (structured)}``.

    Raises:
        UserError: settings that do not fit (:func:`check_configs`).
    """
    check_configs(model, cfg.epochs, growth, snip)
    cells = isinstance(model, CellNet)
    n_blocks = len(model.blocks) if cells else model.active
    growing = cells and model.growing
    deadlines = ()
    if growing:
        g = growth or GrowthConfig()
        deadlines = g.grow_epochs if g.grow_epochs is not None else evenly_spaced(cfg.epochs, n_blocks)
        model.active = 1
    else:
        g = growth or GrowthConfig()
    steps_per_epoch = math.ceil(len(data.train) / cfg.batch_size)
    shape = (1, *data.input_shape[1:])
    state = {"epoch": 0, "step": 0}
    pruned_times = [0] * n_blocks
    records: List[Dict[str, object]] = []
    gen = torch.Generator().manual_seed(cfg.seed + 7)

    loss_fn = sdn_loss_fn(model, lambda: (state["epoch"] + state["step"] / steps_per_epoch) / cfg.epochs, g.ic_max)

    def sdn_of(m, x, y):
        out = m(x)
        return sdn_loss(m.last_exits, y, sdn_weights(m.exit_depths(), state["epoch"] / cfg.epochs, g.ic_max)) \
            if m.last_exits else F.cross_entropy(out, y)

    def prune_step(epoch: int, new_block: Optional[int]) -> None:
        if snip is None:
            return
        if snip.policy == "skip_layer":
            targets = [new_block] if new_block is not None else list(range(model.active))
            targets = [b for b in targets if pruned_times[b] == 0]
        else:
            targets = list(range(model.active))
        if not targets:
            return
        x, y = next(iter(data.batches("train", snip.prune_batch, shuffle=True, generator=gen)))
        layers = [m for b in targets for _, m in block_layers(model, b)]
        scores = snip_scores(model, layers, x, y, sdn_of)
        rec = {"epoch": epoch, "blocks": targets, "keep": {}, "kept": {}}
        at = 0
        floors = snip.min_keep if snip.min_keep is not None else tuple(min(0.1, k) for k in snip.keep)
        for b in targets:
            nl = len(block_layers(model, b))
            s = scores[at:at + nl]
            at += nl
            pruned_times[b] += 1
            keep = snip.keep[b]
            if snip.policy == "iterative":
                keep = iterative_keep(keep, pruned_times[b], floors[b] if len(floors) > 1 else floors[0])
            rec["keep"][f"block{b}"] = keep
            if snip.form == "unstructured":
                rec["kept"][f"block{b}"] = mask_block_([m for _, m in block_layers(model, b)], s, keep)
            else:
                rec["kept"][f"block{b}"] = structured_block_(model, b, s, keep, shape)
            if snip.reinit:
                reinit_block_(model, b)
        records.append(rec)
        log(f"SNIP ({snip.form}, {snip.policy}) after epoch {epoch}: " + ", ".join(
            f"block {b} keeps {rec['keep'][f'block{b}']:.3g}" for b in targets))

    prune_step(0, 0 if growing else None)
    history: List[Dict[str, float]] = []
    grown_at: List[int] = []
    epoch = 0
    while epoch < cfg.epochs:
        stops = [cfg.epochs] + [e for e in snip.prune_epochs if e > epoch] if snip else [cfg.epochs]
        can_grow = growing and model.active < n_blocks
        if can_grow:
            stops.append(deadlines[model.active - 1])
        stop = max(min(stops), epoch + 1)  # every phase trains at least one epoch
        last = {"loss": None}

        def plateau(e, m, last=last):
            prev, last["loss"] = last["loss"], m["train_loss"]
            last["hit"] = prev is not None and (prev - m["train_loss"]) < g.tolerance * prev
            return last["hit"]

        state["epoch"] = epoch

        def step_hook(s, n, base=epoch):
            state["step"] = s % steps_per_epoch
            state["epoch"] = base + s // steps_per_epoch
            if on_step:
                on_step(base * steps_per_epoch + s, cfg.epochs * steps_per_epoch)

        def epoch_hook(e, m):
            m["active_blocks"] = model.active
            if on_epoch:
                on_epoch(e, m)

        h = train(model, data, cfg, start_epoch=epoch, stop_epoch=stop, loss_fn=loss_fn, on_step=step_hook,
                  on_epoch=epoch_hook, stop_when=plateau if (can_grow and g.criterion == "loss") else None)
        epoch = int(h[-1]["epoch"]) if h else stop
        history += h
        if can_grow and epoch < cfg.epochs and (epoch >= deadlines[model.active - 1] or last.get("hit")):
            model.active += 1
            grown_at.append(epoch)
            log(f"growth after epoch {epoch}: block {model.active - 1} added ({model.active}/{n_blocks} blocks)")
            prune_step(epoch, model.active - 1)
        if snip and epoch in snip.prune_epochs and epoch < cfg.epochs:
            prune_step(epoch, None)
    model.eval()
    out: Dict[str, object] = {"history": history, "grown_at": grown_at, "pruning": records}
    if snip is not None and snip.form == "unstructured":
        finalize_masks_(model)
        out["sparsity"] = sparsity(model)
    elif snip is not None:
        from edgeshrink.models import channel_spec

        out["widths"] = channel_spec(model)
    return out


def fine_tune_steps(model: nn.Module, data: Dataset, steps: int, lr: float = 0.01, batch_size: int = 64,
                    weight_decay: float = 5e-4, seed: int = 0, criterion: str = "crossentropy") -> None:
    """Short-term fine-tuning (NetAdapt, Yang et al. 2018, Sec. 3.2): ``steps`` SGD steps at a constant
    ``lr`` on augmented training batches, cycling over the training split as needed, with ``criterion`` (the
    segmentation losses ignore the unlabelled pixels). Runs in this process only, never under DDP."""
    if steps <= 0:
        return
    g = torch.Generator().manual_seed(seed)
    cfg = TrainConfig(lr=lr, weight_decay=weight_decay, schedule="constant", criterion=criterion)
    opt = make_optimizer(model, cfg)
    crit = criterion_for(data, cfg)
    model.train()
    done = 0
    while done < steps:
        for x, y in data.batches("train", batch_size, shuffle=True, augment=True, generator=g):
            loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done >= steps:
                break
    model.eval()


class Trainer(Protocol):
    """What a pruning method trains and judges a network with (:class:`DatasetTrainer` or :class:`UserTrainer`).

    ``data`` is the dataset when there is one (the methods that read training batches themselves need it: Taylor,
    slimming, SWD, MorphNet, EigenDamage, SNIP, and recovery other than the user's ``train``); None for the user's
    functions alone.
    """

    data: Optional[Dataset]
    metric: str  # what score() measures: "top1", "miou", or "score" (the user's test)

    def fine_tune(self, model: nn.Module, steps: int, lr: float) -> None:
        """Short-term fine-tuning of a candidate, in place (NetAdapt, Yang et al. 2018, Sec. 3.2)."""

    def score(self, model: nn.Module) -> float:
        """The candidate's score on held-out data, larger is better (val top-1 / mIoU in %, or the user's test)."""


class DatasetTrainer:
    """The dataset's trainer: :func:`fine_tune_steps` on its training split and :func:`evaluate` on its val split
    (``val_subset``: a seeded subset of that many val images), the first of ``data.metrics`` as the score."""

    def __init__(self, data: Dataset, criterion: str = "crossentropy", batch_size: int = 64, seed: int = 0,
                 val_subset: Optional[int] = None):
        self.data, self.criterion, self.batch_size, self.seed = data, criterion, batch_size, seed
        self.metric = primary_metric(data)
        self.eval_data = data
        if val_subset is not None and val_subset < len(data.val):
            idx = torch.randperm(len(data.val), generator=torch.Generator().manual_seed(seed))[:val_subset]
            idx = idx.sort().values
            self.eval_data = data.with_split("val", Split(data.val.images[idx], data.val.labels[idx]))

    def fine_tune(self, model: nn.Module, steps: int, lr: float) -> None:
        fine_tune_steps(model, self.data, steps, lr=lr, batch_size=self.batch_size, seed=self.seed,
                        criterion=self.criterion)

    def score(self, model: nn.Module) -> float:
        return float(evaluate(model, self.eval_data, "val")[self.metric])


class UserTrainer:
    """The user's three functions (:func:`edgeshrink.shrink`, the DNN-shrink-tool's workflow): ``train_one_epoch(model,
    lr)`` fine-tunes a candidate (one epoch stands for NetAdapt's short-term steps), ``test(model) -> float`` (larger is
    better) scores it, ``train(model)`` is the recovery after pruning (None: none). ``unwrap`` maps the network the
    methods prune to the module the user's functions take (an output selector's inner model)."""

    data = None
    metric = "score"

    def __init__(self, train_one_epoch=None, train=None, test=None, unwrap=None):
        self.train_one_epoch, self.train, self.test = train_one_epoch, train, test
        self.unwrap = unwrap or (lambda m: m)

    def fine_tune(self, model: nn.Module, steps: int, lr: float) -> None:
        self.train_one_epoch(self.unwrap(model), lr)

    def score(self, model: nn.Module) -> float:
        return float(self.test(self.unwrap(model)))

    def recover(self, model: nn.Module) -> None:
        model.train()
        self.train(self.unwrap(model))
        model.eval()


def train_and_save(model_name: str, dataset: str, data_dir: Optional[str], cfg: TrainConfig, out: str,
                   download: bool = False, train_subset: Optional[int] = None, image_size: Optional[int] = None,
                   tensorboard: Optional[str] = None, gates: Optional[Dict[str, object]] = None,
                   init: Optional[str] = None, rl=None, perf_table: Optional[str] = None,
                   exits: Optional[Sequence[str]] = None, growth=None, snip=None,
                   metrics: Optional[str] = None) -> Dict[str, object]:
    """``host train``: train a registry model (or a ``file.py:factory`` reference) from its initialisation and write
    ``OUT/model.pt`` (a checkpoint) and ``OUT/metrics.json`` (val and test top-1/top-5 in %, the per-epoch history,
    the config, wall time). ``image_size`` resizes the dataset's images; ``tensorboard`` also logs the epochs there
    (:mod:`edgeshrink.host.tensorboard`).

    SkipNet (:mod:`edgeshrink.host.dynamic.skipnet`): ``gates`` (``{"kind": "ff" | "rnn", "hidden": N}``) adds gates before
    the residual blocks and trains with them (supervised pre-training); ``rl`` (an ``RLConfig``) trains the hybrid
    reinforcement stage instead, the blocks' latency shares from ``perf_table``. ``init`` starts from a checkpoint's
    weights (its architecture, pruned or not, and its gates unless ``gates`` names others) instead of an
    initialisation.

    Internal classifiers (:mod:`edgeshrink.host.dynamic.grow`): a cell network (``cells_*``), or a CIFAR ResNet with
    ``exits`` (block names), trains with the SDN loss; ``growth`` (a ``GrowthConfig``) grows a growing cell network,
    ``snip`` (a ``SnipConfig``) prunes it with SNIP. The metrics then hold each classifier's val and test top-1.

    Returns:
        The metrics.

    Raises:
        DatasetError: the dataset is missing or unreadable. ModelError: an unknown model, or gates on a network that
        cannot carry them. UserError: ``rl`` without gates or without a table. CheckpointError: a bad ``init``.
    """
    data = load_dataset(dataset, data_dir, seed=cfg.seed, download=download, train_subset=train_subset,
                        image_size=image_size)
    data = with_metrics(data, metrics)
    criterion_for(data, cfg)  # an impossible criterion is refused before any work
    writer = open_writer(tensorboard)
    torch.manual_seed(cfg.seed)
    if init:
        from edgeshrink.host.checkpoint import load_checkpoint, model_from_checkpoint

        ck = load_checkpoint(init)
        if ck["num_classes"] != data.num_classes:
            from edgeshrink.host.errors import UserError

            raise UserError(f"--init {init} has {ck['num_classes']} classes, {data.name} has {data.num_classes}")
        model, model_name = model_from_checkpoint(ck, path=init), ck["model"]
    else:
        model = models.create_model(model_name, data.num_classes)
    check_task(model, data)
    model, weights = _with_gates(model, gates, rl, perf_table)
    if exits:
        from edgeshrink.models.cells import add_exits

        try:
            model = add_exits(model, exits)
        except models.ModelError as e:
            from edgeshrink.host.errors import UserError

            raise UserError(f"--exits: {e}") from None

    sdn = isinstance(model, (CellNet, ExitResNet))
    if (growth is not None or snip is not None) and not sdn:
        from edgeshrink.host.errors import UserError

        raise UserError("--grow-epochs, --growth and --keep are for the cell networks (cells_*; host models)")
    if sdn:
        from edgeshrink.host.dynamic.grow import check_configs

        check_configs(model, cfg.epochs, growth, snip)

    if dist_.is_main():
        prepare_dir(out, "--out")  # before training, not after
    dist_.barrier()
    if dist_.active():
        ui.log(f"distributed: {dist_.world_size()} ranks, each trains on 1/{dist_.world_size()} of every batch of "
               f"{cfg.batch_size} (DistributedDataParallel)")
    ui.log(f"training {model_name} on {data.name} ({len(data.train)} train / {len(data.val)} val / "
           f"{len(data.test)} test), {cfg.epochs} epochs, {cfg.optimizer} lr {cfg.lr} {cfg.schedule}")
    t0 = time.monotonic()
    with ui.progress() as prog:
        task = prog.add_task("training", total=None)

        def on_epoch(e, m):
            writer.scalars("train", m, e)
            if not ui.interactive() and (e % 5 == 0 or e == cfg.epochs):
                ui.log(f"epoch {e}/{cfg.epochs}: train loss {m['train_loss']:.4f}, val "
                       + metric_text(m, data.metrics, prefix="val_"))

        step = lambda s, n: prog.update(task, completed=s, total=n)  # noqa: E731
        grow_record = None
        if getattr(model, "gates", None):
            history = train_gated(model, data, cfg, rl, weights, on_epoch=on_epoch, on_step=step)
        elif sdn:
            grow_record = train_cells(model, data, cfg, growth, snip, log=ui.log, on_epoch=on_epoch, on_step=step)
            history = grow_record.pop("history")
        else:
            history = train(model, data, cfg, on_epoch=on_epoch, on_step=step)
    metrics = {"val": evaluate(model, data, "val", shard=True), "test": evaluate(model, data, "test", shard=True),
               "history": history, "metrics": list(data.metrics), "task": data.task,
               "world_size": dist_.world_size(),
               "train_config": cfg.to_dict(), "train_subset": train_subset, "wall_s": round(time.monotonic() - t0, 1), "dataset": data.name,
               "model": model_name, "model_source": models.describe_model(model)}
    extra = {}
    if getattr(model, "gates", None):
        from edgeshrink.host.dynamic.skipnet import evaluate_gated

        metrics["gates"] = {**model.gates, "stage": "rl" if rl else "supervised", "init": init,
                            "rl": rl.to_dict() if rl else None, "latency_shares": weights,
                            "val_block_rates": evaluate_gated(model, data, "val")["block_rates"],
                            "test_block_rates": evaluate_gated(model, data, "test")["block_rates"]}
        extra["gate_training"] = {k: v for k, v in metrics["gates"].items() if k != "latency_shares"}
        rates = metrics["gates"]["test_block_rates"]
        ui.log("blocks run on the test split: " + ", ".join(f"{b} {r:.0%}" for b, r in rates.items()))
    if sdn:
        from edgeshrink.host.dynamic.exits import evaluate_exits

        metrics["exits"] = {"names": model.exit_names, "val_top1": evaluate_exits(model, data, "val"),
                            "test_top1": evaluate_exits(model, data, "test"),
                            "growth": growth.to_dict() if growth else None, "snip": snip.to_dict() if snip else None,
                            **(grow_record or {})}
        extra["exit_training"] = {k: v for k, v in metrics["exits"].items() if k in ("growth", "snip", "grown_at",
                                                                                     "sparsity")}
        ui.log("test top-1 per exit: " + ", ".join(f"{n} {v:.2f}%" for n, v in
                                                  zip(model.exit_names, metrics["exits"]["test_top1"])))
    writer.close()
    metrics = {"schema": "edgeshrink.train_metrics", "schema_version": 1, **metrics}
    if dist_.is_main():
        save_checkpoint(str(Path(out) / "model.pt"), model, data.num_classes, dataset=data.name,
                        input_shape=list(data.input_shape), metrics={"val": metrics["val"], "test": metrics["test"]},
                        train_config=cfg.to_dict(), **extra)
        write_json(Path(out) / "metrics.json", metrics)
    dist_.barrier()
    ui.log(f"{model_name}: " + ", ".join(f"{sp} {metric_text(metrics[sp], data.metrics)}" for sp in ("val", "test"))
           + f" ({metrics['wall_s']:.0f} s) -> {Path(out) / 'model.pt'}")
    return metrics


METRIC_NAMES = {"miou": "mIoU", "top1": "top-1", "top5": "top-5"}


def metric_text(m: Dict[str, object], names: Sequence[str] = ("top1",), prefix: str = "") -> str:
    """``"mIoU 41.20%, top-1 80.10%"``: the named metrics of an :func:`evaluate` result (``prefix``: of a
    :func:`train` epoch record, whose keys are ``val_miou``, ...)."""
    return ", ".join(f"{METRIC_NAMES[n]} {m[prefix + n]:.2f}%" for n in names if prefix + n in m)


def with_metrics(data: Dataset, metrics: Optional[str]) -> Dataset:
    """``data`` reporting ``--metrics`` (:func:`edgeshrink.host.seg.parse_metrics`); ``data`` itself for None.

    Raises:
        UserError: an unknown name, or mIoU for classification.
    """
    if metrics is None:
        return data


    try:
        return replace(data, metrics=tuple(parse_metrics(metrics, data.task)))
    except ValueError as e:
        raise UserError(str(e)) from None


def check_task(model: nn.Module, data: Dataset) -> None:
    """Refuse a registry segmentation network on a classification dataset and the other way round (a user's model
    by reference says nothing and is trusted).

    Raises:
        UserError: naming both.
    """
    task = getattr(model, "task", None)
    if task is not None and task != data.task:
        from edgeshrink.host.errors import UserError

        raise UserError(f"{getattr(model, 'model_name', 'the model')} is a {task} network and {data.name} a "
                        f"{data.task} dataset")


def _with_gates(model: nn.Module, gates: Optional[Dict[str, object]], rl, perf_table: Optional[str]):
    """``(model with the gates asked for, the gated blocks' latency shares for the RL stage or None)``."""
    if gates is not None:
        if isinstance(model, GatedResNet):
            if dict(model.gates) != dict(gates):
                model = add_gates(model.base, gates)  # new gates on the same (trained) network
        else:
            model = add_gates(model, gates)
    if rl is None:
        return model, None
    if not isinstance(model, GatedResNet):
        raise UserError("--rl trains SkipNet gates: give --gates ff|rnn (or --init a gated checkpoint)")
    rl.check()
    if not perf_table:
        raise UserError("--rl weighs each block by its latency share from a table: give --table")

    return model, block_weights(TablePredictor.for_model(load_table(perf_table), model.base), model)

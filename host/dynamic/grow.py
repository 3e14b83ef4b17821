"""Growing networks with internal classifiers, trained with the SDN loss and pruned with SNIP at each growth step
(the earlier work this suite unifies; :mod:`edgeshrink.models.cells` has the networks).

- **SDN loss** (Shallow-Deep Networks, Kaya et al., ICML 2019, Sec. 4.1): ``L = sum_i tau_i(t) CE(IC_i) + CE(final)``,
  ``tau_i`` growing linearly over training from 0.01 to a per-classifier maximum (default: the classifier's depth as
  a fraction of the network, SDN's 0.15 ... 0.9 for classifiers at 15% ... 90%).
- **Growth**: a growing network (``dense``, ``iterative``) starts with its first block; the next block, with its
  classifier, is added after each epoch of ``grow_epochs``, or (criterion ``loss``) as soon as an epoch's training
  loss fell by less than ``tolerance`` of the epoch before, at the latest at the evenly spaced epochs. Each growth
  step starts a new optimiser (the new block's parameters join) on the same learning-rate schedule.
- **SNIP** (Lee et al., ICLR 2019, Eq. 6): the connection sensitivity of weight ``j``, ``s_j = |w_j dL/dw_j|``
  normalised by its sum over every scored weight, on one batch of ``prune_batch`` training examples; each block
  keeps the top ``keep[b]`` fraction of its cells' convolution weights. Unstructured: masks (PyTorch's
  ``torch.nn.utils.prune``), made permanent at the end (zeros in the weights). Structured: the sensitivities summed
  per filter and over the filters of a cell's coupled convolutions, the lowest channels removed physically
  (Torch-Pruning), so a dense runtime runs a smaller network.
- **Policies**: ``skip_layer`` prunes the newest block at each growth step (and the first block before training);
  ``normal`` prunes every active block at each step; ``iterative`` prunes every active block at each step, its
  ``j``-th pruning keeping ``max(keep[b] ** j, min_keep[b])``. ``reinit`` draws the pruned blocks' surviving weights
  afresh after each pruning. Non-growing networks prune before training and at ``prune_epochs``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import prune

from edgeshrink.host.errors import UserError
from edgeshrink.host.prune.snip import weight
from edgeshrink.host.prune.surgery import remove_channels_
from edgeshrink.models.cells import CellNet

POLICIES = ("skip_layer", "normal", "iterative")
FORMS = ("unstructured", "structured")
CRITERIA = ("epochs", "loss")
TAU_START = 0.01  # SDN's initial classifier weight


@dataclass(frozen=True)
class GrowthConfig:
    """``grow_epochs``: epochs after which a block is added (one fewer than the blocks; None: evenly spaced);
    ``criterion``: ``epochs`` or ``loss``; ``tolerance``: the loss criterion's relative improvement;
    ``ic_max``: each internal classifier's maximum weight (None: its depth fraction)."""

    grow_epochs: Optional[Tuple[int, ...]] = None
    criterion: str = "epochs"
    tolerance: float = 0.01
    ic_max: Optional[Tuple[float, ...]] = None

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class SnipConfig:
    """SNIP at training time: ``keep`` one fraction per block in (0, 1]; ``policy``, ``form``; ``prune_batch``
    examples for the sensitivity; ``min_keep`` the iterative policy's floors (None: 0.1 or the keep ratio, whichever
    is smaller); ``reinit``; ``prune_epochs``: further pruning steps (epochs after which)."""

    keep: Tuple[float, ...]
    policy: str = "skip_layer"
    form: str = "unstructured"
    prune_batch: int = 128
    min_keep: Optional[Tuple[float, ...]] = None
    reinit: bool = False
    prune_epochs: Tuple[int, ...] = field(default_factory=tuple)

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


def parse_fractions(text: str, option: str, lo_open: bool = True) -> Tuple[float, ...]:
    """``"0.9,0.5"`` -> ``(0.9, 0.5)``, each in (0, 1].

    Raises:
        UserError: not numbers, or one outside (0, 1].
    """
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"{option} must be comma-separated fractions such as 0.9,0.5, got {text!r}") from None
    if not vals or any(not (0 < v <= 1) for v in vals):
        raise UserError(f"{option} must be fractions in (0, 1], got {text!r}")
    return vals


def parse_epochs(text: str, option: str) -> Tuple[int, ...]:
    """``"25,50,75"`` -> ``(25, 50, 75)``, strictly increasing positive integers.

    Raises:
        UserError: not integers, not increasing, or < 1.
    """
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"{option} must be comma-separated epochs such as 25,50,75, got {text!r}") from None
    if not vals or vals[0] < 1 or any(b <= a for a, b in zip(vals, vals[1:])):
        raise UserError(f"{option} must be increasing epochs >= 1, got {text!r}")
    return vals


def check_configs(model: nn.Module, epochs: int, growth: Optional[GrowthConfig], snip: Optional[SnipConfig]) -> None:
    """Refuse settings that do not fit the network, naming the option.

    Raises:
        UserError: growth for a non-growing network, growth epochs of the wrong count or past the training, keep
            ratios of another length than the blocks, a bad policy, form, floor or batch.
    """
    blocks = len(model.blocks) if isinstance(model, CellNet) else None
    if growth is not None:
        if not isinstance(model, CellNet) or not model.growing:
            raise UserError("--grow-epochs / --growth need a growing cell network (cells_dense or cells_iterative)")
        if growth.criterion not in CRITERIA:
            raise UserError(f"--growth must be one of {', '.join(CRITERIA)}, got {growth.criterion!r}")
        if not (0 < growth.tolerance < 1):
            raise UserError(f"--growth-tolerance must be in (0, 1), got {growth.tolerance:g}")
        if growth.grow_epochs is not None:
            if len(growth.grow_epochs) != blocks - 1:
                raise UserError(f"--grow-epochs gives {len(growth.grow_epochs)} epochs; {model.model_name} has "
                                f"{blocks} blocks, so {blocks - 1} growth steps")
            if growth.grow_epochs[-1] >= epochs:
                raise UserError(f"--grow-epochs {growth.grow_epochs[-1]} is not before the last epoch ({epochs})")
        if growth.ic_max is not None and (len(growth.ic_max) != blocks - 1 or
                                          any(not (0 < v <= 1) for v in growth.ic_max)):
            raise UserError(f"--ic-weights must give {blocks - 1} weights in (0, 1], one per internal classifier")
    elif isinstance(model, CellNet) and model.growing and epochs < len(model.blocks):
        raise UserError(f"{model.model_name} grows {len(model.blocks)} blocks: train at least {len(model.blocks)} "
                        "epochs")
    if snip is None:
        return
    if blocks is None:
        raise UserError("--keep prunes the blocks of a cell network (cells_*); other networks: host prune --method snip")
    if len(snip.keep) != blocks:
        raise UserError(f"--keep gives {len(snip.keep)} ratios; {model.model_name} has {blocks} blocks (one ratio "
                        "each)")
    if any(not (0 < k <= 1) for k in snip.keep):
        raise UserError("--keep ratios must be in (0, 1]")
    if snip.policy not in POLICIES:
        raise UserError(f"--prune-policy must be one of {', '.join(POLICIES)}, got {snip.policy!r}")
    if snip.form not in FORMS:
        raise UserError(f"--snip-form must be one of {', '.join(FORMS)}, got {snip.form!r}")
    if snip.prune_batch < 1:
        raise UserError(f"--prune-batch must be >= 1, got {snip.prune_batch}")
    if snip.min_keep is not None and (len(snip.min_keep) not in (1, blocks) or
                                      any(not (0 < v <= 1) for v in snip.min_keep)):
        raise UserError(f"--min-keep must give 1 or {blocks} fractions in (0, 1]")
    if any(e < 1 or e >= epochs for e in snip.prune_epochs):
        raise UserError(f"--prune-epochs must be epochs in 1..{epochs - 1}")


# -- the SDN loss ---------------------------------------------------------------------------------------------------

def sdn_weights(depths: Sequence[float], progress: float, ic_max: Optional[Sequence[float]] = None) -> List[float]:
    """The classifiers' loss weights at training progress ``progress`` in [0, 1]: ``tau_i = 0.01 + (max_i - 0.01) *
    progress`` for each internal classifier (``max_i`` from ``ic_max``, else its depth fraction), 1 for the final."""
    t = min(max(float(progress), 0.0), 1.0)
    maxes = list(ic_max) if ic_max is not None else list(depths[:-1])
    return [TAU_START + (m - TAU_START) * t for m in maxes[:len(depths) - 1]] + [1.0]


def sdn_loss(exits: Sequence[torch.Tensor], y: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """``sum_i weights[i] * CE(exits[i], y)`` (mean over the batch)."""
    total = exits[-1].new_zeros(())
    for logits, w in zip(exits, weights):
        total = total + w * F.cross_entropy(logits, y)
    return total


def sdn_loss_fn(model: nn.Module, progress: Callable[[], float] = lambda: 1.0,
                ic_max: Optional[Sequence[float]] = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``loss_fn(logits, y)`` for :func:`edgeshrink.host.train.train`: the SDN loss on the classifiers of ``model``'s
    last training forward, at the weights of ``progress()`` (default 1: the final weights, as recovery after pruning
    uses them, so every classifier stays trained)."""
    return lambda logits, y: sdn_loss(model.last_exits, y, sdn_weights(model.exit_depths(), progress(), ic_max))


# -- SNIP -----------------------------------------------------------------------------------------------------------

def block_layers(model: nn.Module, b: int) -> List[Tuple[str, nn.Module]]:
    """The convolutions of block ``b``'s cells, ``(module name, module)``, in order."""
    return [(f"blocks.{b}.{n}", m) for n, m in model.blocks[b].named_modules() if isinstance(m, nn.Conv2d)]


def iterative_keep(keep: float, j: int, floor: float) -> float:
    """The iterative policy's keep ratio at a block's ``j``-th pruning (``j >= 1``): ``max(keep ** j, floor)``."""
    return max(keep ** j, floor)


def mask_block_(layers: Sequence[nn.Module], scores: Sequence[torch.Tensor], keep: float) -> float:
    """Unstructured SNIP on one block: the top ``keep`` fraction of its weights (pooled over ``layers``) by score kept
    under a mask (``torch.nn.utils.prune``; an existing mask is replaced); returns the fraction kept."""
    flat = torch.cat([s.reshape(-1) for s in scores])
    k = max(int(round(keep * flat.numel())), 1)
    cut = torch.topk(flat, k).indices
    keep_flat = torch.zeros_like(flat, dtype=torch.bool)
    keep_flat[cut] = True
    at = 0
    for m, s in zip(layers, scores):
        mask = keep_flat[at:at + s.numel()].reshape(s.shape).to(s.dtype)
        at += s.numel()
        if hasattr(m, "weight_mask"):
            m.weight_mask.copy_(mask)
        else:
            prune.custom_from_mask(m, "weight", mask)
    return k / flat.numel()


def structured_block_(model: nn.Module, b: int, scores: Sequence[torch.Tensor], keep: float,
                      input_shape: Sequence[int]) -> Dict[str, int]:
    """Structured SNIP on block ``b``: each cell's channel score is its two convolutions' filter sensitivities
    summed; the block keeps ``round(keep * unpruned channels)`` channels: each cell its best one, the rest by one
    ranking over the block's cells; removed physically through Torch-Pruning's dependency graph. Returns each cell's
    kept width."""
    layers = block_layers(model, b)
    cell_scores = []
    for c in range(len(layers) // 2):
        s1, s2 = scores[2 * c], scores[2 * c + 1]
        cell_scores.append(s1.sum(dim=(1, 2, 3)) + s2.sum(dim=(1, 2, 3)))
    unpruned = model.width * len(cell_scores)
    target = max(int(round(keep * unpruned)), len(cell_scores))
    flat = torch.cat(cell_scores)
    kept = torch.zeros_like(flat, dtype=torch.bool)
    at = 0
    for s in cell_scores:  # every cell keeps its best channel, the rest go by one ranking over the block
        kept[at + int(torch.argmax(s))] = True
        at += len(s)
    rest = torch.argsort(flat.masked_fill(kept, -1.0), descending=True)[:target - len(cell_scores)]
    kept[rest] = True
    at, out = 0, {}
    for c, s in enumerate(cell_scores):
        k = kept[at:at + len(s)]
        at += len(s)
        drop = [i for i in range(len(s)) if not k[i]]
        name = f"blocks.{b}.cells.{c}.conv1"
        if drop and len(drop) < len(s):
            remove_channels_(model, name, drop, input_shape)
        out[f"blocks.{b}.cells.{c}"] = int(k.sum())
    return out


def reinit_block_(model: nn.Module, b: int) -> None:
    """Draw block ``b``'s weights afresh (He init, BN to identity), masks kept."""
    for m in model.blocks[b].modules():
        if isinstance(m, nn.Conv2d):
            w = m.weight_orig if hasattr(m, "weight_mask") else m.weight
            with torch.no_grad():
                nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
            m.reset_running_stats()


def finalize_masks_(model: nn.Module) -> None:
    """Make the unstructured masks permanent: zeros in the weights, the masks removed."""
    for m in model.modules():
        if hasattr(m, "weight_mask"):
            prune.remove(m, "weight")


def sparsity(model: nn.Module) -> Dict[str, float]:
    """Each block's fraction of zero convolution weights, and ``total`` over every conv weight."""
    out, zeros, n = {}, 0, 0
    for b in range(len(model.blocks)):
        ws = [weight(m).detach() for _, m in block_layers(model, b)]
        z = sum(int((w == 0).sum()) for w in ws)
        t = sum(w.numel() for w in ws)
        out[f"block{b}"] = z / t
        zeros, n = zeros + z, n + t
    out["total"] = zeros / n
    return out


# -- training -------------------------------------------------------------------------------------------------------

def evenly_spaced(epochs: int, blocks: int) -> Tuple[int, ...]:
    """The default growth epochs: after ``round(epochs * k / blocks)`` for k = 1 .. blocks - 1."""
    return tuple(max(1, min(epochs - 1, round(epochs * k / blocks))) for k in range(1, blocks))

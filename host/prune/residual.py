"""Independent residual pruning (from the Neural Network Shrinking work): which channels each residual branch
keeps, and what the pruned network costs by a latency table.

The network itself (index-adds, ScatterND in ONNX) is model code: :mod:`edgeshrink.models.residual`. Here: each
branch keeps its own channels by filter L2 norm (:func:`select_independent_keep`), the latency-table keys of such a
network (:func:`layer_keys`) and table lookups at the union widths it creates (:func:`interpolated_entry_ms`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import onnx
import torch
import torch.nn as nn

from edgeshrink.host import ui
from edgeshrink.host.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from edgeshrink.host.errors import UserError
from edgeshrink.host.export.artifact import ship_onnx
from edgeshrink.host.io import prepare_dir, write_json
from edgeshrink.host.latency.key import LayerKey, family_at_out
from edgeshrink.host.train import TrainConfig, evaluate, train
from edgeshrink.models.residual import IndependentResNet, branch_names, independent_from_dense


def layer_keys(model: IndependentResNet, input_hw=(32, 32)) -> Dict[str, List]:
    """The latency-table keys of an independent network's convolutions and classifier, and its index-adds.

    Returns:
        ``{"layers": [LayerKey], "index_adds": [(width, C_a, C_b or None, H, W)]}``. Each ``conv2`` is keyed as
        the table keys add-fused convs (measured as conv+BN); the index-adds are not in latency tables and are
        measured separately.
    """
    h, w = input_hw
    keys: List[LayerKey] = [LayerKey("conv2d", 3, model.conv1.out_channels, (h, w), (3, 3), (1, 1), (1, 1), 1,
                                     ("bn", "relu"))]
    adds = []
    for s in (1, 2, 3):
        for blk in getattr(model, f"layer{s}"):
            st = blk.conv1.stride[0]
            keys.append(LayerKey("conv2d", blk.conv1.in_channels, blk.conv1.out_channels, (h, w), (3, 3), (st, st),
                                 (1, 1), 1, ("bn", "relu")))
            if blk.shortcut is not None:
                sc = blk.shortcut[0]
                keys.append(LayerKey("conv2d", sc.in_channels, sc.out_channels, (h, w), (1, 1), (st, st), (0, 0), 1,
                                     ("bn",)))
            h, w = h // st, w // st
            keys.append(LayerKey("conv2d", blk.conv2.in_channels, blk.conv2.out_channels, (h, w), (3, 3), (1, 1),
                                 (1, 1), 1, ("bn", "add", "relu")))
            a = blk.add
            adds.append((a.width, int(a.idx_a.numel()), None if a.idx_b is None else int(a.idx_b.numel()), h, w))
    keys.append(LayerKey("gap_linear", model.fc.in_features, model.fc.out_features, (h, w)))
    return {"layers": keys, "index_adds": adds}


def select_independent_keep(model: nn.Module, per_stage: Dict[str, int],
                            union: Optional[Dict[str, int]] = None) -> Dict[str, List[int]]:
    """Each residual branch keeps its own ``per_stage[stage]`` output channels with the largest filter L2 norm
    (Li et al. 2017), independently of the other branches of the stage.

    Args:
        model: a ``CifarResNet``.
        per_stage: ``{"layer1": k1, ...}``; a missing stage keeps every channel.
        union: optional ``{"layer1": u1, ...}``: the stage's branches choose within the ``u`` channels of
            largest summed L2 norm over the branches (the coupled group's importance), so the stream is at most
            ``u`` wide; without it each branch chooses among all channels and the union can grow to the full width.

    Returns:
        ``{branch name: kept channel indices}`` for :func:`independent_from_dense`.
    """
    out: Dict[str, List[int]] = {}
    for stage, members in branch_names(model).items():
        norms = {n: model.get_submodule(n).weight.detach().flatten(1).norm(dim=1) for n in members}
        width = len(next(iter(norms.values())))
        allowed = torch.arange(width)
        if union and stage in union:
            total = sum(norms.values())
            allowed = torch.topk(total, min(int(union[stage]), width)).indices
        for name in members:
            k = min(int(per_stage.get(stage, width)), len(allowed))
            top = torch.topk(norms[name][allowed], k).indices
            out[name] = sorted(allowed[top].tolist())
    return out


def interpolated_entry_ms(table, key: LayerKey) -> float:
    """A table entry's latency (ms, the table's statistic) for ``key``; when ``key.in_channels`` is off the
    table's grid (a union width), linear interpolation between the entries at the nearest grid input widths below and above with
    everything else equal.

    Raises:
        KeyError: no entries to interpolate from.
    """
    e = table.lookup(key)
    if e is not None:
        return e.ms(table.statistic)
    row = family_at_out(key)
    same = {ent.key.in_channels: ent.ms(table.statistic) for ent in table.entries if family_at_out(ent.key) == row}
    lo = max((c for c in same if c < key.in_channels), default=None)
    hi = min((c for c in same if c > key.in_channels), default=None)
    if lo is None or hi is None:
        raise KeyError(f"no table entries around {key.op} {key.in_channels}->{key.out_channels} at {key.in_hw}")
    t = (key.in_channels - lo) / (hi - lo)
    return same[lo] + t * (same[hi] - same[lo])


def parse_stage_widths(text: str) -> Dict[str, int]:
    """``"layer1=8,layer2=16"`` -> ``{"layer1": 8, "layer2": 16}``.

    Raises:
        ValueError: malformed text, an unknown stage or a width < 1.
    """
    out: Dict[str, int] = {}
    for part in text.split(","):
        name, _, val = part.strip().partition("=")
        if name not in ("layer1", "layer2", "layer3") or not val.isdigit() or int(val) < 1:
            raise ValueError(f"malformed --keep {text!r}: expected e.g. layer1=8,layer2=16,layer3=32")
        out[name] = int(val)
    return out


def run_independent(checkpoint: str, per_stage: Dict[str, int], data, out: str, finetune_epochs: int = 5,
                    lr: float = 0.01, seed: int = 0) -> Dict[str, object]:
    """``host residual``: prune a coupled CIFAR ResNet checkpoint into independent residual branches (each keeps
    ``per_stage[stage]`` channels by filter L2 norm), fine-tune, and write ``OUT/model.pt`` (rebuildable by
    ``host export``), ``OUT/model.onnx`` (ScatterND, checked in ONNX Runtime) and ``OUT/report.json``.

    Returns:
        The report: kept widths, union widths, params, test top-1 (%) before and after fine-tuning, the ONNX check.

    Raises:
        UserError: a checkpoint that is not a coupled CIFAR ResNet. CheckpointError: an unreadable one.
    """
    ckpt = load_checkpoint(checkpoint)
    if not str(ckpt["model"]).startswith("resnet") or ckpt.get("residual"):
        raise UserError(f"{checkpoint}: independent residual pruning needs a coupled CIFAR ResNet checkpoint, "
                        f"not {ckpt['model']}{' (already independent)' if ckpt.get('residual') else ''}")
    base = model_from_checkpoint(ckpt, path=checkpoint)
    prepare_dir(out, "--out")
    model = independent_from_dense(base, select_independent_keep(base, per_stage))
    before = evaluate(model, data, "test")["top1"]
    ui.log(f"independent branches: union widths {', '.join(f'{k} {len(v)}' for k, v in model.union.items())}; "
           f"test top-1 before fine-tuning {before:.2f}%")
    if finetune_epochs:
        torch.manual_seed(seed)
        train(model, data, TrainConfig(epochs=finetune_epochs, lr=lr, batch_size=64, seed=seed))
    after = evaluate(model, data, "test")
    outp = Path(out)
    save_checkpoint(str(outp / "model.pt"), model, ckpt["num_classes"], dataset=data.name,
                    input_shape=list(data.input_shape))
    shape = data.input_shape
    check = ship_onnx(model, shape, outp, str(outp / "model.pt"))["check"]  # model.onnx and its artifact.json
    scatter = sum(1 for n in onnx.load(str(outp / "model.onnx")).graph.node if n.op_type == "ScatterND")
    report = {"schema": "edgeshrink.residual_report", "schema_version": 1, "checkpoint": checkpoint,
              "keep_per_stage": per_stage,
              "union_widths": {k: len(v) for k, v in model.union.items()},
              "params": sum(p.numel() for p in model.parameters()), "test_top1_before_finetune": before,
              "test_top1": after["top1"], "finetune_epochs": finetune_epochs, "onnx_check": check,
              "scatternd_nodes": scatter}
    write_json(outp / "report.json", report)
    ui.log(f"test top-1 {after['top1']:.2f}% after {finetune_epochs} epochs; ONNX with {scatter} ScatterND, "
           f"max |diff| to torch {check['max_abs_diff']:.2g} -> {outp}")
    return report

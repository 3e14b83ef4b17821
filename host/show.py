"""``host show RUN``: what the earlier growing-networks work printed on loading a network: its structure layer by
layer, its parameters, and the accuracy of each exit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from rich.table import Table

from edgeshrink.host import ui
from edgeshrink.host.checkpoint import load_checkpoint, model_from_checkpoint
from edgeshrink.host.errors import UserError


def layer_rows(model: nn.Module, input_shape) -> List[Dict[str, object]]:
    """One row per convolution, linear and BatchNorm layer reached by a forward at ``input_shape`` with every
    classifier: ``{"name", "type", "output" (shape without the batch), "params", "macs" (per input), "sparsity"
    (fraction of zero weights)}``, in the order they run."""
    rows, hooks = [], []

    def hook(name):
        def f(mod, args, out):
            o = out[0] if isinstance(out, (tuple, list)) else out
            w = getattr(mod, "weight", None)
            params = sum(p.numel() for p in mod.parameters(recurse=False))
            if isinstance(mod, nn.Conv2d):
                macs = o[0].numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
            elif isinstance(mod, nn.Linear):
                macs = mod.in_features * mod.out_features
            else:
                macs = 0
            rows.append({"name": name, "type": type(mod).__name__, "output": list(o.shape[1:]), "params": params,
                         "macs": int(macs), "sparsity": float((w == 0).float().mean()) if w is not None else 0.0})
        return f

    for n, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
            hooks.append(m.register_forward_hook(hook(n)))
    model.eval()
    try:
        with torch.no_grad():
            x = torch.zeros(*input_shape)
            model.forward_exits(x) if hasattr(model, "forward_exits") else model(x)
    finally:
        for h in hooks:
            h.remove()
    return rows


def show(run: str, dataset: Optional[str] = None, data_dir: Optional[str] = None,
         evaluate: bool = True) -> Dict[str, object]:
    """Load ``run`` (a folder holding ``model.pt``, or a checkpoint) and describe it.

    Returns:
        ``{"checkpoint", "model", "dataset", "input_shape", "layers", "params", "macs", "sparsity", "exits": [{"name",
        "depth", "val_top1", "test_top1"}], "training": the checkpoint's exit training record}``; top-1 in %,
        evaluated on ``dataset`` (default the checkpoint's) unless ``evaluate`` is False, then from the run's
        ``metrics.json`` where there is one.

    Raises:
        UserError: no checkpoint at ``run``; CheckpointError, DatasetError as their loaders raise them.
    """
    p = Path(run)
    path = p / "model.pt" if p.is_dir() else p
    if not path.is_file():
        raise UserError(f"{run}: no checkpoint (a run folder with model.pt, or a .pt file)")
    ck = load_checkpoint(str(path))
    model = model_from_checkpoint(ck, path=str(path))
    shape = [1, *(ck.get("input_shape") or [1, 3, 32, 32])[1:]]
    rows = layer_rows(model, shape)
    names = list(getattr(model, "exit_names", ["output"]))
    depths = list(model.exit_depths()) if hasattr(model, "exit_depths") else [1.0]
    val = test = None
    name = dataset or ck.get("dataset")
    if evaluate and name:
        from edgeshrink.host.data import load_dataset
        from edgeshrink.host.train import evaluate as eval_top1

        data = load_dataset(name, data_dir, image_size=shape[-2])  # the height (cityscapes is twice as wide)
        if hasattr(model, "forward_exits"):
            from edgeshrink.host.dynamic.exits import evaluate_exits

            val, test = evaluate_exits(model, data, "val"), evaluate_exits(model, data, "test")
        else:
            val, test = [eval_top1(model, data, "val")["top1"]], [eval_top1(model, data, "test")["top1"]]
    elif (p / "metrics.json").is_file():
        m = json.loads((p / "metrics.json").read_text())
        ex = m.get("exits") or {}
        val = ex.get("val_top1") or [m.get("val", {}).get("top1")]
        test = ex.get("test_top1") or [m.get("test", {}).get("top1")]
    weights = [r for r in rows if r["type"] in ("Conv2d", "Linear")]
    total_w = sum(r["params"] for r in weights) or 1
    return {"checkpoint": str(path), "model": ck["model"], "dataset": name, "input_shape": shape, "layers": rows,
            "params": int(sum(t.numel() for t in model.parameters())), "macs": int(sum(r["macs"] for r in rows)),
            "sparsity": sum(r["sparsity"] * r["params"] for r in weights) / total_w,
            "exits": [{"name": n, "depth": d, "val_top1": None if val is None else val[i],
                       "test_top1": None if test is None else test[i]} for i, (n, d) in enumerate(zip(names, depths))],
            "training": ck.get("exit_training")}


def render_show(info: Dict[str, object], console=None) -> None:
    """Print :func:`show`'s description (rich tables)."""
    console = console or ui.out
    t = Table(title=f"{info['model']} ({info['checkpoint']}), input {'x'.join(map(str, info['input_shape']))}")
    for col in ("layer", "type", "output", "params", "MACs", "zeros"):
        t.add_column(col, justify="left" if col in ("layer", "type") else "right")
    for r in info["layers"]:
        t.add_row(r["name"], r["type"], "x".join(map(str, r["output"])), f"{r['params']:,}", f"{r['macs']:,}",
                  f"{100 * r['sparsity']:.1f}%" if r["type"] != "BatchNorm2d" else "")
    console.print(t)
    console.print(f"parameters {info['params']:,}; MACs per input with every classifier {info['macs']:,}; zero "
                  f"weights {100 * info['sparsity']:.1f}%")
    e = Table(title=f"top-1 per exit ({info['dataset'] or 'no dataset'})")
    for col in ("exit", "depth", "val top-1 (%)", "test top-1 (%)"):
        e.add_column(col, justify="left" if col == "exit" else "right")
    for x in info["exits"]:
        e.add_row(x["name"], f"{x['depth']:.2f}", "" if x["val_top1"] is None else f"{x['val_top1']:.2f}",
                  "" if x["test_top1"] is None else f"{x['test_top1']:.2f}")
    console.print(e)
    tr = info.get("training") or {}
    if tr.get("grown_at"):
        console.print(f"grown after epochs {', '.join(map(str, tr['grown_at']))}")
    if tr.get("snip"):
        s = tr["snip"]
        console.print(f"SNIP {s['form']}, policy {s['policy']}, keep {', '.join(f'{k:g}' for k in s['keep'])}"
                      + (f"; sparsity {100 * tr['sparsity']['total']:.1f}%" if tr.get("sparsity") else ""))

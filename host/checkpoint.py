"""Checkpoints: model name + channel spec (+ residual spec, + SkipNet gates, + internal classifiers' blocks) +
state_dict (+ metadata), never a pickled ``nn.Module``.

Saved with ``torch.save`` atomically; loaded with ``torch.load(weights_only=True)``, so a checkpoint cannot run
code. A registry model is rebuilt with ``create_model(name, num_classes, channels, residual=...)``. A user's model
(a ``file.py:factory`` reference) is rebuilt unpruned from its reference and reshaped to the checkpoint's layer
shapes by Torch-Pruning's ``tp.load_state_dict``: the checkpoint keeps, besides the ``state_dict``, each module's
plain attributes as ``tp.state_dict`` lists them (``in_channels``, ``out_channels``, ``num_features``, ...: numbers,
strings and tuples only, so ``weights_only`` loads them), and ``model_source``, the file and sha256 it came from.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, Optional

import torch
import torch.nn as nn
import torch_pruning as tp

from edgeshrink import models
from edgeshrink.host.checks import integer, mapping, sequence, text
from edgeshrink.host.errors import CheckpointError
from edgeshrink.host.io import atomic_path
from edgeshrink.models.cells import ExitResNet
from edgeshrink.models.eigen import eigen_layers

FORMAT = "edgeshrink.checkpoint"
VERSION = 1


def save_checkpoint(path: str, model: nn.Module, num_classes: int, **meta: Any) -> None:
    """Write ``{"format", "version", "model", "num_classes", "channels", "state_dict", **meta}`` atomically, with
    ``"residual"`` for an independent-residual network (its ``channels`` are then the dense architecture's).

    ``meta`` must hold only tensors, numbers, strings, lists and dicts (what ``weights_only`` loads).
    """
    ckpt = {"format": FORMAT, "version": VERSION, "model": model.model_name, "num_classes": int(num_classes),
            "channels": dict(getattr(model, "dense_channels", None) or models.channel_spec(model)),
            "state_dict": model.state_dict(), **meta}
    if getattr(model, "residual", None):
        ckpt["residual"] = model.residual
    if getattr(model, "gates", None):
        ckpt["gates"] = dict(model.gates)

    if isinstance(model, ExitResNet):
        ckpt["exits"] = list(model.after)

    if eigen_layers(model):
        ckpt["eigen"] = eigen_layers(model)
    if getattr(model, "model_source", None):
        ckpt["model_source"] = dict(model.model_source)
    if models.is_reference(model.model_name):
        ckpt["shapes"] = layer_shapes(model)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Read a checkpoint dict.

    Raises:
        CheckpointError: missing or unreadable file, not an edgeshrink checkpoint, or a field missing or of the
            wrong type (model, num_classes, channels, state_dict, residual, input_shape).
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a folder, not a checkpoint") from None
    except Exception as e:  # torch raises many types for corrupt files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an edgeshrink checkpoint")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt.get('version')!r} is not supported")
    _check_fields(ckpt, path)
    return ckpt


def _check_fields(ckpt: Dict[str, Any], path: str) -> None:
    """The fields a rebuild reads, each of the right type (a hand-edited or foreign file names what is wrong)."""
    for key in ("model", "num_classes", "channels", "state_dict"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: checkpoint has no {key!r}")
    text(ckpt["model"], f"{path}: checkpoint model", CheckpointError)
    integer(ckpt["num_classes"], f"{path}: checkpoint num_classes", CheckpointError, lo=1)
    for name, c in mapping(ckpt["channels"], f"{path}: checkpoint channels", CheckpointError).items():
        integer(c, f"{path}: checkpoint channels of {name}", CheckpointError, lo=1)
    sd = mapping(ckpt["state_dict"], f"{path}: checkpoint state_dict", CheckpointError)
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: checkpoint state_dict entry {bad[0]!r} is not a tensor")
    if ckpt.get("residual") is not None:
        mapping(ckpt["residual"], f"{path}: checkpoint residual", CheckpointError)
    if ckpt.get("eigen") is not None:
        for name, r in mapping(ckpt["eigen"], f"{path}: checkpoint eigen", CheckpointError).items():
            for v in sequence(r, f"{path}: checkpoint eigen of {name!r}", CheckpointError, length=2):
                integer(v, f"{path}: checkpoint eigen of {name!r}", CheckpointError, lo=1)
    if ckpt.get("gates") is not None:
        g = mapping(ckpt["gates"], f"{path}: checkpoint gates", CheckpointError)
        text(g.get("kind"), f"{path}: checkpoint gates kind", CheckpointError)
        integer(g.get("hidden", 10), f"{path}: checkpoint gates hidden", CheckpointError, lo=1)
    if ckpt.get("exits") is not None:
        for v in sequence(ckpt["exits"], f"{path}: checkpoint exits", CheckpointError):
            text(v, f"{path}: checkpoint exits", CheckpointError)
    if ckpt.get("shapes") is not None:
        for name, attrs in mapping(ckpt["shapes"], f"{path}: checkpoint shapes", CheckpointError).items():
            mapping(attrs, f"{path}: checkpoint shapes of {name!r}", CheckpointError)
    if ckpt.get("input_shape") is not None:
        for v in sequence(ckpt["input_shape"], f"{path}: checkpoint input_shape", CheckpointError, length=4):
            integer(v, f"{path}: checkpoint input_shape", CheckpointError, lo=1)


def _plain(v: Any) -> bool:
    if v is None or isinstance(v, (bool, int, float, str)):
        return True
    return isinstance(v, (tuple, list)) and all(_plain(x) for x in v)


def layer_shapes(model: nn.Module) -> Dict[str, Dict[str, Any]]:
    """Each module's plain attributes from Torch-Pruning's ``tp.state_dict`` (its ``attributions``): what a pruned
    layer's shape is (``in_channels``, ``out_channels``, ``groups``, ``num_features``, ``in_features``...). Only
    numbers, strings, None and tuples or lists of them are kept."""
    attrs = tp.state_dict(model)["attributions"]
    return {name: {k: v for k, v in a.items() if _plain(v) and k != "training"} for name, a in attrs.items()}


def _reshape_from_checkpoint(model: nn.Module, ckpt: Dict[str, Any]) -> nn.Module:
    """Give the unpruned ``model`` the checkpoint's layer shapes and weights with Torch-Pruning's
    ``tp.load_state_dict`` (it replaces each module's parameters and buffers and sets its attributes)."""
    sd = ckpt["state_dict"]
    full = {}
    for name, mod in model.named_modules():
        prefix = f"{name}." if name else ""
        params = {k: (None if v is None else nn.Parameter(sd[prefix + k].clone(), requires_grad=v.requires_grad))
                  for k, v in mod._parameters.items() if v is None or prefix + k in sd}
        buffers = {k: (None if v is None else sd[prefix + k].clone())
                   for k, v in mod._buffers.items() if v is None or prefix + k in sd}
        full[name] = {"_parameters": {**mod._parameters, **params}, "_buffers": {**mod._buffers, **buffers}}
    shapes = ckpt.get("shapes") or {}
    return tp.load_state_dict(model, {"full_state_dict": full, "attributions": {n: dict(a) for n, a in shapes.items()
                                                                                if n in full}})


def model_from_checkpoint(ckpt: Dict[str, Any], expect_model: Optional[str] = None, path: str = "checkpoint") -> nn.Module:
    """Rebuild the model of a checkpoint and load its weights (eval mode).

    Args:
        expect_model: when given, the checkpoint must be of this architecture.

    Raises:
        CheckpointError: other architecture than expected, or weights that do not fit the rebuilt model.
    """
    name = ckpt["model"]
    if expect_model is not None and expect_model != name:
        raise CheckpointError(f"{path} holds a {name}, not a {expect_model}")
    changed = ""
    try:
        if models.is_reference(name):
            model = models.create_model(name, ckpt["num_classes"])
            was = (ckpt.get("model_source") or {}).get("sha256")
            now = (getattr(model, "model_source", None) or {}).get("sha256")
            if was and now and was != now:
                changed = (f"; {model.model_source.get('file')} changed since the checkpoint was written "
                           f"(sha256 {was[:12]} then, {now[:12]} now)")
            model = _reshape_from_checkpoint(model, ckpt)
        else:
            model = models.create_model(name, ckpt["num_classes"], ckpt["channels"], residual=ckpt.get("residual"),
                                        gates=ckpt.get("gates"), eigen=ckpt.get("eigen"), exits=ckpt.get("exits"))
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except models.ModelError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except (RuntimeError, KeyError, AttributeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: weights do not fit {name} with its channel spec ({first}){changed}") from None
    if changed:
        warnings.warn(f"{path}: {changed[2:]}; its weights still fit")
    return model.eval()

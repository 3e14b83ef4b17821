"""Checkpoints: model name + channel spec (+ residual spec) + state_dict (+ metadata), never a pickled
``nn.Module``.

Saved with ``torch.save`` atomically; loaded with ``torch.load(weights_only=True)``, so a checkpoint cannot run
code. A model is rebuilt with ``create_model(name, num_classes, channels, residual=...)``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn as nn

from edgeshrink import models
from edgeshrink.host.checks import integer, mapping, sequence, text
from edgeshrink.host.errors import CheckpointError
from edgeshrink.host.io import atomic_path

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
    if ckpt.get("input_shape") is not None:
        for v in sequence(ckpt["input_shape"], f"{path}: checkpoint input_shape", CheckpointError, length=4):
            integer(v, f"{path}: checkpoint input_shape", CheckpointError, lo=1)


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
    try:
        model = models.create_model(name, ckpt["num_classes"], ckpt["channels"], residual=ckpt.get("residual"))
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except models.ModelError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit {name} with its channel spec ({first})") from None
    return model.eval()

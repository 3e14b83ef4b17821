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
        CheckpointError: missing or unreadable file, or not an edgeshrink checkpoint.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as e:  # torch raises many types for corrupt files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an edgeshrink checkpoint")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt.get('version')!r} is not supported")
    return ckpt


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

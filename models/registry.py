"""The model registry by name (timm's ``register_model`` / ``create_model`` / ``list_models`` pattern)."""

from __future__ import annotations

import fnmatch
import inspect
from functools import lru_cache
from typing import Callable, Dict, List, Optional, Sequence

import torch.nn as nn

from ._spec import ModelError, UnknownModelError
from .cells import add_exits, create_cell_net, parse_cell_name
from .generic import apply_channel_spec_
from .ref import build_from_reference, file_sha256, is_reference, model_source
from .residual import from_residual_spec

_REGISTRY: Dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Class/function decorator that registers a model factory under ``name``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_models(pattern: str = "*") -> List[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def create_model(name: str, num_classes: int = 10, channels: Optional[Dict[str, int]] = None,
                 residual: Optional[Dict[str, object]] = None,
                 input_shape: Optional[Sequence[int]] = None, gates: Optional[Dict[str, object]] = None,
                 eigen: Optional[Dict[str, Sequence[int]]] = None,
                 exits: Optional[Sequence[str]] = None) -> nn.Module:
    """Build a registered model, or a user's model by reference.

    Args:
        name: registry name, e.g. ``"resnet20"`` (see :func:`list_models`), or a reference
            ``path/to/file.py:factory`` / ``package.module:factory`` (:mod:`edgeshrink.models.ref`).
        num_classes: classifier outputs.
        channels: channel spec (conv module name -> output channels); ``None`` for the unpruned widths.
            Layers missing from the spec keep their default width.
        residual: ``{"mode": "independent", "keep": {branch: [kept channel indices]}}`` builds the network whose
            residual branches keep their own channels (:mod:`edgeshrink.models.residual`; CIFAR ResNets only);
            None for the coupled network.
        input_shape: ``(1, C, H, W)`` at which a reference model's dependency graph is traced to apply
            ``channels`` (default ``(1, 3, 64, 64)``); registry models know their own.

    Returns:
        The model; ``model_name`` is its registry name or reference, ``model_source`` ``{"model", "file", "sha256"}`` (and ``residual`` its residual spec when given).

    Raises:
        UnknownModelError: ``name`` is neither registered nor a reference.
        ModelReferenceError: a reference that does not resolve, or a factory that returns no module.
        ChannelSpecError: the spec names unknown layers or has non-positive widths, or a residual spec that
            does not fit the model.
        ModelError: gates on a model that cannot carry them.
        ModelError: ``num_classes`` is not a positive integer.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ModelError(f"num_classes must be a positive integer, got {num_classes!r}")
    if is_reference(name):
        model = build_from_reference(name, num_classes)
        if channels:
            apply_channel_spec_(model, channels, tuple(input_shape or (1, 3, 64, 64)))
        source = model_source(name)
    elif name in _REGISTRY:
        model = _REGISTRY[name](num_classes=num_classes, channels=channels or {})
        source = registry_source(name)
        if not hasattr(model, "task"):
            model.task = "classification"  # the registry's networks say what they are; a user's model need not
    elif parse_cell_name(name):
        model = create_cell_net(name, num_classes, channels or {})
        source = {**registry_source("cells_iterative"), "model": name}
    else:
        raise UnknownModelError(f"unknown model {name!r}; known: {', '.join(list_models())} (a cell network "
                                "also as cells_TYPE_ARRAY_wWIDTH), or a reference path/to/file.py:factory")
    model.model_name = name
    model.model_source = source
    if residual is not None:
        model = from_residual_spec(model, residual)
    if eigen:
        from .eigen import apply_eigen_

        apply_eigen_(model, eigen)
    if exits:
        model = add_exits(model, exits)
    if gates is not None:
        from .gated import add_gates

        model = add_gates(model, gates)
    return model


@lru_cache(maxsize=None)
def _registry_file(name: str) -> Optional[str]:
    return inspect.getsourcefile(_REGISTRY[name])


def registry_source(name: str) -> Dict[str, Optional[str]]:
    """``{"model": name, "file": the file defining it, "sha256": that file's digest}`` of a registry model."""
    path = _registry_file(name)
    return {"model": name, "file": path, "sha256": file_sha256(path) if path else None}


def describe_model(model: nn.Module) -> Dict[str, object]:
    """What names a built model's code: ``{"model", "file", "sha256"}`` (for tables, checkpoints and reports)."""
    return dict(getattr(model, "model_source", None) or {"model": getattr(model, "model_name", None)})

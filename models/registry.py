"""The model registry by name (timm's ``register_model`` / ``create_model`` / ``list_models`` pattern)."""

from __future__ import annotations

import fnmatch
from typing import Callable, Dict, List, Optional

import torch.nn as nn

from ._spec import ModelError, UnknownModelError
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
                 residual: Optional[Dict[str, object]] = None) -> nn.Module:
    """Build a registered model.

    Args:
        name: registry name, e.g. ``"resnet20"`` (see :func:`list_models`).
        num_classes: classifier outputs.
        channels: channel spec (conv module name -> output channels); ``None`` for the unpruned widths.
            Layers missing from the spec keep their default width.
        residual: ``{"mode": "independent", "keep": {branch: [kept channel indices]}}`` builds the network whose
            residual branches keep their own channels (:mod:`edgeshrink.models.residual`; CIFAR ResNets only);
            None for the coupled network.

    Returns:
        The model; ``model_name`` is its registry name (and ``residual`` its residual spec when given).

    Raises:
        UnknownModelError: ``name`` is not registered.
        ChannelSpecError: the spec names unknown layers or has non-positive widths, or a residual spec that
            does not fit the model.
        ModelError: ``num_classes`` is not a positive integer.
    """
    if name not in _REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ModelError(f"num_classes must be a positive integer, got {num_classes!r}")
    model = _REGISTRY[name](num_classes=num_classes, channels=channels or {})
    model.model_name = name
    if residual is not None:
        model = from_residual_spec(model, residual)
    return model

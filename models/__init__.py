"""Model definitions and a registry by name (timm's ``register_model`` / ``create_model`` pattern).

A model is rebuilt from its registry name and a *channel spec*: a JSON-able dict that maps each
convolution's module name to its number of output channels. Pruned architectures are therefore data,
never pickled modules.
"""

from __future__ import annotations

import fnmatch
from typing import Callable, Dict, List, Optional

import torch.nn as nn

_REGISTRY: Dict[str, Callable[..., nn.Module]] = {}


class UnknownModelError(ValueError):
    """Raised for a model name that is not registered."""


class ChannelSpecError(ValueError):
    """Raised for a channel spec that does not fit the architecture (unknown layer, bad width, broken coupling)."""


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


def create(name: str, num_classes: int = 10, channels: Optional[Dict[str, int]] = None) -> nn.Module:
    """Build a registered model.

    Args:
        name: registry name, e.g. ``"resnet20"`` (see :func:`list_models`).
        num_classes: classifier outputs.
        channels: channel spec (conv module name -> output channels); ``None`` for the unpruned widths.
            Layers missing from the spec keep their default width.

    Returns:
        The model; its ``channel_spec()`` returns the full spec and ``model_name`` its registry name.

    Raises:
        UnknownModelError: ``name`` is not registered.
        ChannelSpecError: the spec names unknown layers or has non-positive widths.
    """
    if name not in _REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    model = _REGISTRY[name](num_classes=num_classes, channels=channels or {})
    model.model_name = name
    return model


def channel_spec(model: nn.Module) -> Dict[str, int]:
    """The channel spec of a built model: every Conv2d's module name -> its output channels."""
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


from models import resnet, wrn  # noqa: E402,F401  (registers the architectures)

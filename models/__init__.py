"""Model definitions and a registry by name (timm's ``register_model`` / ``create_model`` pattern).

A model is rebuilt from its registry name and a *channel spec*: a JSON-able dict that maps each
convolution's module name to its number of output channels. Pruned architectures are therefore data,
never pickled modules. Architectures: CIFAR ResNets (:mod:`.resnet`), Wide ResNets (:mod:`.wrn`); independent-
residual ResNets are built with ``create_model(..., residual=...)`` (:mod:`.residual`).
"""

from ._spec import ChannelSpecError, ModelError, UnknownModelError, channel_spec  # noqa: F401
from .registry import create_model, list_models, register_model  # noqa: F401
from . import resnet, wrn  # noqa: E402,F401  (registers the architectures)

__all__ = ["ChannelSpecError", "ModelError", "UnknownModelError", "channel_spec", "create_model", "list_models",
           "register_model"]

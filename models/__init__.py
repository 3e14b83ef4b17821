"""Model definitions and a registry by name (timm's ``register_model`` / ``create_model`` pattern).

A model is rebuilt from its registry name and a *channel spec*: a JSON-able dict that maps each
convolution's module name to its number of output channels. Pruned architectures are therefore data,
never pickled modules. Architectures: CIFAR ResNets (:mod:`.resnet`), Wide ResNets (:mod:`.wrn`), ImageNet-layout ResNet-18..152
(:mod:`.imagenet`), MobileNetV2 and MobileNetV3-Small (:mod:`.mobilenet`), the cell networks with internal classifiers
(:mod:`.cells`); independent-residual ResNets are built
with ``create_model(..., residual=...)`` (:mod:`.residual`). A user's own model is named by reference,
``path/to/file.py:factory`` (:mod:`.ref`), and rebuilt from a channel spec by :mod:`.generic`.
"""

from ._spec import ChannelSpecError, ModelError, UnknownModelError, channel_spec  # noqa: F401
from .ref import ModelReferenceError, is_reference, resolve_callable  # noqa: F401
from .registry import create_model, describe_model, list_models, register_model  # noqa: F401
from . import cells, hrnet, imagenet, mobilenet, resnet, wrn  # noqa: E402,F401  (registers the architectures)

for _kind in cells.CELL_TYPES:  # the cell networks' defaults (any array and width also by name: cells.parse_cell_name)
    register_model(f"cells_{_kind}")(cells.default_factory(_kind))

__all__ = ["ChannelSpecError", "ModelError", "ModelReferenceError", "UnknownModelError", "channel_spec",
           "create_model", "describe_model", "is_reference", "list_models", "register_model", "resolve_callable"]

"""edgeshrink: shrink a convolutional network for a named edge device, and prove the result on that device.

One import namespace over three parts: ``edgeshrink.host`` (training, latency tables, pruning, export, devices;
needs torch), ``edgeshrink.device`` (the torch-free program that runs on the board) and ``edgeshrink.models``
(the model registry). The names below are the small public API; each is imported on first use, so
``import edgeshrink`` (and the device side) never imports torch by itself::

    import edgeshrink as es
    table = es.load_table("latency_tables/resnet20_ort_local_1t_g8.json")
    pred = es.TablePredictor.for_model(table, es.create_model("resnet20"))
    print(pred.predict_ms(pred.space.full_widths))
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, List, Tuple

from .device import __version__

# public name -> (module, attribute)
_API: Dict[str, Tuple[str, str]] = {
    "create_model": ("edgeshrink.models", "create_model"),
    "list_models": ("edgeshrink.models", "list_models"),
    "channel_spec": ("edgeshrink.models", "channel_spec"),
    "load_table": ("edgeshrink.host.latency.table", "load_table"),
    "LatencyTable": ("edgeshrink.host.latency.table", "LatencyTable"),
    "TablePredictor": ("edgeshrink.host.latency.predict", "TablePredictor"),
    "build_space": ("edgeshrink.host.latency.space", "build_space"),
    "NetAdapt": ("edgeshrink.host.prune.netadapt", "NetAdapt"),
    "NetAdaptConfig": ("edgeshrink.host.prune.netadapt", "NetAdaptConfig"),
    "METHODS": ("edgeshrink.host.prune.methods", "METHODS"),
    "LatencyPruner": ("edgeshrink.host.prune.pruner", "LatencyPruner"),
    "SlimmingRegularizer": ("edgeshrink.host.prune.regularizers", "SlimmingRegularizer"),
    "SWDRegularizer": ("edgeshrink.host.prune.regularizers", "SWDRegularizer"),
    "MorphNetRegularizer": ("edgeshrink.host.prune.regularizers", "MorphNetRegularizer"),
    "load_dataset": ("edgeshrink.host.data", "load_dataset"),
    "load_checkpoint": ("edgeshrink.host.checkpoint", "load_checkpoint"),
    "model_from_checkpoint": ("edgeshrink.host.checkpoint", "model_from_checkpoint"),
    "save_checkpoint": ("edgeshrink.host.checkpoint", "save_checkpoint"),
    "export_onnx": ("edgeshrink.host.export.onnx", "export_onnx"),
    "bench_on_device": ("edgeshrink.host.bench", "bench_on_device"),
    "PruneJob": ("edgeshrink.host.pipeline", "PruneJob"),
    "run_prune": ("edgeshrink.host.pipeline", "run_prune"),
    "CompareJob": ("edgeshrink.host.pipeline.compare", "CompareJob"),
    "run_compare": ("edgeshrink.host.pipeline.compare", "run_compare"),
    "shrink": ("edgeshrink.host.shrink", "shrink"),
    "ShrinkResult": ("edgeshrink.host.shrink", "ShrinkResult"),
    "SelectOutput": ("edgeshrink.host.shrink", "SelectOutput"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562)."""
    if name not in _API:
        raise AttributeError(f"module 'edgeshrink' has no attribute {name!r}")
    module, attr = _API[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(__all__)

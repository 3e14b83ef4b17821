"""Runner registry: one runner per backend behind one protocol, imported lazily by name.

A missing runtime never breaks the CLI: :func:`backends` reports each backend as available or not, and
why. The protocol every runner follows::

    with get_runner("ort")(path, threads=1) as r:
        specs = r.input_specs()          # name -> TensorSpec(shape, dtype)
        outputs = r.infer(feeds)         # returns after the device synchronised
"""

from __future__ import annotations

import importlib
from typing import Dict, Tuple, Type

from .base import BackendUnavailable, ModelLoadError, Runner, TensorSpec  # noqa: F401

# backend name -> (module, class). Runners with ``self_timed = True`` wrap a vendor tool that times itself
# (trtexec, benchmark_model) and implement ``measure(...)`` instead of ``infer``.
_RUNNERS: Dict[str, Tuple[str, str]] = {
    "ort": (".ort", "OrtRunner"),
    "ort-cuda": (".ort", "OrtCudaRunner"),
    "ort-tensorrt": (".ort", "OrtTensorrtRunner"),
    "litert": (".litert", "LiteRTRunner"),
    "tensorrt": (".tensorrt", "TensorRTRunner"),
    "trtexec": (".trtexec", "TrtexecRunner"),
    "benchmark_model": (".benchmark_model", "BenchmarkModelRunner"),
}


def _check(mod, name: str) -> str:
    import inspect

    if "backend" in inspect.signature(mod.check_available).parameters:
        return mod.check_available(backend=name)
    return mod.check_available()


def names() -> Tuple[str, ...]:
    return tuple(_RUNNERS)


def is_self_timed(name: str) -> bool:
    """Whether backend ``name`` wraps a vendor tool that times itself (no runtime needs to be installed here);
    False for an unknown name (the device refuses it with the list of backends)."""
    if name not in _RUNNERS:
        return False
    module, cls = _RUNNERS[name]
    return bool(getattr(getattr(importlib.import_module(module, __package__), cls), "self_timed", False))


def get_runner(name: str) -> Type:
    """The runner class of backend ``name``.

    Raises:
        KeyError: unknown backend name.
        BackendUnavailable: the backend's runtime is not installed here (message names what to install).
    """
    if name not in _RUNNERS:
        raise KeyError(f"unknown backend {name!r}; known: {', '.join(_RUNNERS)}")
    module, cls = _RUNNERS[name]
    mod = importlib.import_module(module, __package__)
    _check(mod, name)
    return getattr(mod, cls)


def backends() -> Dict[str, Dict[str, object]]:
    """Each backend -> {"available": bool, "version" or "reason": str}."""
    out: Dict[str, Dict[str, object]] = {}
    for name, (module, _) in _RUNNERS.items():
        try:
            mod = importlib.import_module(module, __package__)
            out[name] = {"available": True, "version": _check(mod, name)}
        except BackendUnavailable as e:
            out[name] = {"available": False, "reason": str(e)}
    return out

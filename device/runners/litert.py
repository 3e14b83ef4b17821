"""LiteRT runner (``ai_edge_litert``, TensorFlow Lite's successor), falling back to ``tflite_runtime``.

Raspberry Pi set-up: ``pip install ai-edge-litert`` (or the older ``tflite-runtime`` wheel on 32-bit OSes).
"""

from __future__ import annotations

import importlib
from typing import Dict, Tuple

import numpy as np

from .base import BackendUnavailable, TensorSpec, load_error

_CANDIDATES = (("ai_edge_litert.interpreter", "ai_edge_litert"), ("tflite_runtime.interpreter", "tflite_runtime"))


def _interpreter_module() -> Tuple[object, str]:
    errors = []
    for mod, pkg in _CANDIDATES:
        try:
            m = importlib.import_module(mod)
            version = getattr(importlib.import_module(pkg), "__version__", "?")
            return m, f"{pkg} {version}"
        except ImportError as e:
            errors.append(f"{pkg}: {e}")
    raise BackendUnavailable("no LiteRT interpreter (" + "; ".join(errors) + "); install pip ai-edge-litert "
                             "(or tflite-runtime)")


def check_available() -> str:
    """The interpreter package and version; raises BackendUnavailable when neither is installed."""
    return _interpreter_module()[1]


class LiteRTRunner:
    """Runs a ``.tflite`` file in the LiteRT interpreter (XNNPACK CPU delegate by default).

    Args:
        path: the ``.tflite`` file.
        threads: interpreter threads (``0``: the runtime's default).
    """

    name = "litert"

    def __init__(self, path: str, threads: int = 1, **_: object):
        self.path = str(path)
        self.threads = threads
        self.interpreter = None

    def __enter__(self) -> "LiteRTRunner":
        mod, _ = _interpreter_module()
        try:
            self.interpreter = mod.Interpreter(model_path=self.path, num_threads=self.threads or None)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:  # "not a valid Flatbuffer buffer", "mmap of size 0"
            raise load_error(self.path, "LiteRT", e) from None
        self._in = self.interpreter.get_input_details()
        self._out = self.interpreter.get_output_details()
        return self

    def __exit__(self, *exc) -> None:
        self.interpreter = None

    def input_specs(self) -> Dict[str, TensorSpec]:
        return {d["name"]: TensorSpec(tuple(int(v) for v in d["shape"]), np.dtype(d["dtype"]).name) for d in self._in}

    def infer(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        it = self.interpreter
        for d in self._in:
            it.set_tensor(d["index"], feeds[d["name"]])
        it.invoke()
        return {d["name"]: it.get_tensor(d["index"]) for d in self._out}

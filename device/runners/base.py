"""The runner protocol, tensor specs and the lazy-import helper."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Dict, Protocol, Tuple

import numpy as np


class BackendUnavailable(RuntimeError):
    """The runtime a backend needs is not installed on this device."""


def require(module: str, install_hint: str):
    """Import ``module`` or raise :class:`BackendUnavailable` naming what to install (never installs)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise BackendUnavailable(f"{module} is not importable ({e}); install {install_hint}") from None


@dataclass(frozen=True)
class TensorSpec:
    shape: Tuple[int, ...]  # concrete shape; symbolic dims are reported as 1
    dtype: str  # numpy dtype name, e.g. "float32"

    def random(self, rng: np.random.Generator) -> np.ndarray:
        """Random input: standard normal for floats, the full range for integers (int8 models)."""
        dt = np.dtype(self.dtype)
        if dt.kind in "iu":
            info = np.iinfo(dt)
            return rng.integers(info.min, int(info.max) + 1, size=self.shape, dtype=dt)
        if dt.kind == "b":
            return rng.integers(0, 2, size=self.shape).astype(bool)
        return rng.standard_normal(self.shape).astype(dt)


class Runner(Protocol):
    name: str

    def __enter__(self) -> "Runner": ...

    def __exit__(self, *exc) -> None: ...

    def input_specs(self) -> Dict[str, TensorSpec]: ...

    def infer(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]: ...

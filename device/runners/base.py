"""The runner protocol, tensor specs and the lazy-import helper."""

from __future__ import annotations

import importlib
import subprocess
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Protocol, Tuple

import numpy as np


class BackendUnavailable(RuntimeError):
    """The runtime a backend needs is not installed on this device."""


class ModelLoadError(ValueError):
    """A model file the runtime cannot load (not an ONNX / TFLite file, empty, cut off); the message names it."""


def load_error(path: str, runtime: str, e: BaseException) -> ModelLoadError:
    """The one-line error for a file ``runtime`` refused to load."""
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return ModelLoadError(f"{path}: not a model {runtime} can load ({first[:160]})")


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


def run_tool(name: str, cmd: List[str], parse: Callable[[str], Dict[str, object]], log_path: Optional[str],
             timeout_s: float) -> Dict[str, object]:
    """Run a vendor benchmark tool, keep its whole output in ``log_path`` and return ``parse(output)``.

    Raises:
        RuntimeError: the tool exited non-zero (its last line is in the message) or its output did not parse.
    """
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    text = r.stdout + "\n" + r.stderr
    if log_path:
        with open(log_path, "w", encoding="utf-8") as f:
            f.write(text)
    if r.returncode != 0:
        last = (text.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{name} failed (exit {r.returncode}): {last}")
    try:
        return parse(text)
    except ValueError as e:
        raise RuntimeError(f"{e} (full output in {log_path or 'no log'})") from None


class ToolRunner:
    """Base of the runners that wrap a vendor tool timing itself (``self_timed``): nothing to load or release;
    they implement ``measure(warmup, iters, warmup_s) -> timing fields`` instead of ``infer``."""

    self_timed = True

    def __init__(self, path: str, threads: int = 1, precision: str = "fp32", calib_cache: Optional[str] = None,
                 log_path: Optional[str] = None, **_: object):
        self.path = str(path)
        self.threads = threads
        self.precision = precision
        self.calib_cache = calib_cache
        self.log_path = log_path  # the tool's full output is kept here (the host pulls it back)

    def __enter__(self) -> "ToolRunner":
        return self

    def __exit__(self, *exc) -> None:
        return None

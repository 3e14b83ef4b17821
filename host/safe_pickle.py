"""A restricted unpickler for foreign pickles (CIFAR batches, the earlier NetAdapt tables).

Only plain containers and numpy array reconstruction are allowed; any other global in the stream
(a class, a function such as ``os.system``) is refused before it can run. Our own outputs are never pickles.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, BinaryIO

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global outside the allowed numpy/array set."""


class NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickleError(f"pickle refers to {module}.{name}, which is not allowed (numpy arrays only)")


def load(f: BinaryIO, encoding: str = "ASCII") -> Any:
    """Unpickle ``f`` allowing only builtin containers, scalars and numpy arrays.

    Raises:
        UnsafePickleError: a disallowed global. pickle.UnpicklingError / EOFError: a corrupt stream.
    """
    return NumpyOnlyUnpickler(f, encoding=encoding).load()


def loads(data: bytes, encoding: str = "ASCII") -> Any:
    return load(io.BytesIO(data), encoding=encoding)

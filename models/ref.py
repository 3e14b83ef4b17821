"""A user's own model by reference: ``path/to/file.py:factory`` or ``package.module:factory``.

The factory is any callable returning an ``nn.Module``; ``num_classes`` is passed when it takes that argument.
A file is loaded under a private module name (``_edgeshrink_user_<hash>``), with its folder first on
``sys.path`` while it runs, so it can import its own packages (a ``models/`` beside it included) and never
shadows or is shadowed by ``edgeshrink.models``. The same reference form names the user's training functions
(``--train-fn file.py:train``): :func:`resolve_callable`.

Every model built from a reference carries :func:`model_source`: the reference, the file it came from and that
file's sha256, so a table, a checkpoint or a report can be traced to the code it pruned.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from typing import Callable, Dict, Optional, Tuple

from edgeshrink.device.provenance import sha256_file

from ._spec import ModelError


class ModelReferenceError(ModelError):
    """A ``file.py:factory`` / ``module:factory`` reference that does not resolve to a usable callable."""


_LOADED: Dict[Tuple[str, str], object] = {}  # (absolute file, sha256) -> module: one load per file version


def is_reference(name: str) -> bool:
    """True for ``X:Y`` references (a registry name never holds a colon)."""
    return isinstance(name, str) and ":" in name


def split_reference(ref: str) -> Tuple[str, str]:
    """``"a/b.py:make"`` -> ``("a/b.py", "make")``; the last colon splits (a Windows drive letter keeps its own).

    Raises:
        ModelReferenceError: no object name after the colon, or nothing before it.
    """
    where, _, attr = ref.rpartition(":")
    if not where or not attr or not all(p.isidentifier() for p in attr.split(".")):
        raise ModelReferenceError(f"model reference {ref!r} must be path/to/file.py:factory or package.module:factory")
    return where, attr


_DIGESTS: Dict[Tuple[str, int, int], str] = {}  # (file, mtime ns, size) -> sha256: hashed once per version


def file_sha256(path: str) -> str:
    """The sha256 of ``path`` (:func:`edgeshrink.device.provenance.sha256_file`), hashed again only when the file's
    modification time or size changed: every ``create_model`` names its source, so this is on a hot path."""
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def _load_file(path: str):
    """``(module, sha256)`` of a user file, executed once per version of the file."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ModelReferenceError(f"model reference: no such file {path}")
    digest = file_sha256(path)
    if (path, digest) in _LOADED:
        return _LOADED[(path, digest)], digest
    name = f"_edgeshrink_user_{hashlib.sha1(f'{path}:{digest}'.encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelReferenceError(f"model reference: {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    folder = os.path.dirname(path)
    # The user's folder goes first so its own packages (its models/ too) win over same-named top-level packages
    # elsewhere on the path; edgeshrink's own live under edgeshrink.*, so they cannot collide.
    # The folder stays on the path afterwards: the module's functions may import lazily.
    if folder in sys.path:
        sys.path.remove(folder)
    sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        raise ModelReferenceError(f"model reference: importing {path} failed ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else ''})") from None
    _LOADED[(path, digest)] = module
    return module, digest


def _resolve(ref: str):
    """``(callable, origin file or None, its sha256 or None)``."""
    where, attr = split_reference(ref)
    if where.endswith(".py") or os.sep in where or "/" in where:
        module, digest = _load_file(where)
        origin = os.path.abspath(where)
    else:
        try:
            module = importlib.import_module(where)
        except Exception as e:
            raise ModelReferenceError(f"model reference {ref!r}: cannot import {where} ({type(e).__name__}: {e})") \
                from None
        origin = getattr(module, "__file__", None)
        digest = file_sha256(origin) if origin and os.path.isfile(origin) else None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelReferenceError(f"model reference {ref!r}: {where} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelReferenceError(f"model reference {ref!r}: {attr} is not callable")
    return obj, origin, digest


def resolve_callable(ref: str) -> Callable:
    """The callable a ``file.py:name`` / ``module:name`` reference names.

    Raises:
        ModelReferenceError: the file or module does not exist or fails to import, or has no such callable.
    """
    return _resolve(ref)[0]


def model_source(ref: str) -> Dict[str, Optional[str]]:
    """``{"model": ref, "file": absolute path or None, "sha256": hex digest or None}`` of a reference."""
    _, origin, digest = _resolve(ref)
    return {"model": ref, "file": origin, "sha256": digest}


def build_from_reference(ref: str, num_classes: int):
    """Call the factory a reference names: ``factory(num_classes=...)`` when it takes ``num_classes`` (or
    ``**kwargs``), else ``factory()``.

    Raises:
        ModelReferenceError: the reference does not resolve, the factory raises, or it returns no ``nn.Module``.
    """
    import torch.nn as nn

    factory = _resolve(ref)[0]
    try:
        params = inspect.signature(factory).parameters
        takes = "num_classes" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    except (TypeError, ValueError):
        takes = False
    try:
        model = factory(num_classes=num_classes) if takes else factory()
    except Exception as e:
        raise ModelReferenceError(f"model reference {ref!r}: the factory raised {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ModelReferenceError(f"model reference {ref!r}: the factory returned a {type(model).__name__}, not an "
                                  "nn.Module")
    return model

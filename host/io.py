"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename over the target,
so an interrupted run never leaves a half-written report, table or checkpoint."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Union

from edgeshrink.host.errors import UserError

PathLike = Union[str, "os.PathLike[str]"]


class OutputError(UserError):
    """An output path that cannot be written (under a regular file, in a read-only folder, a folder where a file
    should go): refused before any work, naming the path."""


def _reason(e: OSError) -> str:
    return e.strerror or type(e).__name__


def prepare_dir(path: PathLike, what: str = "output folder") -> Path:
    """Create the folder ``path`` (and its parents) and check that files can be written into it.

    Raises:
        OutputError: it cannot be created or written (the message names ``what`` and the path).
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".edgeshrink-write-check.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        raise OutputError(f"{what} {path}: a file is in the way, not a folder") from None
    except OSError as e:
        raise OutputError(f"{what} {path}: cannot write there ({_reason(e)})") from None
    return path


def prepare_file(path: PathLike, what: str = "output file") -> Path:
    """Check that ``path`` can be written atomically (its folder is created and writable, and no folder stands
    at ``path``) before the work that produces it starts.

    Raises:
        OutputError: naming ``what`` and the path.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name")
    prepare_dir(path.parent if str(path.parent) else Path("."), f"the folder of {what} {path}")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``, on error removed.

    Raises:
        OutputError: the folder of ``path`` cannot be created or written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OutputError(f"cannot write {path} ({_reason(e)})") from None
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n", encoding="utf-8")

"""What every device kind shares: a command's result, the :class:`Device` interface, and the device program
that is shipped to it (the ``edgeshrink.device`` package's folder, its files and their hash)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Protocol, Tuple

from edgeshrink import device as _device_pkg
from edgeshrink.host.errors import DeviceError

DEVICE_PKG = Path(_device_pkg.__file__).resolve().parent  # the folder that runs as ``python3 -m device`` on a board


def device_files(root: Path = DEVICE_PKG) -> Iterator[Tuple[str, Path]]:
    """The device program's files as ``(relative posix path, path)``, sorted, without ``__pycache__`` or ``.pyc``:
    what is copied to a device, packed into the zipapp and hashed."""
    for p in sorted(root.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
            yield p.relative_to(root).as_posix(), p


def device_tree_hash(root: Path = DEVICE_PKG) -> str:
    """sha256 over the device program's files (relative path and content)."""
    h = hashlib.sha256()
    for rel, p in device_files(root):
        h.update(rel.encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str
    duration_s: float


class Device(Protocol):
    spec: str

    def __enter__(self) -> "Device": ...

    def __exit__(self, *exc) -> None: ...

    def put(self, local_path: str, remote_rel: str) -> None: ...

    def get(self, remote_rel: str, local_path: str) -> None: ...

    def exists(self, remote_rel: str) -> bool: ...

    def run_device(self, args: List[str], timeout_s: Optional[float] = None,
                   on_stderr_line: Optional[Callable[[str], None]] = None, check: bool = True) -> CommandResult: ...


def check_result(spec: str, args: List[str], res: CommandResult) -> CommandResult:
    """Raise DeviceError naming the device, the command and its last stderr line when it failed."""
    if res.exit_code != 0:
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise DeviceError(f"device {args[0] if args else ''} failed on {spec} (exit {res.exit_code}): {last}")
    return res

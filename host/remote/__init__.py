"""Devices: where the device side runs. One interface for every kind (ARCHITECTURE.md, "Devices"):
put files into a work directory, run ``python3 -m device ...`` there, get files back.

Specs: ``local`` (a subprocess on this machine). ``ssh://user@host[:port]`` is the device-side issue's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Protocol

from host.errors import DeviceError


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

    def run_device(self, args: List[str], timeout_s: Optional[float] = None,
                   on_stderr_line: Optional[Callable[[str], None]] = None, check: bool = True) -> CommandResult: ...


def check_result(spec: str, args: List[str], res: CommandResult) -> CommandResult:
    """Raise DeviceError naming the device, the command and its last stderr line when it failed."""
    if res.exit_code != 0:
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise DeviceError(f"device {args[0] if args else ''} failed on {spec} (exit {res.exit_code}): {last}")
    return res


def open_device(spec: str, workdir: Optional[str] = None) -> Device:
    """A device for ``spec``.

    Args:
        spec: ``local`` or ``ssh://user@host[:port]``.
        workdir: the device-side work directory (default: a fresh temporary one for ``local``).

    Raises:
        DeviceError: a malformed or not yet supported spec.
    """
    if spec == "local":
        from host.remote.local import LocalDevice

        return LocalDevice(workdir)
    if spec.startswith("ssh://"):
        raise DeviceError(f"device {spec!r}: SSH devices are not implemented yet; use --device local")
    raise DeviceError(f"malformed device spec {spec!r}: expected 'local' or 'ssh://user@host[:port]'")


"""Devices: where the device side runs. One interface for every kind (ARCHITECTURE.md, "Devices"):
put files into a work directory, run ``python3 -m device ...`` there, get files back.

Specs: ``local`` (a subprocess on this machine) and ``ssh://[user@]host[:port][?python=...&root=...]`` (a board,
through paramiko: :mod:`host.remote.ssh`).
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

    def exists(self, remote_rel: str) -> bool: ...

    def run_device(self, args: List[str], timeout_s: Optional[float] = None,
                   on_stderr_line: Optional[Callable[[str], None]] = None, check: bool = True) -> CommandResult: ...


def check_result(spec: str, args: List[str], res: CommandResult) -> CommandResult:
    """Raise DeviceError naming the device, the command and its last stderr line when it failed."""
    if res.exit_code != 0:
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise DeviceError(f"device {args[0] if args else ''} failed on {spec} (exit {res.exit_code}): {last}")
    return res


def open_device(spec: str, workdir: Optional[str] = None, trust_new_host: bool = False) -> Device:
    """A device for ``spec``.

    Args:
        spec: ``local`` or ``ssh://[user@]host[:port][?python=...&root=...]``.
        workdir: the device-side work directory: a folder for ``local``, a session folder name under the
            board's root for ``ssh://``; kept when given (resume), a fresh one removed on exit by default.
        trust_new_host: ``ssh://`` only: accept a host not in known_hosts and record its key.

    Raises:
        DeviceError: a malformed spec (connection errors come when the device is entered).
    """
    if spec == "local":
        from host.remote.local import LocalDevice

        return LocalDevice(workdir)
    if spec.startswith("ssh://"):
        from host.remote.ssh import SshDevice

        return SshDevice(spec, workdir=workdir, trust_new_host=trust_new_host)
    raise DeviceError(f"malformed device spec {spec!r}: expected 'local' or 'ssh://user@host[:port]'")


"""Devices: where the device side runs. One interface for every kind (:class:`.base.Device`): put files into a
work directory, run ``python3 -m device ...`` there, get files back.

Specs: ``local`` (a subprocess on this machine, :mod:`.local`) and
``ssh://[user@]host[:port][?python=...&root=...]`` (a board, through paramiko: :mod:`.ssh`).
"""

from __future__ import annotations

from typing import Optional

from edgeshrink.host.errors import DeviceError
from edgeshrink.host.remote.base import CommandResult, Device, check_result  # noqa: F401  (the interface)


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
        from edgeshrink.host.remote.local import LocalDevice

        return LocalDevice(workdir)
    if spec.startswith("ssh://"):
        from edgeshrink.host.remote.ssh import SshDevice

        return SshDevice(spec, workdir=workdir, trust_new_host=trust_new_host)
    raise DeviceError(f"malformed device spec {spec!r}: expected 'local' or 'ssh://user@host[:port]'")


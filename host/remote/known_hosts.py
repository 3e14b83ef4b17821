"""``~/.ssh/known_hosts`` as OpenSSH reads it, for paramiko: markers handled, and written only to record a key the
user chose to trust.

paramiko's own loader raises on ``@cert-authority`` and ``@revoked`` lines and rewrites the whole file when it
saves (dropping comments and markers). Here the file is read line by line: ``@revoked`` keys are refused whatever
host they are presented by, ``@cert-authority`` lines are left alone (host certificates are not supported: such a
host is unknown unless its key is listed too), lines that do not parse are skipped as OpenSSH skips them; and a
newly trusted key is appended as one line, atomically (the file is rewritten to a temporary name and renamed,
everything that was there kept), under a lock, so the threads of a farm and several processes do not lose each
other's lines.
"""

from __future__ import annotations

import base64
import fcntl
import os
import tempfile
import threading
from contextlib import contextmanager
from typing import Iterator, List, Set, Tuple

from edgeshrink.host.errors import DeviceError

_LOCK = threading.Lock()


class KnownHosts:
    """The parsed file: the lines paramiko can use, and the revoked keys.

    Args:
        path: the known_hosts file (need not exist).
    """

    def __init__(self, path: str):
        self.path = path
        self.usable: List[str] = []  # plain "hosts keytype key" lines (hashed hosts included)
        self.revoked: Set[Tuple[str, str]] = set()  # (key type, base64 key)
        self.skipped = 0  # lines that did not parse, and @cert-authority lines
        self._read()

    def _read(self) -> None:
        try:
            with open(self.path, "r", encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return
        except OSError as e:
            raise DeviceError(f"cannot read {self.path}: {e.strerror}") from None
        for line in lines:
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            parts = s.split()
            if parts[0] == "@revoked" and len(parts) >= 4:
                self.revoked.add((parts[2], parts[3]))
            elif parts[0].startswith("@") or len(parts) < 3 or not _is_key(parts[2]):
                self.skipped += 1
            else:
                self.usable.append(" ".join(parts[:3]))

    def is_revoked(self, key) -> bool:
        """Whether the paramiko key ``key`` is listed ``@revoked``."""
        return (key.get_name(), key.get_base64()) in self.revoked

    def load_into(self, client) -> None:
        """Give ``client`` (a ``paramiko.SSHClient``) the usable, unrevoked lines as its known host keys (as
        system host keys: paramiko never writes those back)."""
        with tempfile.NamedTemporaryFile("w", suffix=".known_hosts", delete=False) as tmp:
            tmp.write("".join(ln + "\n" for ln in self.usable if tuple(ln.split()[1:3]) not in self.revoked))
        try:
            client.load_system_host_keys(tmp.name)
        finally:
            os.unlink(tmp.name)

    def policy(self, trust_new_host: bool):
        """The paramiko policy for a host whose key is not listed: refuse a revoked key always, record a new key
        with ``trust_new_host`` (:func:`record_key`), refuse it otherwise."""
        import paramiko

        known = self

        class Policy(paramiko.MissingHostKeyPolicy):
            def missing_host_key(self, client, hostname, key):
                if known.is_revoked(key):
                    raise RevokedKey(f"the host key of {hostname} ({key.get_name()}) is marked @revoked in "
                                     f"{known.path}: refusing to connect")
                if not trust_new_host:
                    raise paramiko.SSHException(f"Server {hostname!r} not found in known_hosts")
                record_key(known.path, hostname, key)

        return Policy()


class RevokedKey(Exception):
    """The server presented a key known_hosts lists as ``@revoked``."""


def _is_key(b64: str) -> bool:
    try:
        base64.b64decode(b64, validate=True)
        return True
    except ValueError:
        return False


@contextmanager
def _locked(path: str) -> Iterator[None]:
    with _LOCK:
        lock = path + ".lock"
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def record_key(path: str, host: str, key) -> None:
    """Append ``host``'s ``key`` (a paramiko key; ``host`` as known_hosts names it: ``name``, or ``[name]:port``
    off port 22) to ``path`` as one line, atomically, keeping every line that was there; nothing is written when
    the same line is already present.

    Raises:
        DeviceError: the file cannot be written.
    """
    line = f"{host} {key.get_name()} {key.get_base64()}"
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        with _locked(path):
            try:
                with open(path, "r", encoding="utf-8", errors="surrogateescape") as f:
                    old = f.read()
                mode = os.stat(path).st_mode & 0o777
            except FileNotFoundError:
                old, mode = "", 0o600
            if line in old.splitlines():
                return
            fd, tmp = tempfile.mkstemp(prefix=".known_hosts.", dir=folder)
            try:
                with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
                    f.write(old + ("" if not old or old.endswith("\n") else "\n") + line + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, mode)
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
    except OSError as e:
        raise DeviceError(f"cannot record the host key of {host} in {path}: {e.strerror}") from None

"""A real OpenSSH server on 127.0.0.1, started by the tests, as the remote device; and a HOME with the client's
~/.ssh (key, config, known_hosts) for paramiko to use."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
# tests that need the server skip at collection, before any fixture runs
needs_sshd = pytest.mark.skipif(SSHD is None, reason="openssh-server is not installed (apt-get install openssh-server)")


@dataclass
class Sshd:
    port: int
    user: str
    host_pub: str  # "ssh-ed25519 AAAA..."
    client_key: Path
    passphrase_key: Path
    passphrase: str
    proc: subprocess.Popen
    dir: Path

    def spec(self, **opts) -> str:
        q = "&".join(f"{k}={v}" for k, v in {"python": sys.executable, **opts}.items())
        return f"ssh://{self.user}@127.0.0.1:{self.port}?{q}"

    def session_pids(self):
        """PIDs of the per-connection sshd processes (children of the listener)."""
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    stat = (d / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    out.append(int(d.name))
        return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sshd(d: Path, sftp: bool = True, client_from: Path = None) -> Sshd:
    """Start ``sshd -D`` on a free 127.0.0.1 port with fresh host and client keys in folder ``d`` (``sftp``: with
    the SFTP subsystem, as most servers have; without it, as some embedded boards' servers are).

    Raises:
        RuntimeError: sshd is not installed or did not start.
    """
    if SSHD is None:
        raise RuntimeError("openssh-server is not installed (apt-get install openssh-server)")
    keygen = shutil.which("ssh-keygen")
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")], check=True)
    secret = "s3cret-passphrase-do-not-log"
    if client_from is None:
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(d / "id_ed25519")], check=True)
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", secret, "-f", str(d / "id_locked")], check=True)
    (d / "authorized_keys").write_text((d / "id_ed25519.pub").read_text() + (d / "id_locked.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = _free_port()
    (d / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d / 'host_key'}
AuthorizedKeysFile {d / 'authorized_keys'}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
PidFile {d / 'sshd.pid'}
{"Subsystem sftp internal-sftp" if sftp else ""}
LogLevel ERROR
""")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory sshd wants when root
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=open(d / "sshd.log", "w"))
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"sshd did not start: {(d / 'sshd.log').read_text()[-500:]}") from None
            time.sleep(0.1)
    host_pub = " ".join((d / "host_key.pub").read_text().split()[:2])
    return Sshd(port, getpass.getuser(), host_pub, d / "id_ed25519", d / "id_locked", secret, proc, d)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    if SSHD is None:
        pytest.skip("openssh-server is not installed (apt-get install openssh-server)")
    try:
        server = start_sshd(tmp_path_factory.mktemp("sshd"))
    except RuntimeError as e:
        pytest.fail(str(e))
    yield server
    server.proc.terminate()
    server.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def sshd_nosftp(tmp_path_factory, sshd):
    """A second server, without the SFTP subsystem, accepting the same client key."""
    d = tmp_path_factory.mktemp("sshd_nosftp")
    for name in ("id_ed25519", "id_ed25519.pub", "id_locked", "id_locked.pub"):
        (d / name).write_bytes((sshd.dir / name).read_bytes())
        os.chmod(d / name, 0o600)
    server = start_sshd(d, sftp=False, client_from=sshd.dir)
    yield server
    server.proc.terminate()
    server.proc.wait(timeout=10)


@pytest.fixture
def ssh_home(tmp_path, monkeypatch, sshd):
    """A fresh HOME whose ~/.ssh holds the client key (no known_hosts entry yet). Returns the HOME path."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(sshd.client_key, home / ".ssh" / "id_ed25519")
    os.chmod(home / ".ssh" / "id_ed25519", 0o600)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # no agent: only this HOME's key
    return home


def trust(home: Path, sshd: Sshd) -> None:
    """Record the server's real host key in known_hosts, as `ssh-keyscan` + checking the fingerprint would."""
    with open(home / ".ssh" / "known_hosts", "a") as f:
        f.write(f"[127.0.0.1]:{sshd.port} {sshd.host_pub}\n")

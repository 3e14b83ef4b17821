"""``ssh://`` devices: the device side on a board, driven over SSH with paramiko.

Two layers, as STYLE.md asks (a fabric-shaped wrapper, not fabric itself):

* :class:`SshConnection`: connects on first use (keys, the SSH agent, ``~/.ssh/config``), checks the host key
  against ``~/.ssh/known_hosts`` (an unknown host is refused unless ``trust_new_host``, which records its key;
  a changed key is always refused), and offers ``run(cmd, check, timeout_s) -> CommandResult``, ``put``, ``get``.
* :class:`SshDevice`: the :class:`host.remote.Device` interface over a connection. It pushes ``device/`` to
  ``<root>/device`` only when its content hash changed, keeps each session's files in ``<root>/<session>``,
  runs ``python3 -m device ...`` there, streams stderr lines as progress, and, when the connection drops, reconnects
  and runs the command again (device commands are resumable: ``bench --jsonl`` skips what it already measured,
  and the interrupted remote process is killed first).

Every remote command is assembled with ``shlex.quote``. Passwords are not supported (use keys or an agent); a key's
passphrase comes from ``$EDGESHRINK_SSH_PASSPHRASE`` and is never logged or put in an error message.

Spec: ``ssh://[user@]host[:port][?python=/path/to/python3&root=/path/on/board]`` where ``host`` may be a
``Host`` alias of ``~/.ssh/config``.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shlex
import socket
import stat
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union
from urllib.parse import parse_qs, urlsplit

from edgeshrink.host.errors import DeviceError
from edgeshrink.host.remote.base import CommandResult, check_result, device_files, device_tree_hash
from edgeshrink.host.remote.known_hosts import KnownHosts, RevokedKey

log = logging.getLogger("edgeshrink.remote.ssh")

HASH_FILE = ".edgeshrink-device.sha256"  # in ROOT/device: put there by edgeshrink, and the hash it sent
SESSION_FILE = ".edgeshrink-session"  # in a session folder edgeshrink made
# The device program's tree hash, computed on the board by its own Python (the same walk as device_tree_hash)
_TREE_HASH = ("import hashlib, pathlib, sys\n"
              "root = pathlib.Path(sys.argv[1]); h = hashlib.sha256()\n"
              "for p in sorted(root.rglob('*')):\n"
              "    if p.is_file() and '__pycache__' not in p.parts and p.suffix != '.pyc' and p.name != sys.argv[2]:\n"
              "        h.update(p.relative_to(root).as_posix().encode() + b'\\0'); h.update(p.read_bytes())\n"
              "print(h.hexdigest())\n")
PASSPHRASE_ENV = "EDGESHRINK_SSH_PASSPHRASE"


@dataclass(frozen=True)
class SshSpec:
    host: str  # a hostname, an address or a ~/.ssh/config Host alias
    user: Optional[str] = None
    port: Optional[int] = None
    python: str = "python3"  # the interpreter on the board (a venv's, e.g. from install_jetson.sh)
    root: str = "edgeshrink"  # the work root on the board, relative to the login directory unless absolute

    @property
    def display(self) -> str:
        return f"ssh://{self.user + '@' if self.user else ''}{self.host}{':' + str(self.port) if self.port else ''}"


def parse_ssh_spec(spec: str) -> SshSpec:
    """``ssh://user@host:port?python=...&root=...`` -> :class:`SshSpec`.

    Raises:
        DeviceError: not an ssh:// spec, no host, a bad port or an unknown option.
    """
    u = urlsplit(spec)
    if u.scheme != "ssh" or not u.hostname:
        raise DeviceError(f"malformed device spec {spec!r}: expected ssh://user@host[:port]")
    try:
        port = u.port
    except ValueError:
        raise DeviceError(f"malformed device spec {spec!r}: bad port") from None
    if u.password is not None:
        raise DeviceError(f"device spec {u.hostname!r}: passwords in the spec are not supported; use a key or ssh-agent")
    if u.path not in ("", "/"):
        raise DeviceError(f"malformed device spec {spec!r}: no path expected (use ?root=DIR for the work root)")
    opts = {k: v[-1] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
    unknown = set(opts) - {"python", "root"}
    if unknown:
        raise DeviceError(f"device spec {spec!r}: unknown option(s) {', '.join(sorted(unknown))} (known: python, root)")
    return SshSpec(host=u.hostname, user=u.username, port=port, python=opts.get("python") or "python3",
                   root=opts.get("root") or "edgeshrink")


def _dropped(e: BaseException) -> bool:
    """Whether ``e`` means the connection went away (worth a reconnect), not a file or usage error: EOF, a reset
    or refused connection, a timeout, paramiko's transport errors, or the plain OSError("Socket is closed")
    paramiko raises on a dead channel. FileNotFoundError, PermissionError and other OSError subclasses are not."""
    import paramiko

    return (isinstance(e, (EOFError, ConnectionError, socket.timeout, paramiko.SSHException))
            or type(e) is OSError)


class SshConnection:
    """One SSH connection, opened on first use. A context manager.

    Args:
        host: hostname, address or ``~/.ssh/config`` alias.
        user: login user (default: ``~/.ssh/config``'s, else the local user).
        port: port (default: ``~/.ssh/config``'s, else 22).
        trust_new_host: accept a host missing from known_hosts and record its key there.
        connect_timeout_s: TCP + handshake timeout.
        ssh_config: path of the OpenSSH client config to read.
        known_hosts: path of the known_hosts file to check and update.

    Raises (on first use):
        DeviceError: unknown or changed host key, failed authentication, unreachable host.
    """

    def __init__(self, host: str, user: Optional[str] = None, port: Optional[int] = None, *,
                 trust_new_host: bool = False, connect_timeout_s: float = 15.0,
                 ssh_config: str = "~/.ssh/config", known_hosts: str = "~/.ssh/known_hosts"):
        self.host, self.user, self.port = host, user, port
        self.trust_new_host = trust_new_host
        self.connect_timeout_s = connect_timeout_s
        self.ssh_config = os.path.expanduser(ssh_config)
        self.known_hosts = os.path.expanduser(known_hosts)
        self._client = None
        self._sftp = None
        self._use_sftp = True  # False once the server turned out to have no SFTP subsystem

    # -- connection -------------------------------------------------------------------------------------
    def _resolved(self):
        import paramiko

        cfg = {}
        if os.path.exists(self.ssh_config):
            cfg = paramiko.SSHConfig.from_path(self.ssh_config).lookup(self.host)
        hostname = cfg.get("hostname", self.host)
        port = self.port or int(cfg.get("port", 22))
        user = self.user or cfg.get("user") or _local_user()
        keys = [os.path.expanduser(k) for k in cfg.get("identityfile", []) if os.path.exists(os.path.expanduser(k))]
        proxy = paramiko.ProxyCommand(cfg["proxycommand"]) if cfg.get("proxycommand") else None
        return hostname, port, user, keys, proxy

    def connect(self) -> "SshConnection":
        import paramiko

        if self._client is not None and self._client.get_transport() and self._client.get_transport().is_active():
            return self
        hostname, port, user, keys, proxy = self._resolved()
        where = f"{user}@{hostname}:{port}"
        client = paramiko.SSHClient()
        known = KnownHosts(self.known_hosts)
        known.load_into(client)
        client.set_missing_host_key_policy(known.policy(self.trust_new_host))
        log.info("connecting to %s", where)
        try:
            client.connect(hostname, port=port, username=user, key_filename=keys or None,
                           passphrase=os.environ.get(PASSPHRASE_ENV) or None, timeout=self.connect_timeout_s,
                           banner_timeout=self.connect_timeout_s, auth_timeout=self.connect_timeout_s,
                           sock=proxy, allow_agent=True, look_for_keys=True)
        except RevokedKey as e:
            client.close()
            raise DeviceError(str(e)) from None
        except paramiko.BadHostKeyException as e:
            client.close()
            raise DeviceError(f"host key of {hostname}:{port} does not match {self.known_hosts} (got "
                              f"{e.key.get_name()} {e.key.get_fingerprint().hex()}): refusing to connect; if the board "
                              "was reinstalled, remove its old line from known_hosts") from None
        except paramiko.AuthenticationException:
            client.close()
            raise DeviceError(f"SSH authentication failed for {where} (keys: {', '.join(keys) or 'default ~/.ssh/id_*'}"
                              f", agent; a key passphrase is read from ${PASSPHRASE_ENV})") from None
        except paramiko.SSHException as e:
            client.close()
            if "not found in known_hosts" in str(e):
                raise DeviceError(f"unknown host {hostname}:{port}: its key is not in {self.known_hosts}; check the "
                                  "fingerprint (ssh-keyscan) and add it, or pass --trust-new-host") from None
            if "key" in str(e).lower():  # e.g. "Invalid key": an encrypted key that the passphrase did not open
                raise DeviceError(f"SSH to {where}: could not load the private key ({e}); is the passphrase in "
                                  f"${PASSPHRASE_ENV} right?") from None
            raise DeviceError(f"SSH to {where} failed: {e}") from None
        except (OSError, socket.timeout) as e:
            client.close()
            raise DeviceError(f"cannot connect to {where}: {e.strerror or e}") from None
        client.get_transport().set_keepalive(10)  # a silently dead link is noticed instead of hanging
        self._client = client
        return self

    def close(self) -> None:
        if self._sftp is not None:
            try:
                self._sftp.close()
            except Exception:  # noqa: BLE001 - closing a dead channel
                pass
        if self._client is not None:
            self._client.close()
        self._client = self._sftp = None

    def __enter__(self) -> "SshConnection":
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def sftp(self):
        """The SFTP channel, or None when the server has no SFTP subsystem (files then go over the exec channel)."""
        import paramiko

        self.connect()
        if self._sftp is None and self._use_sftp:
            try:
                self._sftp = self._client.open_sftp()
            except (paramiko.SSHException, EOFError) as e:
                transport = self._client.get_transport()
                if transport is None or not transport.is_active():
                    raise
                # the connection is alive, the subsystem is not: "Channel closed" is what paramiko says of it
                log.warning("%s has no SFTP subsystem (%s): copying files over the exec channel instead",
                            self.host, e or "channel closed")
                self._use_sftp = False
        return self._sftp

    # -- commands and files -----------------------------------------------------------------------------
    def run(self, cmd: Union[str, Sequence[str]], check: bool = True, timeout_s: Optional[float] = None,
            on_stderr_line: Optional[Callable[[str], None]] = None) -> CommandResult:
        """Run a command on the board.

        Args:
            cmd: a list of arguments (each quoted with ``shlex.quote``) or a shell string already assembled
                from quoted parts.
            check: raise DeviceError on a non-zero exit.
            timeout_s: wall-clock limit; the channel is closed and DeviceError raised when it passes.
            on_stderr_line: called with each stderr line as it arrives (progress).

        Raises:
            DeviceError: timeout, or (with ``check``) non-zero exit.
            EOFError, ConnectionError, OSError: the connection dropped (callers may reconnect and retry).
        """
        import paramiko

        self.connect()
        line = cmd if isinstance(cmd, str) else " ".join(shlex.quote(str(a)) for a in cmd)
        log.debug("run on %s: %s", self.host, line)
        t0 = time.monotonic()
        try:
            chan = self._client.get_transport().open_session()
        except paramiko.SSHException as e:
            raise ConnectionError(f"SSH session to {self.host} lost: {e}") from None
        chan.settimeout(0.2)
        chan.exec_command(line)
        out, err, pending = [], [], ""
        while True:
            if timeout_s is not None and time.monotonic() - t0 > timeout_s:
                chan.close()
                raise DeviceError(f"remote command timed out after {timeout_s} s on {self.host}: {line[:120]}")
            got = False
            while chan.recv_ready():
                out.append(chan.recv(1 << 16))
                got = True
            while chan.recv_stderr_ready():
                chunk = chan.recv_stderr(1 << 16).decode("utf-8", "replace")
                err.append(chunk)
                got = True
                if on_stderr_line:
                    pending += chunk
                    *lines, pending = pending.split("\n")
                    for ln in lines:
                        on_stderr_line(ln)
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            transport = self._client.get_transport()
            if transport is None or not transport.is_active() or (chan.closed and not chan.exit_status_ready()):
                raise ConnectionError(f"SSH connection to {self.host} dropped while running: {line[:120]}")
            if not got:
                time.sleep(0.01)
        if on_stderr_line and pending:
            on_stderr_line(pending)
        code = chan.recv_exit_status()
        chan.close()
        if code == -1:  # paramiko: the channel closed without an exit status (the connection or sshd died)
            raise ConnectionError(f"SSH connection to {self.host} dropped while running: {line[:120]}")
        res = CommandResult(code, b"".join(out).decode("utf-8", "replace"), "".join(err), time.monotonic() - t0)
        if check and code != 0:
            last = (res.stderr.strip().splitlines() or res.stdout.strip().splitlines() or ["no output"])[-1]
            raise DeviceError(f"remote command failed on {self.host} (exit {code}): {last}")
        return res

    def _exec_bytes(self, line: str, data: Optional[bytes] = None, timeout_s: float = 600.0) -> Tuple[int, bytes, str]:
        """Run a shell ``line`` feeding ``data`` to its stdin; ``(exit code, stdout bytes, stderr text)``. What
        the file operations use when the server has no SFTP subsystem."""
        self.connect()
        chan = self._client.get_transport().open_session()
        chan.settimeout(timeout_s)
        chan.exec_command(line)
        if data is not None:
            for k in range(0, len(data), 1 << 15):
                chan.sendall(data[k: k + (1 << 15)])
        chan.shutdown_write()
        out, err = [], []
        while True:
            got = chan.recv(1 << 16)
            if not got:
                break
            out.append(got)
        code = chan.recv_exit_status()  # then stderr is complete: paramiko buffers it while stdout is read
        while chan.recv_stderr_ready():
            err.append(chan.recv_stderr(1 << 16))
        chan.close()
        if code == -1:
            raise ConnectionError(f"SSH connection to {self.host} dropped while running: {line[:120]}")
        return code, b"".join(out), b"".join(err).decode("utf-8", "replace")

    def _exec_checked(self, line: str, data: Optional[bytes] = None) -> bytes:
        code, out, err = self._exec_bytes(line, data)
        if code != 0:
            raise DeviceError(f"copying files over the exec channel failed on {self.host} (exit {code}): "
                              f"{(err.strip().splitlines() or ['no output'])[-1]}")
        return out

    def makedirs(self, remote_dir: str) -> None:
        """``mkdir -p``, over SFTP or the exec channel."""
        if self.sftp is None:
            self._exec_checked(f"mkdir -p -- {shlex.quote(remote_dir)}")
            return
        parts, cur = remote_dir.strip("/").split("/"), "/" if remote_dir.startswith("/") else ""
        for p in parts:
            cur = posixpath.join(cur, p) if cur else p
            try:
                self.sftp.stat(cur)
            except FileNotFoundError:
                self.sftp.mkdir(cur)

    def put(self, local_path: str, remote_path: str) -> None:
        """Upload a file (to a temporary name, then renamed: a dropped transfer leaves no partial file)."""
        tmp = remote_path + ".part"
        if self.sftp is None:
            with open(local_path, "rb") as f:
                data = f.read()
            q = shlex.quote
            folder = posixpath.dirname(remote_path) or "."
            self._exec_checked(f"mkdir -p -- {q(folder)} && cat > {q(tmp)} && mv -f -- {q(tmp)} {q(remote_path)}", data)
            return
        self.makedirs(posixpath.dirname(remote_path) or ".")
        self.sftp.put(local_path, tmp)
        self.sftp.posix_rename(tmp, remote_path)

    def write_bytes(self, remote_path: str, data: bytes) -> None:
        """Write ``data`` to a remote file (to a temporary name, then renamed)."""
        with tempfile.NamedTemporaryFile(delete=False) as f:
            f.write(data)
        try:
            self.put(f.name, remote_path)
        finally:
            os.unlink(f.name)

    def get(self, remote_path: str, local_path: str) -> None:
        """Download a file (written locally to a temporary name, then renamed)."""
        tmp = local_path + ".part"
        if self.sftp is None:
            code, out, _ = self._exec_bytes(f"cat -- {shlex.quote(remote_path)}")
            if code != 0:
                raise DeviceError(f"{self.host} has no {remote_path}")
            with open(tmp, "wb") as f:
                f.write(out)
        else:
            try:
                self.sftp.get(remote_path, tmp)
            except FileNotFoundError:
                raise DeviceError(f"{self.host} has no {remote_path}") from None
        os.replace(tmp, local_path)

    def _is(self, remote_path: str, kind: str) -> bool:
        """Whether ``remote_path`` is a regular file (``kind`` "f") or a folder ("d") on the board."""
        if self.sftp is None:
            return self._exec_bytes(f"test -{kind} {shlex.quote(remote_path)}")[0] == 0
        try:
            mode = self.sftp.stat(remote_path).st_mode
        except FileNotFoundError:
            return False
        return stat.S_ISREG(mode) if kind == "f" else stat.S_ISDIR(mode)

    def is_file(self, remote_path: str) -> bool:
        """Whether ``remote_path`` is a regular file on the board."""
        return self._is(remote_path, "f")

    def is_dir(self, remote_path: str) -> bool:
        """Whether ``remote_path`` is a folder on the board."""
        return self._is(remote_path, "d")

    def home(self) -> str:
        """The login folder on the board (where relative paths start)."""
        if self.sftp is None:
            return self._exec_checked("pwd").decode("utf-8", "replace").strip()
        return self.sftp.normalize(".")

    def read_text(self, remote_path: str) -> Optional[str]:
        """A remote file's text, or None when it does not exist."""
        if self.sftp is None:
            code, out, _ = self._exec_bytes(f"cat -- {shlex.quote(remote_path)}")
            return out.decode("utf-8", "replace") if code == 0 else None
        try:
            with self.sftp.open(remote_path, "r") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return None


def _local_user() -> str:
    import getpass

    return getpass.getuser()


class SshDevice:
    """The :class:`host.remote.Device` interface on a board over SSH.

    Args:
        spec: ``ssh://[user@]host[:port][?python=...&root=...]``.
        workdir: the session folder under the root (kept, so a later run can resume there); default a fresh
            one that is removed on exit.
        trust_new_host: see :class:`SshConnection`.
        retries: reconnect-and-rerun attempts when the connection drops.
        connect_timeout_s: TCP + SSH handshake limit.
        command_timeout_s: limit of a device command run without its own timeout.
    """

    def __init__(self, spec: str, workdir: Optional[str] = None, trust_new_host: bool = False, retries: int = 3,
                 connect_timeout_s: float = 15.0, command_timeout_s: float = 6 * 3600.0):
        self.spec = spec
        self.target = parse_ssh_spec(spec)
        self.conn = SshConnection(self.target.host, self.target.user, self.target.port,
                                  trust_new_host=trust_new_host, connect_timeout_s=connect_timeout_s)
        self._own = workdir is None
        self.session = workdir or f"s-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        if "/" in self.session.strip("/") or self.session in ("", ".", "..", "device"):
            raise DeviceError(f"device work directory name {self.session!r} must be a plain folder name")
        self.retries = retries
        self.command_timeout_s = command_timeout_s  # for device commands run without an explicit timeout
        self.pushed_device: Optional[bool] = None
        self.root = ""

    # -- set-up -----------------------------------------------------------------------------------------
    def __enter__(self) -> "SshDevice":
        self._with_retry(self._setup)
        return self

    def _setup(self) -> None:
        rel = self.target.root[2:] if self.target.root.startswith("~/") else self.target.root
        base = rel if rel.startswith("/") else posixpath.join(self.conn.home(), rel)
        self.root = base
        session = posixpath.join(base, self.session)
        fresh = not self.conn.is_dir(session)
        self.conn.makedirs(session)
        if fresh or self.conn.is_file(posixpath.join(session, SESSION_FILE)):
            self.conn.write_bytes(posixpath.join(session, SESSION_FILE), b"edgeshrink session folder\n")
        self._push_device()

    def _python(self) -> str:
        """The board's interpreter for a shell line: ``~/`` expands on the board, everything else is quoted."""
        py = self.target.python
        return '"$HOME"/' + shlex.quote(py[2:]) if py.startswith("~/") else shlex.quote(py)

    def remote_tree_hash(self, dev_dir: str) -> Optional[str]:
        """The sha256 of the device program's files as they are on the board (the files' own hash, computed there
        by its Python), or None when it cannot be computed (no such folder)."""
        q = shlex.quote
        res = self.conn.run(f"{self._python()} -c {q(_TREE_HASH)} {q(dev_dir)} {q(HASH_FILE)}", check=False,
                            timeout_s=120)
        digest = res.stdout.strip()
        return digest if res.exit_code == 0 and len(digest) == 64 else None

    def _push_device(self) -> None:
        """Upload ``device/`` unless the board's copy is the same, judged by the sha256 of its files computed on
        the board; a ``device/`` folder there that edgeshrink did not put (no marker file) is never removed."""
        want = device_tree_hash()
        dev_dir = posixpath.join(self.root, "device")
        marker = posixpath.join(dev_dir, HASH_FILE)
        have = self.conn.read_text(marker)
        if have is not None and have.strip() == want and self.remote_tree_hash(dev_dir) == want:
            self.pushed_device = False
            return
        if have is None and self.conn.is_dir(dev_dir) and self.conn.run(
                ["find", dev_dir, "-mindepth", "1", "-maxdepth", "1"], check=False, timeout_s=60).stdout.strip():
            raise DeviceError(f"{self.target.display}: {dev_dir} exists and was not put there by edgeshrink (it has no "
                              f"{HASH_FILE}); choose another work root (?root=DIR) or move that folder away")
        log.info("pushing device/ to %s:%s", self.target.host, dev_dir)
        if have is not None:  # ours: an older or a damaged copy
            self.conn.run(["rm", "-rf", "--", dev_dir])
        for rel, path in device_files():
            self.conn.put(str(path), posixpath.join(dev_dir, rel))
        got = self.remote_tree_hash(dev_dir)
        if got != want:
            raise DeviceError(f"{self.target.display}: the device program in {dev_dir} does not hash to what was sent "
                              f"({(got or 'no hash')[:12]} there, {want[:12]} here)")
        self.conn.write_bytes(marker, want.encode())  # written last: a cut upload is pushed again next time
        self.pushed_device = True

    def __exit__(self, *exc) -> None:
        try:
            if self._own and self.root:
                q = shlex.quote
                session = posixpath.join(self.root, self.session)
                # only a folder this session made (it holds the session marker) is removed
                self.conn.run(f"test -f {q(posixpath.join(session, SESSION_FILE))} && rm -rf -- {q(session)}",
                              check=False, timeout_s=60)
        except DeviceError:
            pass
        except Exception as e:  # noqa: BLE001 - cleaning up over a dead connection
            if not _dropped(e):
                raise
        finally:
            self.conn.close()

    # -- the Device interface ---------------------------------------------------------------------------
    @property
    def workdir(self) -> str:
        return posixpath.join(self.root, self.session)

    def _remote(self, rel: str) -> str:
        norm = posixpath.normpath(rel)
        if norm.startswith("..") or norm.startswith("/"):
            raise DeviceError(f"path {rel!r} leaves the device work directory")
        return posixpath.join(self.workdir, norm)

    def _with_retry(self, fn: Callable, *args):
        delay = 1.0
        for attempt in range(self.retries + 1):
            try:
                return fn(*args)
            except Exception as e:  # noqa: BLE001 - filtered just below
                if not _dropped(e):
                    raise
                if attempt == self.retries:
                    raise DeviceError(f"lost the connection to {self.target.display} {self.retries + 1} times: "
                                      f"{e}") from None
                log.warning("connection to %s dropped (%s); reconnecting in %.0f s", self.target.display, e, delay)
                self.conn.close()
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
                self.conn.connect()

    def put(self, local_path: str, remote_rel: str) -> None:
        dst = self._remote(remote_rel)
        if os.path.isdir(local_path):
            for p in sorted(Path(local_path).rglob("*")):
                if p.is_file():
                    self._with_retry(self.conn.put, str(p), posixpath.join(dst, p.relative_to(local_path).as_posix()))
        else:
            self._with_retry(self.conn.put, local_path, dst)

    def get(self, remote_rel: str, local_path: str) -> None:
        self._with_retry(self.conn.get, self._remote(remote_rel), local_path)

    def exists(self, remote_rel: str) -> bool:
        return self._with_retry(self.conn.is_file, self._remote(remote_rel))

    def command(self, args: List[str]) -> str:
        """The shell line that runs ``python3 -m device ARGS`` in the session folder (every part quoted). It
        records its PID, so a rerun after a dropped connection can stop the orphan first."""
        q = shlex.quote
        return (f"cd {q(self.workdir)} && echo $$ > .device.pid && exec env PYTHONPATH={q(self.root)} "
                f"{self._python()} -m device " + " ".join(q(str(a)) for a in args))

    def run_device(self, args: List[str], timeout_s: Optional[float] = None,
                   on_stderr_line: Optional[Callable[[str], None]] = None, check: bool = True) -> CommandResult:
        """Run ``python3 -m device ARGS`` in the session folder; stderr lines stream to ``on_stderr_line``.

        When the connection drops, reconnect and run it again after stopping the interrupted process; device
        commands resume (``bench --jsonl``).

        Raises:
            DeviceError: timeout, the connection lost too often, or (with ``check``) a non-zero exit.
        """
        line = self.command(args)
        first = [True]

        def go() -> CommandResult:
            if not first[0]:
                pidf = shlex.quote(posixpath.join(self.workdir, ".device.pid"))
                self.conn.run(f"test -f {pidf} && kill $(cat {pidf}) 2>/dev/null; sleep 0.2; true", check=False,
                              timeout_s=30)
            first[0] = False
            return self.conn.run(line, check=False, timeout_s=timeout_s or self.command_timeout_s,
                                 on_stderr_line=on_stderr_line)

        res = self._with_retry(go)
        return check_result(self.spec, args, res) if check else res

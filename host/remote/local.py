"""The ``local`` device: the device side in a subprocess on this machine, run from a *copy* of the
``device/`` folder in a work directory, exactly as it would run on a board."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional

from edgeshrink.host.errors import DeviceError
from edgeshrink.host.remote.base import DEVICE_PKG, CommandResult, check_result


class LocalDevice:
    """Runs ``python -m device`` from ``workdir`` with this interpreter (which has the runtimes).

    A context manager; a temporary work directory is removed on exit, a given one is kept.
    """

    spec = "local"

    def __init__(self, workdir: Optional[str] = None):
        self._own = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="edgeshrink-device-"))

    def __enter__(self) -> "LocalDevice":
        self.workdir.mkdir(parents=True, exist_ok=True)
        dst = self.workdir / "device"
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(DEVICE_PKG, dst, ignore=shutil.ignore_patterns("__pycache__"))
        return self

    def __exit__(self, *exc) -> None:
        if self._own:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _remote(self, rel: str) -> Path:
        p = (self.workdir / rel).resolve()
        if self.workdir.resolve() not in p.parents and p != self.workdir.resolve():
            raise DeviceError(f"path {rel!r} leaves the device work directory")
        return p

    def put(self, local_path: str, remote_rel: str) -> None:
        dst = self._remote(remote_rel)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if os.path.isdir(local_path):
            shutil.copytree(local_path, dst, dirs_exist_ok=True)
        else:
            shutil.copyfile(local_path, dst)

    def exists(self, remote_rel: str) -> bool:
        return self._remote(remote_rel).is_file()

    def get(self, remote_rel: str, local_path: str) -> None:
        src = self._remote(remote_rel)
        if not src.exists():
            raise DeviceError(f"device work directory has no {remote_rel!r}")
        shutil.copyfile(src, local_path)

    def run_device(self, args: List[str], timeout_s: Optional[float] = None,
                   on_stderr_line: Optional[Callable[[str], None]] = None, check: bool = True) -> CommandResult:
        """Run ``python -m device ARGS`` in the work directory; stderr lines stream to ``on_stderr_line``.

        Raises:
            DeviceError: the command timed out, or (with ``check``) exited non-zero.
        """
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "device", *args], cwd=self.workdir, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        err_lines: List[str] = []

        def pump() -> None:
            for line in proc.stderr:
                err_lines.append(line)
                if on_stderr_line:
                    on_stderr_line(line.rstrip("\n"))

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        try:
            out = proc.stdout.read()
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise DeviceError(f"device command timed out after {timeout_s} s: device {' '.join(args[:2])}")
        except BaseException:
            proc.kill()
            raise
        t.join()
        res = CommandResult(proc.returncode, out, "".join(err_lines), time.monotonic() - t0)
        return check_result(self.spec, args, res) if check else res

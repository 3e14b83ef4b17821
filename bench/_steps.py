"""What the bench scripts share: running `host` as a user does, reading a run's metrics, and resumable steps."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict


def host(*args: str) -> None:
    """``host ARGS`` in a subprocess of this interpreter, echoed, failing the script when it fails."""
    print("+ host " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "edgeshrink", *args], check=True)


def metrics(folder: Path) -> dict:
    """A `host train` run's ``metrics.json``."""
    return json.loads((folder / "metrics.json").read_text())


class Steps:
    """``steps(name, done, *host_args)`` runs ``host`` unless ``done`` (a file the step writes) exists, so a rerun
    reuses finished steps; ``times`` holds each step run now, in seconds."""

    def __init__(self):
        self.times: Dict[str, float] = {}

    def __call__(self, name: str, done: Path, *cmd: str) -> None:
        if done.exists():
            return
        t = time.monotonic()
        host(*cmd)
        self.times[name] = round(time.monotonic() - t, 1)

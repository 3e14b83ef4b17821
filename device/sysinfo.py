"""What the device is: the metadata every measurement carries (host, CPU, OS, governor, board)."""

from __future__ import annotations

import os
import platform
import socket
from typing import Dict, Optional


def _read(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").strip("\x00\n ")
    except OSError:
        return None


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo ("model name", or "Hardware"/"Model" on ARM boards)."""
    text = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Model", "Hardware", "cpu model"):
        for line in text.splitlines():
            if line.lower().startswith(key.lower()) and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def governors() -> Optional[str]:
    """The CPU frequency governor(s), e.g. ``"performance"``; comma-joined when cores differ; None if unreadable."""
    found = []
    for cpu in range(os.cpu_count() or 1):
        g = _read(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor")
        if g and g not in found:
            found.append(g)
    return ",".join(found) or None


def board() -> Optional[str]:
    """Board model from the device tree (Jetson, Raspberry Pi); None on a PC."""
    return _read("/proc/device-tree/model")


def collect(runtime: Optional[str] = None, threads: Optional[int] = None) -> Dict[str, object]:
    """Device metadata as a JSON-able dict: hostname, cpu, cpu_count, os, python, board, governor, runtime, threads."""
    return {
        "hostname": socket.gethostname(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "board": board(),
        "governor": governors(),
        "runtime": runtime,
        "threads": threads,
    }

"""The measurement options of ``device bench``, defined once: the device CLI parses them, and the host CLI
(``host bench``) offers the same ones and forwards them to the device with :func:`forward`."""

from __future__ import annotations

import argparse
from typing import List

# (flag, argparse keyword arguments); all default to None except where a default is given
MEASURE_OPTIONS = (
    ("--warmup-s", dict(type=float, help="also warm up for at least this many seconds (GPU, DVFS)")),
    ("--precision", dict(default="fp32", choices=("fp32", "fp16", "int8"),
                         help="engine precision for tensorrt/trtexec (other backends run the file as it is)")),
    ("--cpus", dict(help="pin to these CPUs, e.g. 0-3 or 4,5 (sched_setaffinity)")),
    ("--power", dict(choices=("auto", "tegrastats", "pmic", "hwmon"),
                     help="measure power during the run: tegrastats (Jetson), pmic (Raspberry Pi 5), hwmon "
                          "(INA219/260)")),
    ("--power-interval-ms", dict(type=int, default=100, help="power sampling interval (default 100 ms)")),
    ("--idle-s", dict(type=float, default=2.0, help="idle power window before each model (default 2 s)")),
    ("--cool-down-to", dict(type=float, metavar="DEGC",
                            help="before each model, wait until the hottest sensor is at or below this temperature")),
    ("--cool-down-s", dict(type=float, metavar="S", help="before each model, wait this many seconds")),
)


def add_measure_options(p: argparse.ArgumentParser) -> None:
    for flag, kw in MEASURE_OPTIONS:
        p.add_argument(flag, **kw)


def forward(args: argparse.Namespace) -> List[str]:
    """The measurement options of parsed ``args`` as ``device bench`` arguments (those that are set)."""
    out: List[str] = []
    for flag, _ in MEASURE_OPTIONS:
        val = getattr(args, flag[2:].replace("-", "_"))
        if val is not None:
            out += [flag, str(val)]
    return out

"""hwmon power meters: INA219 / INA260 (and the INA226 family) exposed by Linux under /sys/class/hwmon.

Units as the kernel's hwmon ABI gives them: ``power1_input`` in microwatts, ``in1_input`` (bus voltage) in
millivolts, ``curr1_input`` in milliamperes. Power is ``power1_input`` when the driver provides it, otherwise
bus voltage x current.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional

HWMON_ROOT = "/sys/class/hwmon"
METER_CHIPS = ("ina219", "ina260", "ina226", "ina230", "ina231")


def _read_int(path: str) -> Optional[int]:
    try:
        with open(path, "r", encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def find_meters(root: str = HWMON_ROOT) -> List[Dict[str, str]]:
    """The hwmon devices that are power meters: ``[{"path": ..., "chip": "ina219"}]`` (empty when none)."""
    out = []
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return out
    for e in entries:
        d = os.path.join(root, e)
        try:
            with open(os.path.join(d, "name"), "r", encoding="ascii") as f:
                chip = f.read().strip()
        except OSError:
            continue
        if chip in METER_CHIPS:
            out.append({"path": d, "chip": chip})
    return out


def read_power_mw(meter_path: str) -> Optional[float]:
    """Power in mW from one hwmon meter: ``power1_input`` (uW) / 1000, else ``in1_input`` (mV) x ``curr1_input``
    (mA) / 1000; None when neither is readable."""
    p = _read_int(os.path.join(meter_path, "power1_input"))
    if p is not None:
        return p / 1000.0
    mv = _read_int(os.path.join(meter_path, "in1_input"))
    ma = _read_int(os.path.join(meter_path, "curr1_input"))
    if mv is None or ma is None:
        return None
    return mv * ma / 1000.0

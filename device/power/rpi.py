"""Raspberry Pi: temperature, throttling and ARM clock from ``vcgencmd``, board power from the Pi 5 PMIC.

Outputs parsed (Raspberry Pi firmware's ``vcgencmd``):

* ``measure_temp`` -> ``temp=47.2'C``
* ``get_throttled`` -> ``throttled=0x50005``; bits 0-3 are the state now (under-voltage, ARM frequency capped,
  throttled, soft temperature limit), bits 16-19 the same conditions since boot.
* ``measure_clock arm`` -> ``frequency(48)=1500398464`` (Hz)
* ``pmic_read_adc`` (Pi 5) -> lines ``NAME_A current(n)=0.1A`` and ``NAME_V volt(n)=3.3V``. Board power is the
  sum of V x I over the rails that report both; ``EXT5V_V`` and ``BATT_V`` are voltage-only and not counted.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Dict, Optional, Tuple

THROTTLE_BITS = (
    (0, "under_voltage"),
    (1, "arm_freq_capped"),
    (2, "throttled"),
    (3, "soft_temp_limit"),
)
SINCE_BOOT_SHIFT = 16


class VcgencmdError(ValueError):
    """vcgencmd printed something this parser does not understand (the message quotes it)."""


def vcgencmd_binary() -> Optional[str]:
    """``$EDGESHRINK_VCGENCMD`` when set (tests point it at a replaying fake), else ``vcgencmd`` on PATH."""
    return os.environ.get("EDGESHRINK_VCGENCMD") or shutil.which("vcgencmd")


def vcgencmd(*args: str, timeout_s: float = 5.0) -> str:
    """Run ``vcgencmd ARGS`` and return its stdout.

    Raises:
        RuntimeError: vcgencmd is absent or failed.
    """
    exe = vcgencmd_binary()
    if exe is None:
        raise RuntimeError("vcgencmd not found (not a Raspberry Pi, or raspberrypi-utils not installed)")
    r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout_s)
    if r.returncode != 0:
        raise RuntimeError(f"vcgencmd {' '.join(args)} failed: {(r.stderr or r.stdout).strip()[:200]}")
    return r.stdout


def parse_measure_temp(text: str) -> float:
    """``temp=47.2'C`` -> 47.2 (degC)."""
    m = re.search(r"temp=(-?\d+(?:\.\d+)?)'C", text)
    if not m:
        raise VcgencmdError(f"unexpected measure_temp output: {text.strip()[:120]!r}")
    return float(m.group(1))


def parse_measure_clock(text: str) -> float:
    """``frequency(48)=1500398464`` -> 1500.398464 (MHz)."""
    m = re.search(r"frequency\(\d+\)=(\d+)", text)
    if not m:
        raise VcgencmdError(f"unexpected measure_clock output: {text.strip()[:120]!r}")
    return int(m.group(1)) / 1e6


def decode_throttled(value: int) -> Dict[str, object]:
    """Decode the ``get_throttled`` bit field.

    Returns:
        ``{"raw": "0x50005", "now": {condition: bool}, "since_boot": {condition: bool}, "any_now": bool,
        "any_since_boot": bool}`` with conditions under_voltage, arm_freq_capped, throttled, soft_temp_limit.
    """
    now = {name: bool(value >> bit & 1) for bit, name in THROTTLE_BITS}
    boot = {name: bool(value >> (bit + SINCE_BOOT_SHIFT) & 1) for bit, name in THROTTLE_BITS}
    return {"raw": hex(value), "now": now, "since_boot": boot, "any_now": any(now.values()),
            "any_since_boot": any(boot.values())}


def parse_get_throttled(text: str) -> Dict[str, object]:
    """``throttled=0x50005`` -> :func:`decode_throttled` of it."""
    m = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", text)
    if not m:
        raise VcgencmdError(f"unexpected get_throttled output: {text.strip()[:120]!r}")
    return decode_throttled(int(m.group(1), 0))


_ADC = re.compile(r"^\s*(\S+)_([AV]) (?:current|volt)\(\d+\)=(-?\d+(?:\.\d+)?)([AV])\s*$")


def parse_pmic_read_adc(text: str) -> Dict[str, Dict[str, float]]:
    """Parse ``vcgencmd pmic_read_adc``.

    Returns:
        ``{rail: {"current_a": A, "voltage_v": V}}``; a voltage-only rail (``EXT5V``, ``BATT``) has no current.

    Raises:
        VcgencmdError: a line that is neither blank nor a reading (quoted).
    """
    rails: Dict[str, Dict[str, float]] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _ADC.match(line)
        if not m or m.group(2) != m.group(4):
            raise VcgencmdError(f"unexpected pmic_read_adc line: {line.strip()[:120]!r}")
        key = "current_a" if m.group(2) == "A" else "voltage_v"
        rails.setdefault(m.group(1), {})[key] = float(m.group(3))
    return rails


def pmic_power_mw(rails: Dict[str, Dict[str, float]]) -> Tuple[float, Dict[str, float]]:
    """Board power (mW) as the sum of V x I over the rails reporting both, and the per-rail powers (mW)."""
    per = {name: r["voltage_v"] * r["current_a"] * 1000.0 for name, r in rails.items()
           if "voltage_v" in r and "current_a" in r}
    return sum(per.values()), per


def read_pmic_mw() -> Tuple[float, Dict[str, float]]:
    """One PMIC reading on a Pi 5: ``(total_mw, {rail: mw})``. Raises RuntimeError without vcgencmd."""
    return pmic_power_mw(parse_pmic_read_adc(vcgencmd("pmic_read_adc")))


def state() -> Optional[Dict[str, object]]:
    """Temperature, throttle bits and ARM clock, or None when vcgencmd is absent."""
    if vcgencmd_binary() is None:
        return None
    out: Dict[str, object] = {}
    for key, args, parse in (("temp_c", ("measure_temp",), parse_measure_temp),
                             ("throttled", ("get_throttled",), parse_get_throttled),
                             ("arm_clock_mhz", ("measure_clock", "arm"), parse_measure_clock)):
        try:
            out[key] = parse(vcgencmd(*args))
        except (RuntimeError, VcgencmdError, OSError, subprocess.TimeoutExpired) as e:
            out[key] = None
            out.setdefault("errors", []).append(str(e))
    return out
